"""Optuna search over pipeline settings, every trial a nested MLflow run under one search run.

The search space is data (``{"alpha": {"type": "float", "low": 0, "high": 30, "step": 10}}``). The
study lives in an Optuna journal file (``optuna/<study>.log`` by default) or any RDB URL that
several machines can share; ``workers=K`` runs K local processes (spawn) optimizing the same study.
The objective maps a params dict to a :class:`MethodResult`; the value optimized is a key of
``clisc.evaluation.summarize`` of its per-case table, or the mean of a per-case column (for
label-free criteria computed without ground truth).
"""
from __future__ import annotations

import logging
import multiprocessing
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from clisc.errors import CliscError
from clisc.pipeline.result import MethodResult
from clisc.tracking.health import OWNER_TAG, check_tracking_store, close_orphaned_runs, owner, owner_is_dead
from clisc.tracking.store import (ROLE_TAG, client_for, default_tracking_uri, flatten_params,
                                  get_or_create_experiment, log_flat, log_result_to_run, start_child_run)

log = logging.getLogger(__name__)

Objective = Callable[[dict[str, Any]], MethodResult]
SPACE_TYPES = ("float", "int", "categorical")
GROUND_TRUTH_METRIC = re.compile(r"^(dsc|hd95|n_empty|n_cases)")
TRIAL_PARAM_PREFIX = "trial."
INTERRUPTED_ATTR = "interrupted"  # a trial whose worker was killed: failed, and not counted as done
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def validate_space(space: Mapping[str, Mapping[str, Any]]) -> None:
    """CliscError naming the first malformed entry of a search space."""
    if not space:
        raise CliscError("the search space is empty")
    for name, spec in space.items():
        kind = spec.get("type")
        if kind not in SPACE_TYPES:
            raise CliscError(f"search space '{name}': type must be one of {SPACE_TYPES}, not {kind!r}")
        needed = ("choices",) if kind == "categorical" else ("low", "high")
        if any(key not in spec for key in needed):
            raise CliscError(f"search space '{name}' ({kind}) needs {', '.join(needed)}")


def suggest(trial: optuna.Trial, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One value per space entry from ``trial`` (float/int with optional ``step``/``log``, categorical)."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], step=spec.get("step"),
                                               log=spec.get("log", False))
        elif spec["type"] == "int":
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1),
                                             log=spec.get("log", False))
        else:
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
    return params


def storage_spec(storage: str | None, study_name: str) -> str:
    """An RDB URL as given; otherwise the journal file path (default ``<cwd>/optuna/<study>.log``)."""
    if storage and "://" in storage:
        return storage
    safe = re.sub(r"[^\w\-.]", "_", study_name)
    return str(Path(storage or Path("optuna") / f"{safe}.log").resolve())


HEARTBEAT_S = 60  # RDB storages: a trial without a heartbeat for GRACE_S is failed by the next worker
GRACE_S = 300


def open_storage(spec: str) -> BaseStorage:
    """What Optuna takes for ``spec``: an RDBStorage with heartbeats for a URL (trials of a worker on
    another machine that died are failed after ``GRACE_S``), or a JournalStorage on the file (created)."""
    if "://" in spec:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and the documented way
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(spec, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(spec))


def storage_label(spec: str) -> str:
    """``spec`` safe to log: an RDB URL's password is masked."""
    if "://" not in spec:
        return spec
    from sqlalchemy.engine import make_url

    return make_url(spec).render_as_string(hide_password=True)


def objective_value(result: MethodResult, summary: Mapping[str, float], metric: str) -> float:
    """``summary[metric]``, else the mean of the per-case column ``metric``."""
    if metric in summary:
        return float(summary[metric])
    if metric in result.per_case.columns:
        return float(result.per_case[metric].mean())
    raise CliscError(f"objective metric '{metric}' is neither a summary metric nor a per-case column of "
                     f"{result.method} (columns: {', '.join(map(str, result.per_case.columns))})")


@dataclass(frozen=True)
class TrialObjective:
    """Picklable Optuna objective: suggest params, run ``objective``, record the trial in MLflow."""

    objective: Objective
    space: Mapping[str, Mapping[str, Any]]
    metric: str
    label_free: bool
    study_name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.space)
        client = client_for(self.tracking_uri)
        # "search." keys: the result's own tags (e.g. the method's label_free) are logged beside them
        tags = {ROLE_TAG: "trial", "optuna.study": self.study_name, "optuna.trial": str(trial.number),
                "search.label_free": str(self.label_free).lower(), "search.objective_metric": self.metric}
        trial.set_user_attr("owner", owner())
        run_id = start_child_run(client, self.experiment_id, self.parent_run_id, f"trial{trial.number}",
                                 {**tags, OWNER_TAG: owner()})
        trial.set_user_attr("mlflow_run_id", run_id)
        try:
            log_flat(client, run_id, params=flatten_params(params, prefix=TRIAL_PARAM_PREFIX))
            result = self.objective(dict(params))
            value = objective_value(result, log_result_to_run(client, run_id, result), self.metric)
            log_flat(client, run_id, metrics={"objective": value})
        except Exception as err:
            client.set_tag(run_id, "error", f"{type(err).__name__}: {err}"[:5000])
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        return value


@dataclass(frozen=True)
class StopAt:
    """Optuna callback: stop this worker once the study's finished + running trials reach ``n_trials``
    (workers on other machines count too, so N machines together run about ``n_trials``)."""

    n_trials: int

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trials_done(study) + trials_running(study) >= self.n_trials:
            study.stop()


def _optimize(study_name: str, spec: str, n_trials: int, sampler_seed: int, objective: TrialObjective,
              total: int) -> None:
    """One worker: load the shared study and run up to ``n_trials`` trials, stopping early once the
    study holds ``total``; failing trials are recorded FAIL."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(spec),
                              sampler=optuna.samplers.TPESampler(seed=sampler_seed))
    study.optimize(objective, n_trials=n_trials, catch=(Exception,), callbacks=[StopAt(total)])


def fail_orphaned_trials(study: optuna.Study, tracking_uri: str | None = None) -> list[int]:
    """Mark FAIL (user attr ``interrupted``) the RUNNING trials whose worker process on this host is
    gone (``kill -9``, power cut), and their MLflow runs KILLED; returns their numbers. Trials of other
    hosts are left to the RDB heartbeat (``GRACE_S``)."""
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not owner_is_dead(trial.user_attrs.get("owner")):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(trial.number)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            client = client_for(tracking_uri)
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "KILLED")
    return failed


def trials_done(study: optuna.Study) -> int:
    """Finished trials that count towards the requested number (interrupted ones do not)."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED_STATES)
               if not t.user_attrs.get(INTERRUPTED_ATTR))


def trials_running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def split_trials(n_trials: int, workers: int) -> list[int]:
    """``n_trials`` shared out over at most ``workers`` processes, as evenly as possible."""
    return [n for n in (n_trials // workers + (i < n_trials % workers) for i in range(workers)) if n > 0]


def _run_workers(study_name: str, spec: str, counts: list[int], seed: int, objective: TrialObjective,
                 total: int) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_optimize, args=(study_name, spec, n, seed + i, objective, total),
                                 name=f"{study_name}-worker{i}") for i, n in enumerate(counts)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise CliscError(f"search workers {', '.join(failed)} exited abnormally; study {study_name} in {spec}")


def run_search(
    objective: Objective,
    space: Mapping[str, Mapping[str, Any]],
    n_trials: int,
    study_name: str,
    storage: str | None = None,
    workers: int = 1,
    objective_metric: str = "dsc_mean",
    direction: str = "maximize",
    tracking_uri: str | None = None,
    *,
    label_free: bool,
    seed: int = 0,
    objective_name: str | None = None,
    reports: Path | None = None,
) -> optuna.Study:
    """Bring the study ``study_name`` to ``n_trials`` finished trials of ``objective`` over ``space``;
    returns the (reloaded) study.

    An existing study is resumed: its finished trials count, trials left RUNNING by a killed worker of
    this host are failed first (and not counted), and the sampler is reseeded past the trials already
    drawn. ``objective`` must be picklable when ``workers > 1`` (a module-level function or a
    ``functools.partial`` of one). Trials are nested MLflow runs under one run named ``study_name``
    in the experiment ``search/<study_name>``. A label-free search refuses ground-truth metrics. With
    ``reports``, Optuna's plots and ``best.yaml`` are written to ``<reports>/search/<study>/``
    (:mod:`clisc.search.report`) and logged to the search run.
    """
    validate_space(space)
    if n_trials < 1 or workers < 1:
        raise CliscError(f"n_trials ({n_trials}) and workers ({workers}) must be at least 1")
    if label_free and GROUND_TRUTH_METRIC.match(objective_metric):
        raise CliscError(f"objective metric '{objective_metric}' uses ground truth: not allowed in a label-free "
                         "search (use a per-case criterion computed without labels, or label_free=False)")
    check_tracking_store(tracking_uri or default_tracking_uri())  # before a client: it opens its store at once
    client = client_for(tracking_uri)
    spec = storage_spec(storage, study_name)
    study = optuna.create_study(study_name=study_name, storage=open_storage(spec), direction=direction,
                                sampler=optuna.samplers.TPESampler(seed=seed), load_if_exists=True)
    for key, value in {"objective_metric": objective_metric, "objective": objective_name or objective_metric,
                       "direction": direction, "label_free": label_free,
                       "space": {k: dict(v) for k, v in space.items()}}.items():
        study.set_user_attr(key, value)
    interrupted = fail_orphaned_trials(study, client.tracking_uri)
    if interrupted:
        log.warning("study %s: trials %s of a killed worker marked failed", study_name, interrupted)
    remaining = n_trials - trials_done(study) - trials_running(study)  # running: other machines' workers
    seed += len(study.trials)  # a resumed study draws new points, not the first run's again

    experiment_id = get_or_create_experiment(client, f"search/{study_name}",
                                             f"Optuna study {study_name} ({objective_name or objective_metric})")
    close_orphaned_runs(client, [experiment_id], f"tags.`{ROLE_TAG}` = 'search'")
    tags = {ROLE_TAG: "search", "optuna.study": study_name, "optuna.storage": storage_label(spec),
            "label_free": str(label_free).lower(), "objective_metric": objective_metric, "direction": direction,
            OWNER_TAG: owner()}
    parent = client.create_run(experiment_id, run_name=study_name, tags=tags).info.run_id
    log_flat(client, parent, params={**flatten_params({"space": space}), "n_trials": str(n_trials),
                                     "trials_before": str(trials_done(study)), "workers": str(workers),
                                     "seed": str(seed)})
    trial_objective = TrialObjective(objective, space, objective_metric, label_free, study_name,
                                     client.tracking_uri, experiment_id, parent)
    status = "FAILED"
    try:
        counts = split_trials(remaining, workers) if remaining > 0 else []
        if len(counts) == 1:
            study.sampler = optuna.samplers.TPESampler(seed=seed)
            study.optimize(trial_objective, n_trials=counts[0], catch=(Exception,), callbacks=[StopAt(n_trials)])
        elif counts:
            _run_workers(study_name, spec, counts, seed, trial_objective, n_trials)
        status = "FINISHED"
    finally:
        study = optuna.load_study(study_name=study_name, storage=open_storage(spec))
        _log_best(client, parent, study)
        if reports is not None:
            _log_report(client, parent, study, reports, storage_label(spec))
        client.set_terminated(parent, status)
    return study


def _log_report(client: Any, parent_run_id: str, study: optuna.Study, reports: Path, storage: str) -> None:
    from clisc.search.report import write_search_report

    try:
        files = write_search_report(study, reports, storage)
    except Exception as err:  # the study is safe in its storage; a plot must not fail the search
        log.warning("search report of %s not written: %s", study.study_name, err)
        return
    for path in files:
        client.log_artifact(parent_run_id, str(path))


def _log_best(client: Any, parent_run_id: str, study: optuna.Study) -> None:
    """Best value, trial number and params of the study on the search run (when a trial completed)."""
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return
    best = study.best_trial
    log_flat(client, parent_run_id, metrics={"best_value": float(best.value)},
             tags={"best_trial": str(best.number), "best_mlflow_run_id": best.user_attrs.get("mlflow_run_id", ""),
                   **{f"best.{k}": str(v) for k, v in best.params.items()}})
