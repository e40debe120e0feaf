"""A search killed with SIGKILL resumes to the requested number of trials; a finished search leaves
Optuna's plots and best.yaml."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml

from clisc.search.report import best_overrides, set_line
from clisc.search.study import INTERRUPTED_ATTR, open_storage, run_search

HERE = Path(__file__).resolve().parent
SPACE = {"alpha": {"type": "float", "low": 0, "high": 30, "step": 10},
         "s3f.beta": {"type": "categorical", "choices": [0.0, 20.0]}}
TrialState = optuna.trial.TrialState
WORKER = """
import functools, sys
sys.path.insert(0, {here!r})
import clisc_search_toy_objective as toy
from clisc.search.study import run_search
run_search(functools.partial(toy.slow_objective, delay=3.0), {space!r}, n_trials=4, study_name="resume",
           storage={storage!r}, tracking_uri={uri!r}, label_free=False)
"""


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_search_resumes_without_repeating_finished_trials(toy, tracking_uri, tmp_path) -> None:
    storage = str(tmp_path / "resume.log")
    code = WORKER.format(here=str(HERE), space=SPACE, storage=storage, uri=tracking_uri)
    worker = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def trials() -> list[optuna.trial.FrozenTrial]:
        if not Path(storage).exists():
            return []
        return optuna.load_study(study_name="resume", storage=open_storage(storage)).trials

    def mid_third_trial() -> bool:  # 2 trials done, the 3rd running with its MLflow run open
        now = trials()
        return ([t.state for t in now] == [TrialState.COMPLETE] * 2 + [TrialState.RUNNING]
                and "mlflow_run_id" in now[2].user_attrs)

    try:
        wait_for(lambda: mid_third_trial() or worker.poll() is not None, 240, "2 finished trials and a running one")
        assert worker.poll() is None, worker.stderr.read().decode()[-2000:]
        worker.send_signal(signal.SIGKILL)  # kill -9 in the middle of trial 2
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.stderr.close()
    before = optuna.load_study(study_name="resume", storage=open_storage(storage)).trials
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]

    study = run_search(toy.toy_objective, SPACE, n_trials=4, study_name="resume", storage=storage,
                       tracking_uri=tracking_uri, label_free=False)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert [(t.params, t.value) for t in trials[:2]] == [(t.params, t.value) for t in before[:2]]  # not re-run
    assert trials[2].user_attrs[INTERRUPTED_ATTR] is True
    client = mlflow.MlflowClient(tracking_uri)
    assert client.get_run(trials[2].user_attrs["mlflow_run_id"]).info.status == "KILLED"
    experiment = client.get_experiment_by_name("search/resume")
    parents = client.search_runs([experiment.experiment_id], "tags.`clisc.role` = 'search'", order_by=["start_time"])
    assert [r.info.status for r in parents] == ["KILLED", "FINISHED"]
    assert parents[1].data.params["trials_before"] == "2"


def test_a_finished_study_is_not_run_again(toy, tracking_uri, tmp_path) -> None:
    storage = str(tmp_path / "done.log")
    run_search(toy.toy_objective, SPACE, n_trials=2, study_name="done", storage=storage, tracking_uri=tracking_uri,
               label_free=False)
    study = run_search(toy.toy_objective, SPACE, n_trials=2, study_name="done", storage=storage,
                       tracking_uri=tracking_uri, label_free=False)
    assert len(study.trials) == 2
    assert len(run_search(toy.toy_objective, SPACE, n_trials=3, study_name="done", storage=storage,
                          tracking_uri=tracking_uri, label_free=False).trials) == 3


def test_search_report_plots_and_best_yaml(toy, tracking_uri, tmp_path) -> None:
    storage = str(tmp_path / "report.log")
    study = run_search(toy.toy_objective, SPACE, n_trials=5, study_name="report", storage=storage,
                       tracking_uri=tracking_uri, label_free=False, objective_name="validation_dice",
                       reports=tmp_path / "reports")
    folder = tmp_path / "reports" / "search" / "report"
    assert {p.name for p in folder.iterdir()} == {"optimization_history.png", "param_importances.png", "slice.png",
                                                  "parallel_coordinate.png", "best.yaml"}
    text = (folder / "best.yaml").read_text()
    lines = text.splitlines()
    assert len(lines) == 2 and re.fullmatch(r"provenance: \{study: report, storage: .+, objective: validation_dice, "
                                            r"label_free: false, best_trial: \d+, value: [\d.]+\}", lines[0])
    assert re.fullmatch(r"overrides: \{alpha: [\d.]+, s3f\.beta: [\d.]+\}", lines[1])
    best = yaml.safe_load(text)
    assert best["provenance"]["best_trial"] == study.best_trial.number and best["provenance"]["value"] == study.best_value
    assert best["overrides"] == study.best_params
    assert set_line(best_overrides(study)) == " ".join(f"--set {k}={v}" for k, v in study.best_params.items())
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("search/report")
    parent = client.search_runs([experiment.experiment_id], "tags.`clisc.role` = 'search'")[0]
    assert {"best.yaml", "optimization_history.png"} <= {f.path for f in client.list_artifacts(parent.info.run_id)}


def test_trials_running_on_another_machine_count_towards_the_total(toy, tracking_uri, tmp_path) -> None:
    storage = str(tmp_path / "shared.log")
    shared = optuna.create_study(study_name="shared", storage=open_storage(storage), direction="maximize")
    shared.tell(shared.ask({"alpha": optuna.distributions.FloatDistribution(0, 30, step=10)}), 5.0)
    elsewhere = shared.ask()  # a live worker on another machine: left alone, and counted
    elsewhere.set_user_attr("owner", "another-host@4242")
    study = run_search(toy.toy_objective, SPACE, n_trials=4, study_name="shared", storage=storage,
                       tracking_uri=tracking_uri, label_free=False)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 3 and states[1] == TrialState.RUNNING and len(states) == 4


def test_best_yaml_is_a_settings_file(toy, tracking_uri, tmp_path) -> None:
    """best.yaml reads back with --settings-file's reader: its overrides, a label-using study's provenance."""
    from clisc.pipeline.settings_file import read_settings_file

    space = {"amda.alpha": {"type": "float", "low": 0, "high": 30, "step": 10}}
    study = run_search(lambda p: toy.toy_objective({"alpha": p["amda.alpha"]}), space, n_trials=2,
                       study_name="as-settings", storage=str(tmp_path / "s.log"), tracking_uri=tracking_uri,
                       label_free=False, objective_name="validation_dice", reports=tmp_path)
    tuned = read_settings_file(tmp_path / "search" / "as-settings" / "best.yaml")
    assert tuned.overrides == {"amda.alpha": study.best_params["amda.alpha"]}
    assert tuned.tuned_on_labels and tuned.tags()["tuned_study"] == "as-settings"


def test_search_plots_name_the_study_and_the_objective(toy, tracking_uri, tmp_path) -> None:
    import matplotlib.pyplot as plt

    from clisc.search.report import plot_figures

    study = run_search(toy.toy_objective, SPACE, n_trials=4, study_name="named", storage=str(tmp_path / "n.log"),
                       tracking_uri=tracking_uri, label_free=False, objective_name="validation_dice")
    figures = plot_figures(study)
    assert set(figures) == {"optimization_history", "param_importances", "slice", "parallel_coordinate"}
    for name, fig in figures.items():
        assert fig._suptitle.get_text().startswith("study named: ") and "validation_dice" in fig._suptitle.get_text()
        labels = " ".join(ax.get_ylabel() + " " + ax.get_xlabel() + " " + ax.get_title() for ax in fig.axes)
        if name != "param_importances":  # importances name the objective in the title only
            assert "validation_dice" in labels, (name, labels)
    plt.close("all")
