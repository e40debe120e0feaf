"""`clisc search` over the real pipeline (tiny profile): both objectives, trials logged to MLflow."""
from __future__ import annotations

import argparse

import mlflow
import optuna
import pytest

from clisc.errors import CliscError
from clisc.pipeline.search import pipeline_objective, run_pipeline_search

SPEC = {"name": "mini", "method": "clisc", "seed": 0,
        "space": {"amda.alpha": {"type": "float", "low": 10, "high": 20, "step": 10},
                  "s3f.beta": {"type": "float", "low": 0, "high": 20, "step": 20}}}


def _args(tmp_path, data, objective, tracking_uri):
    return argparse.Namespace(objective=objective, profile="tiny", protocol=None, data=data,
                              cache=tmp_path / "cache", device="cpu", study=f"study-{tmp_path.name}", trials=2,
                              workers=1, storage=f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=tracking_uri,
                              reports=tmp_path / "reports")  # never the project's reports/


@pytest.mark.parametrize("objective,label_free,metric", [
    ("label_free", "true", "sam_agreement_mean"),
    ("validation_dice", "false", "dsc_mean"),
])
def test_search_fills_a_study_and_nested_mlflow_runs(synthetic_dataset, tmp_path, tracking_uri, objective,
                                                     label_free, metric):
    args = _args(tmp_path, synthetic_dataset, objective, tracking_uri)
    study = run_pipeline_search(SPEC, args, {})
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert study.user_attrs["label_free"] is (label_free == "true")
    assert all(0 <= t.value <= 100 for t in study.trials)

    client = mlflow.MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(f"search/{study.study_name}")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(trials) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    assert all(r.data.tags["search.label_free"] == label_free and metric in r.data.metrics for r in trials)


def test_a_failing_trial_is_recorded_failed_and_the_study_goes_on(synthetic_dataset, tmp_path, tracking_uri):
    """alpha = 150 % is refused by AmdaSettings: that trial fails, the others complete."""
    spec = {**SPEC, "space": {"amda.alpha": {"type": "categorical", "choices": [20.0, 150.0]}}}
    args = _args(tmp_path, synthetic_dataset, "label_free", tracking_uri)
    args.trials = 4
    study = run_pipeline_search(spec, args, {})
    states = {t.params["amda.alpha"]: t.state for t in study.trials}
    assert states == {20.0: optuna.trial.TrialState.COMPLETE, 150.0: optuna.trial.TrialState.FAIL}
    client = mlflow.MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(f"search/{study.study_name}")
    statuses = {r.data.params["trial.amda.alpha"]: r.info.status for r in client.search_runs(
        [experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags}
    assert statuses == {"20.0": "FINISHED", "150.0": "FAILED"}


@pytest.mark.slow
def test_label_free_objective_reacts_to_beta(synthetic_dataset, tmp_path):
    """S3F's own similarity is computed before the beta filter; the criterion (the round-2 network's
    agreement with SAM on the validation images) is computed after it."""
    def value(beta: float) -> float:
        result = pipeline_objective({"s3f.beta": beta}, method="clisc", data=str(synthetic_dataset), seed=0,
                                    objective="label_free", protocol="paper", profile="tiny", overrides={},
                                    cache_root=str(tmp_path), device="cpu")
        assert result.tags["label_free"] == "true" and "dsc" not in result.per_case
        return float(result.per_case["sam_agreement"].mean())

    assert value(0.0) != value(60.0)


@pytest.mark.parametrize("objective", ["label_free", "validation_dice"])
def test_searching_a_setting_the_method_never_reads_is_a_one_line_error(synthetic_dataset, tmp_path, tracking_uri,
                                                                       objective):
    spec = {**SPEC, "method": "no_self_training"}  # stops at round 1: blind to beta
    with pytest.raises(CliscError, match="s3f.beta does not affect") as err:
        run_pipeline_search(spec, _args(tmp_path, synthetic_dataset, objective, tracking_uri), {})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("objective,label_free", [("label_free", True), ("validation_dice", False)])
def test_a_search_from_settings_tuned_on_labels_is_not_label_free(tmp_path, monkeypatch, objective, label_free):
    import clisc.search.study as study_module
    from clisc.pipeline.settings_file import read_settings_file, write_settings_file

    seen = {}
    monkeypatch.setattr(study_module, "run_search", lambda fn, *args, **kwargs: seen.update(fn=fn, **kwargs))
    tuned = read_settings_file(write_settings_file(tmp_path / "best.yaml", {
        "study": "earlier", "objective": "validation_dice", "label_free": False}, {"cam.threshold": 0.45}))
    args = _args(tmp_path, tmp_path / "data", objective, None)
    args.split = tmp_path / "split.csv"
    run_pipeline_search(SPEC, args, {}, ("BraTS20_Training_009",), None)
    assert seen["label_free"] is label_free and seen["fn"].keywords["split_file"] == str(tmp_path / "split.csv")
    assert seen["fn"].keywords["skip_cases"] == ("BraTS20_Training_009",)
    run_pipeline_search(SPEC, args, {}, (), tuned)
    assert seen["label_free"] is False and seen["fn"].keywords["settings_file"] is tuned
