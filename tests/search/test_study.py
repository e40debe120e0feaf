"""run_search: trials shared by worker processes, one nested MLflow run per trial, failures recorded."""
from __future__ import annotations

import functools
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from clisc.errors import CliscError
from clisc.search.study import open_storage, run_search, split_trials, storage_label, storage_spec

SPACE = {"alpha": {"type": "float", "low": 0, "high": 30, "step": 10}}
TrialState = optuna.trial.TrialState


def search_runs(tracking_uri: str, study_name: str) -> tuple[mlflow.entities.Run, dict[int, mlflow.entities.Run]]:
    """The search's parent run and its child runs by trial number."""
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"search/{study_name}")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    assert len(parents) == 1
    children = {int(r.data.tags["optuna.trial"]): r for r in runs if r not in parents}
    assert all(r.data.tags[MLFLOW_PARENT_RUN_ID] == parents[0].info.run_id for r in children.values())
    return parents[0], children


@pytest.mark.parametrize(
    "storage, expected",
    [(None, "optuna/s1.log"), ("elsewhere/x.log", "elsewhere/x.log"),
     ("sqlite:///db/optuna.db", "sqlite:///db/optuna.db"), ("postgresql://u:pw@host/db", "postgresql://u:pw@host/db")],
)
def test_storage_spec(storage: str | None, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = storage_spec(storage, "s1")
    assert spec == (expected if "://" in expected else str(tmp_path / expected))
    assert "pw" not in storage_label(spec)


@pytest.mark.parametrize("n, k, expected", [(6, 2, [3, 3]), (7, 3, [3, 2, 2]), (2, 4, [1, 1]), (5, 1, [5])])
def test_split_trials(n: int, k: int, expected: list[int]) -> None:
    assert split_trials(n, k) == expected


@pytest.mark.slow
def test_two_workers_fill_one_study(toy, tracking_uri: str, tmp_path: Path) -> None:
    storage = str(tmp_path / "study.log")
    study = run_search(toy.toy_objective, SPACE, n_trials=6, study_name="two_workers", storage=storage,
                       workers=2, tracking_uri=tracking_uri, label_free=False, seed=3)
    assert len(study.trials) == 6 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert study.user_attrs["objective_metric"] == "dsc_mean" and study.user_attrs["label_free"] is False
    parent, children = search_runs(tracking_uri, "two_workers")
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_value"] == study.best_value
    assert sorted(children) == [t.number for t in study.trials]
    for trial in study.trials:
        run = children[trial.number]
        assert run.info.status == "FINISHED" and run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert float(run.data.params["trial.alpha"]) == trial.params["alpha"]
        assert run.data.metrics["objective"] == trial.value == trial.params["alpha"] + 2
        assert run.data.tags["search.label_free"] == "false"
        assert run.data.tags["search.objective_metric"] == "dsc_mean"
        assert run.data.tags["label_free"] == "true"  # the method's own tag, from its MethodResult


def test_failing_trial_is_recorded_and_search_goes_on(toy, tracking_uri: str, tmp_path: Path) -> None:
    storage = str(tmp_path / "fail.log")
    seeded = optuna.create_study(study_name="with_failure", storage=open_storage(storage), direction="maximize")
    seeded.enqueue_trial({"alpha": 30.0})
    seeded.enqueue_trial({"alpha": 0.0})
    study = run_search(functools.partial(toy.toy_objective, fail_at=30.0), SPACE, n_trials=3,
                       study_name="with_failure", storage=storage, tracking_uri=tracking_uri, label_free=False)
    states = [t.state for t in study.trials]
    assert len(states) == 3 and states[:2] == [TrialState.FAIL, TrialState.COMPLETE]
    _, children = search_runs(tracking_uri, "with_failure")
    assert children[0].info.status == "FAILED" and "failing value" in children[0].data.tags["error"]
    assert children[1].info.status == "FINISHED" and children[1].data.metrics["objective"] == 2.0
    assert [r.info.status == "FAILED" for _, r in sorted(children.items())] == [s == TrialState.FAIL for s in states]


def test_label_free_search(toy, tracking_uri: str, tmp_path: Path) -> None:
    with pytest.raises(CliscError, match="ground truth"):
        run_search(toy.toy_objective, SPACE, 2, "lf", storage=str(tmp_path / "lf.log"),
                   tracking_uri=tracking_uri, label_free=True)
    study = run_search(toy.toy_objective, SPACE, 2, "lf", storage=str(tmp_path / "lf.log"),
                       objective_metric="agreement", tracking_uri=tracking_uri, label_free=True)
    assert all(t.value == pytest.approx(t.params["alpha"] / 30) for t in study.trials)
    parent, children = search_runs(tracking_uri, "lf")
    assert parent.data.tags["label_free"] == "true" and parent.data.tags["objective_metric"] == "agreement"
    assert {r.data.tags["search.label_free"] for r in children.values()} == {"true"}


@pytest.mark.parametrize("space, message", [({}, "empty"), ({"a": {"type": "uniform"}}, "type must be"),
                                             ({"a": {"type": "int", "low": 0}}, "needs low, high")])
def test_bad_space(space: dict, message: str, toy) -> None:
    with pytest.raises(CliscError, match=message):
        run_search(toy.toy_objective, space, 1, "bad", label_free=False)
