"""Fan-out: local worker processes give the inline results, compute each shared stage once, and the
MLflow parent run carries every child."""
from __future__ import annotations

from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from clisc.cache import StageCache
from clisc.errors import CliscError
from clisc.pipeline.experiment import run_experiment
from clisc.pipeline.launch import LaunchOptions, order_jobs
from clisc.pipeline.experiment import RunSpec


def _children(uri: str, experiment: str) -> tuple[list, list]:
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_local_two_workers_equal_inline_and_compute_shared_stages_once(synthetic_dataset, tmp_path, tracking_uri):
    spec = tmp_path / "fan.yaml"
    spec.write_text("name: fan\nmethods: [cam_amda, raw_cam, sam_box]\nseeds: [0]\n")
    outs = {}
    for launcher in ("inline", "local"):
        outs[launcher] = run_experiment(
            spec, synthetic_dataset, profile="tiny", cache_root=tmp_path / launcher / "cache",
            runs_root=tmp_path / launcher / "runs", tracking_uri=tracking_uri, echo=lambda _: None,
            launch=LaunchOptions(launcher=launcher, workers=2))
    inline = {r.method: r.per_case.set_index("case_id")["dsc"].round(6).to_dict() for r in outs["inline"]}
    local = {r.method: r.per_case.set_index("case_id")["dsc"].round(6).to_dict() for r in outs["local"]}
    assert local == inline and len(local) == 3
    computed = {k: Counter(StageCache(tmp_path / k / "cache").computed_log()) for k in ("inline", "local")}
    assert computed["local"] == computed["inline"]  # the same entries ...
    assert set(computed["local"].values()) == {1}  # ... each computed exactly once
    assert any(key.startswith("cams/") for key in computed["local"])  # shared by all three runs
    parents, children = _children(tracking_uri, "fan")
    assert len(parents) == 2 and len(children) == 6
    for parent in parents:
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert sorted(c.data.tags.get("method", c.info.run_name.split("/")[0]) for c in mine) == [
            "cam_amda", "raw_cam", "sam_box"]


def test_a_failed_job_is_reported_and_the_others_finish(synthetic_dataset, tmp_path, tracking_uri):
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: broken\nmethods: [cam_amda]\nseeds: [0]\nsweep: {amda.alpha: [5, bad]}\n")
    with pytest.raises(CliscError, match=r"1 of 2 run\(s\) failed: cam_amda_alphabad_seed0"):
        run_experiment(spec, synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                       runs_root=tmp_path / "runs", tracking_uri=tracking_uri, echo=lambda _: None,
                       launch=LaunchOptions(launcher="local", workers=2))
    _, children = _children(tracking_uri, "broken")
    assert len(children) == 1 and children[0].data.params.get("amda.alpha") in ("5", "5.0")


def test_jobs_with_the_longest_shared_prefix_start_first():
    runs = [RunSpec(m, 0) for m in ("raw_cam", "cam_amda", "sam_points", "clisc", "fully_supervised")]
    assert [r.method for r in order_jobs(runs)] == ["clisc", "sam_points", "raw_cam", "cam_amda", "fully_supervised"]


@pytest.mark.parametrize("spec,flags,expected", [
    ({}, {}, LaunchOptions()),
    ({"launch": {"launcher": "local", "workers": 3}}, {}, LaunchOptions(launcher="local", workers=3)),
    ({"launch": {"launcher": "local"}}, {"gpus": "0,1"}, LaunchOptions(launcher="local", gpus=("0", "1"))),
    ({"launch": {"launcher": "slurm", "partition": "gpu"}}, {"launcher": None, "time_min": 60},
     LaunchOptions(launcher="slurm", partition="gpu", time_min=60)),
])
def test_launch_options_from_spec_and_flags(spec, flags, expected):
    assert LaunchOptions.from_spec(spec, **flags) == expected


@pytest.mark.parametrize("spec,message", [({"launch": {"launcher": "mpi"}}, "unknown launcher"),
                                          ({"launch": {"nodes": 2}}, "unknown launch key")])
def test_bad_launch_settings_are_one_line_errors(spec, message):
    with pytest.raises(CliscError, match=message):
        LaunchOptions.from_spec(spec)
