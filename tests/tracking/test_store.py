"""ExperimentRecorder writes parent + child runs; load_experiment_results reads them back."""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from clisc.tracking import ExperimentRecorder, default_tracking_uri, latest_parent_run, load_experiment_results
from clisc.tracking.store import flatten_params

SPEC = {"experiment": "t1", "methods": ["clisc", "fully_supervised"], "amda": {"alpha": 20}}


def test_default_tracking_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert default_tracking_uri(tmp_path) == "http://example:5000"


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"a": {"b": 1, "c": {"d": "x"}}}, {"a.b": "1", "a.c.d": "x"}),
        ({"amda.alpha": 20.0, "bad:key": None}, {"amda.alpha": "20.0", "bad_key": "None"}),
        ({"long": "y" * 7000}, {"long": "y" * 6000}),
    ],
)
def test_flatten_params(params: dict, expected: dict) -> None:
    assert flatten_params(params) == expected


def test_round_trip(tracking_uri: str, tmp_path: Path, fakes) -> None:
    npz = tmp_path / "qualitative.npz"
    np.savez(npz, case000__image=np.ones((4, 4), np.float32))
    clisc = fakes.fake_result("clisc", [80, 90, 70, 60, 100], seed=1,
                              params={"amda.alpha": 20, "s3f": {"beta": 20}},
                              stage_times={"sam": 1.5}, artifacts={"qualitative": npz})
    clisc.per_case.loc[4, "empty"] = "both"
    supervised = fakes.fake_result("fully_supervised", [90, 91, 92, 93, 94])
    with ExperimentRecorder("roundtrip", SPEC, tracking_uri=tracking_uri, tags={"profile": "demo"}) as rec:
        ids = [rec.log_result(clisc), rec.log_result(supervised)]
    back = load_experiment_results("roundtrip", tracking_uri, fetch=["qualitative.npz"], dst_dir=tmp_path / "dl")
    assert [(r.method, r.seed) for r in back] == [("clisc", 1), ("fully_supervised", 0)]
    got = back[0]
    pd.testing.assert_frame_equal(got.per_case, clisc.per_case, check_dtype=False)
    assert got.params == {"amda.alpha": "20", "s3f.beta": "20"}
    assert got.stage_times == {"sam": 1.5}
    assert got.tags == clisc.tags
    assert np.load(got.artifacts["qualitative.npz"])["case000__image"].shape == (4, 4)
    assert back[1].artifacts == {}

    client = mlflow.MlflowClient(tracking_uri)
    parent = latest_parent_run("roundtrip", tracking_uri)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "roundtrip"
    assert parent.data.params["amda.alpha"] == "20" and parent.data.tags["profile"] == "demo"
    spec_file = client.download_artifacts(parent.info.run_id, "spec.yaml", str(tmp_path))
    assert yaml.safe_load(Path(spec_file).read_text()) == SPEC
    child = client.get_run(ids[0])
    assert child.info.run_name == "CLISC · seed 1"
    assert child.info.end_time - child.info.start_time == 1500  # the UI's Duration: the stages' compute time
    parent_note = parent.data.tags["mlflow.note.content"].replace("\u00a0", " ")
    assert "**roundtrip**" in parent_note and "| CLISC | yes | 80.00 ± 15.81 |" in parent_note
    assert child.data.tags[MLFLOW_PARENT_RUN_ID] == parent.info.run_id
    assert child.data.metrics["dsc_mean"] == pytest.approx(80.0)
    assert child.data.metrics["n_empty_both"] == 1
    assert child.data.metrics["time_sam"] == 1.5


def test_crash_keeps_finished_children(tracking_uri: str, fakes) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with ExperimentRecorder("crash", {"data": Path("/data/brats")}, tracking_uri=tracking_uri) as rec:
            rec.log_result(fakes.fake_result("clisc", [50, 60]))
            raise RuntimeError("boom")
    parent = latest_parent_run("crash", tracking_uri)
    assert parent.info.status == "FAILED" and parent.data.params["data"] == "/data/brats"
    assert [r.method for r in load_experiment_results("crash", tracking_uri)] == ["clisc"]


def test_latest_parent_wins_and_missing_experiment(tracking_uri: str, fakes) -> None:
    for methods in (["raw_cam"], ["cam_amda", "clisc"]):
        with ExperimentRecorder("twice", SPEC, tracking_uri=tracking_uri) as rec:
            for method in methods:
                rec.log_result(fakes.fake_result(method, [10, 20, 30]))
    assert [r.method for r in load_experiment_results("twice", tracking_uri)] == ["cam_amda", "clisc"]
    assert load_experiment_results("never_run", tracking_uri) == []
    assert latest_parent_run("never_run", tracking_uri) is None


def test_missing_artifact_fails_the_child_only(tracking_uri: str, tmp_path: Path, fakes) -> None:
    broken = fakes.fake_result("clisc", [1, 2], artifacts={"qualitative": tmp_path / "absent.npz"})
    with ExperimentRecorder("broken", SPEC, tracking_uri=tracking_uri) as rec:
        with pytest.raises(Exception, match="absent.npz"):
            rec.log_result(broken)
        rec.log_result(fakes.fake_result("raw_cam", [3, 4]))
    assert [r.method for r in load_experiment_results("broken", tracking_uri)] == ["raw_cam"]


def test_child_run_name_is_the_table_title_with_sweep_seed_and_fold(fakes) -> None:
    from clisc.tracking.store import child_run_name

    result = fakes.fake_result("sam_gt_prompts", [50], seed=2, params={"amda.alpha": 10},
                               tags={"fold": "3", "folds": "4"})
    assert child_run_name(result) == "SAM (prompts from ground truth) · seed 2 · fold 3/4"
    assert child_run_name(result, ["amda.alpha"]) == "SAM (prompts from ground truth) · alpha 10 · seed 2 · fold 3/4"


def test_child_logs_its_qualitative_slices_as_png(tracking_uri: str, tmp_path: Path, fakes) -> None:
    npz = tmp_path / "q.npz"
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    np.savez(npz, case000__image=np.ones((8, 8), np.float32), case000__gt=mask, case000__pred=mask)
    with ExperimentRecorder("pictures", SPEC, tracking_uri=tracking_uri) as rec:
        run_id = rec.log_result(fakes.fake_result("clisc", [80, 90], artifacts={"qualitative": npz}))
    logged = {f.path for f in mlflow.MlflowClient(tracking_uri).list_artifacts(run_id)}
    assert {"qualitative.npz", "qualitative.png"} <= logged
