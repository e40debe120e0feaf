"""Experiment specs are data: expansion into runs, validation, and logging to MLflow as they finish."""
from __future__ import annotations

from pathlib import Path

import pytest

from clisc.errors import CliscError
from clisc.pipeline.experiment import EXPERIMENTS_DIR, expand, load_spec, run_experiment
from clisc.tracking.readback import load_experiment_results


@pytest.mark.parametrize("name", ["table1", "table2", "sweep_alpha", "sweep_beta", "table1_cpu"])
def test_shipped_specs_load(name):
    spec = load_spec(name)
    assert spec["name"] == name and spec["seeds"]


def test_sweeps_expand_to_one_run_per_value_and_seed():
    runs = list(expand({"methods": ["clisc"], "seeds": [0, 1], "sweep": {"s3f.beta": [0, 10, 20, 30, 40]},
                        "overrides": {"unet.epochs": 3}}))
    assert len(runs) == 10
    assert runs[0].overrides == {"unet.epochs": 3, "s3f.beta": 0} and runs[0].label == "clisc_beta0_seed0"
    assert {r.label for r in runs} >= {"clisc_beta40_seed1", "clisc_beta20_seed0"}


def test_table1_runs_every_row_of_the_paper_and_plans_none():
    """Every row of the paper's Table 1 is a registered method the spec runs (no "not run" row)."""
    from clisc.reporting.tables import paper_rows

    spec = load_spec("table1")
    assert not spec.get("planned")
    assert {row["method"] for row in paper_rows("table1")} <= set(spec["methods"])
    assert {"medclip_sam", "flair_threshold"} <= set(spec["methods"])


def test_table2_rows_are_the_papers_ablations():
    assert [r.method for r in expand(load_spec("table2"))] == [
        "raw_cam", "cam_amda", "sam_points", "sam_box", "sam_box_points", "no_self_training", "no_s3f", "clisc"]


@pytest.mark.parametrize("text,message", [
    ("methods: [clisc, nope]", "unknown method"),
    ("name: x", "needs a 'methods' list"),
    ("methods: [clisc]\nsweep: {amda.alpha: [0], s3f.beta: [0]}", "one setting at a time"),
    ("methods: [clisc", "not valid YAML"),
])
def test_bad_specs_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CliscError, match=message) as err:
        load_spec(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unknown_experiment_names_the_known_ones():
    with pytest.raises(CliscError, match="table1"):
        load_spec("table9")
    assert (EXPERIMENTS_DIR / "search.yaml").is_file()


def test_experiment_logs_each_run_as_a_child_in_mlflow(synthetic_dataset, tmp_path, tracking_uri):
    spec = tmp_path / "mini.yaml"
    spec.write_text("name: mini\nmethods: [cam_amda, sam_box]\nseeds: [0]\n")
    uri = tracking_uri
    results = run_experiment(spec, synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                             runs_root=tmp_path / "runs", tracking_uri=uri, echo=lambda _: None)
    logged = load_experiment_results("mini", uri)
    assert sorted(r.method for r in logged) == ["cam_amda", "sam_box"]
    by_method = {r.method: r for r in logged}
    for result in results:
        back = by_method[result.method]
        assert back.per_case["dsc"].round(6).tolist() == result.per_case["dsc"].round(6).tolist()
        assert back.tags["protocol"] == "paper" and back.tags["synthetic_data"] == "true"
    assert (Path(tmp_path) / "runs" / "mini" / "sam_box_seed0" / "per_case.csv").is_file()


def test_folds_expand_to_one_run_per_fold():
    runs = list(expand({"methods": ["clisc", "raw_cam"], "seeds": [0], "folds": 3}))
    assert [(r.method, r.fold) for r in runs] == [("clisc", 1), ("clisc", 2), ("clisc", 3),
                                                   ("raw_cam", 1), ("raw_cam", 2), ("raw_cam", 3)]
    assert runs[1].label == "clisc_seed0_fold2"


@pytest.mark.parametrize("folds", ["1", "two", "true"])
def test_bad_folds_in_a_spec(tmp_path, folds):
    path = tmp_path / "bad.yaml"
    path.write_text(f"methods: [clisc]\nfolds: {folds}\n")
    with pytest.raises(CliscError, match="folds must be a whole number of at least 2"):
        load_spec(path)


@pytest.mark.slow
def test_cross_validated_experiment_logs_each_fold_and_reports_pooled(synthetic_dataset, tmp_path, tracking_uri,
                                                                       monkeypatch):
    from mlflow import MlflowClient

    from clisc.reporting.tables import table2

    monkeypatch.setenv("CLISC_SPLITS_DIR", str(tmp_path / "splits"))
    spec = tmp_path / "table2.yaml"
    spec.write_text("name: table2\nmethods: [raw_cam, cam_amda]\nseeds: [0]\nfolds: 2\n")
    run_experiment(spec, synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache", runs_root=tmp_path / "runs",
                   tracking_uri=tracking_uri, echo=lambda _: None)
    logged = load_experiment_results("table2", tracking_uri)
    assert sorted((r.method, r.tags["fold"], r.tags["folds"]) for r in logged) == [
        ("cam_amda", "1", "2"), ("cam_amda", "2", "2"), ("raw_cam", "1", "2"), ("raw_cam", "2", "2")]
    names = {r.info.run_name for r in MlflowClient(tracking_uri).search_runs(
        [MlflowClient(tracking_uri).get_experiment_by_name("table2").experiment_id])}
    assert {"raw CAM · seed 0 · fold 1/2", "CAM with AMDA · seed 0 · fold 2/2"} <= names
    df = table2(logged).set_index("method")
    assert df.loc["raw CAM", "cases"] == df.loc["CAM with AMDA", "cases"] == "10"
    assert df.loc["raw CAM", "note"].endswith("pooled over 2 folds")
    assert len(list((tmp_path / "splits").glob("*_seed0_fold*of2.csv"))) == 2
