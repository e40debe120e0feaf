"""MLflow tracking: one parent run per experiment, one nested child run per method x seed (reading them
back: ``clisc.tracking.readback``).

Runs go through :class:`mlflow.MlflowClient` (no global active-run state), so a child is complete in
the store the moment :meth:`ExperimentRecorder.log_result` returns: a crash later in the experiment
loses no finished child. Local SQLite stores keep their artifacts beside the database
(``<db dir>/mlartifacts/<experiment>``) instead of under whatever the current directory is.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import mlflow
import pandas as pd
import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

from clisc.errors import CliscError
from clisc.evaluation import summarize
from clisc.evaluation.evaluate import run_evaluation_settings
from clisc.pipeline.result import MethodResult, flatten
from clisc.tracking.health import OWNER_TAG, check_tracking_store, close_orphaned_runs, owner
from clisc.tracking.inputs import log_dataset_input

log = logging.getLogger(__name__)

ROLE_TAG = "clisc.role"  # "experiment" (parent), "result" (child), "search" / "trial" (Optuna)
PER_CASE_ARTIFACT = "per_case.csv"
SPEC_ARTIFACT = "spec.yaml"
STAGE_TIME_PREFIX = "time_"
# MLflow 3 opens an experiment on its runs table (not the GenAI overview) when it is of this kind
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /]")
_SUPPRESS_URLS_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


def default_tracking_uri(project_dir: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<project_dir or cwd>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(project_dir) if project_dir is not None else Path.cwd()
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def client_for(tracking_uri: str | None) -> mlflow.MlflowClient:
    """A client on ``tracking_uri`` (default: :func:`default_tracking_uri`)."""
    return mlflow.MlflowClient(tracking_uri=tracking_uri or default_tracking_uri())


def _artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """``<db dir>/mlartifacts/<experiment>`` for a local SQLite store; None lets MLflow decide."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///"):])
    safe = re.sub(r"[^\w\-.]", "_", experiment)
    return (db.parent / "mlartifacts" / safe).resolve().as_uri()


def get_or_create_experiment(client: mlflow.MlflowClient, name: str, description: str | None = None) -> str:
    """Experiment id of ``name``, creating it (artifacts beside a SQLite store) when absent.

    The experiment is a model-training one (``mlflow.experimentKind``: the UI opens on its runs) and
    ``description`` is its note (``mlflow.note.content``); both are set on an existing one too.
    """
    tags = {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, **({DESCRIPTION_TAG: description} if description else {})}
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(client.tracking_uri, name),
                                            tags=tags)
        except MlflowException:
            found = client.get_experiment_by_name(name)  # another process created it meanwhile
            if found is None:
                raise
    for key, value in tags.items():
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b": "value"}`` with keys MLflow accepts, values cut to its limit."""
    return {_BAD_KEY_CHARS.sub("_", name): str(value)[:MAX_PARAM_VAL_LENGTH]
            for name, value in flatten(params, prefix).items()}


def summary_metrics(per_case: pd.DataFrame, ddof: int = 1) -> dict[str, float]:
    """:func:`clisc.evaluation.summarize` of a scored per-case table (stds with ``ddof``, the run's
    ``evaluation.std_ddof``), as floats; a table of label-free criteria (no ``dsc`` column, e.g. a
    search's S3F agreement) gives each numeric column's mean."""
    if "dsc" not in per_case.columns:
        numeric = per_case.select_dtypes("number")
        return {"n_cases": float(len(per_case)), **{f"{c}_mean": float(numeric[c].mean()) for c in numeric}}
    return {str(k): float(v) for k, v in summarize(per_case, ddof=ddof).items()}


def start_child_run(
    client: mlflow.MlflowClient, experiment_id: str, parent_run_id: str, name: str, tags: Mapping[str, str],
    start_time: int | None = None,
) -> str:
    """Create a run nested under ``parent_run_id`` (the ``mlflow.parentRunId`` tag), started at
    ``start_time`` (ms since the epoch; default now); return its id."""
    run = client.create_run(
        experiment_id, start_time=start_time, run_name=name,
        tags={**{k: str(v) for k, v in tags.items()}, MLFLOW_PARENT_RUN_ID: parent_run_id}
    )
    return run.info.run_id


def child_run_name(result: MethodResult, swept: Sequence[str] = ()) -> str:
    """A child's run name: the method's table title, the swept settings' values, seed and fold, e.g.
    ``CLISC · alpha 10 · seed 0 · fold 1/4`` (what the UI's Run Name column and the paper's tables call it)."""
    from clisc.reporting.tables import method_title

    parts = [method_title(result.method)]
    parts += [f"{key.split('.')[-1]} {result.params[key]}" for key in swept if key in result.params]
    parts.append(f"seed {result.seed}")
    if "fold" in result.tags:
        parts.append(f"fold {result.tags['fold']}" + (f"/{result.tags['folds']}" if "folds" in result.tags else ""))
    return " · ".join(parts)


def compute_ms(result: MethodResult) -> int:
    """Milliseconds the result's stages computed (cached stages count 0): the child run's Duration."""
    return int(round(1000 * sum(float(t) for t in result.stage_times.values())))


def log_flat(
    client: mlflow.MlflowClient,
    run_id: str,
    params: Mapping[str, str] = {},
    metrics: Mapping[str, float] = {},
    tags: Mapping[str, str] = {},
) -> None:
    """Log flat params, metrics and tags in batches within MLflow's per-request limits."""
    plist = [Param(k, v) for k, v in params.items()]
    mlist = [Metric(k, float(v), 0, 0) for k, v in metrics.items()]
    tlist = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, len(plist), 100):
        client.log_batch(run_id, params=plist[i : i + 100], synchronous=True)
    for i in range(0, len(mlist), 1000):
        client.log_batch(run_id, metrics=mlist[i : i + 1000], synchronous=True)
    for i in range(0, len(tlist), 100):
        client.log_batch(run_id, tags=tlist[i : i + 100], synchronous=True)


def log_result_to_run(client: mlflow.MlflowClient, run_id: str, result: MethodResult) -> dict[str, float]:
    """Params, summary metrics, stage times (+ ``stage_times.png``), training curves (step metrics),
    tags, the dataset input, ``per_case.csv`` and artifact files of ``result``
    (``artifacts={"qualitative": Path("x/q.npz")}`` is logged as ``qualitative.npz``, and drawn as
    ``qualitative.png``, which the UI previews)."""
    metrics = summary_metrics(result.per_case, run_evaluation_settings(result.params).std_ddof)
    metrics.update({f"{STAGE_TIME_PREFIX}{stage}": float(t) for stage, t in result.stage_times.items()})
    tags = {**result.tags, "method": result.method, "seed": str(result.seed)}
    log_flat(client, run_id, flatten_params(result.params), metrics, tags)
    log_histories(client, run_id, result.histories)
    log_dataset_input(client, run_id, result)
    client.log_text(run_id, result.per_case.to_csv(index=False), PER_CASE_ARTIFACT)
    for key, path in result.artifacts.items():
        log_artifact_as(client, run_id, key, Path(path))
    if "qualitative" in result.artifacts and Path(result.artifacts["qualitative"]).suffix == ".npz":
        from clisc.tracking.summary import qualitative_png

        with tempfile.TemporaryDirectory(prefix="clisc-qualitative-") as tmp:
            png = qualitative_png(result, Path(tmp))
            if png is not None:
                client.log_artifact(run_id, str(png))
    if result.stage_times:
        from clisc.tracking.summary import STAGE_TIMES_FIGURE, stage_times_figure

        with tempfile.TemporaryDirectory(prefix="clisc-times-") as tmp:
            for path in stage_times_figure([result], Path(tmp) / STAGE_TIMES_FIGURE):
                if path.suffix == ".png":
                    client.log_artifact(run_id, str(path))
    return metrics


def log_histories(client: mlflow.MlflowClient, run_id: str, histories: Mapping[str, list[Mapping[str, float]]]) -> int:
    """Training curves as step metrics: ``{"unet_round1": [{"epoch": 1, "loss": .5}]}`` ->
    ``unet_round1/loss`` at step 1. Returns the number of points logged."""
    now = int(time.time() * 1000)
    points = [Metric(_BAD_KEY_CHARS.sub("_", f"{stage}/{name}"), float(value), now, int(row["epoch"]))
              for stage, rows in histories.items() for row in rows for name, value in row.items() if name != "epoch"]
    for i in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[i : i + 1000], synchronous=True)
    return len(points)


def artifact_name(key: str, path: Path) -> str:
    """Name a result artifact is logged under: ``key`` plus the file's suffix unless ``key`` has one."""
    return key if Path(key).suffix or path.is_dir() else f"{key}{path.suffix}"


def log_artifact_as(client: mlflow.MlflowClient, run_id: str, key: str, path: Path) -> None:
    """Log a file as ``artifact_name(key, path)`` at the run's artifact root, or a folder as ``key/``."""
    if path.is_dir():
        client.log_artifacts(run_id, str(path), artifact_path=key)
    elif not path.is_file():
        raise CliscError(f"{path}: artifact '{key}' does not exist")
    elif path.name == artifact_name(key, path):
        client.log_artifact(run_id, str(path))
    else:
        with tempfile.TemporaryDirectory(prefix="clisc-artifact-") as tmp:
            renamed = Path(tmp) / artifact_name(key, path)
            shutil.copyfile(path, renamed)
            client.log_artifact(run_id, str(renamed))


class ExperimentRecorder:
    """Context manager holding one parent run; :meth:`log_result` adds one finished child per call.

    >>> with ExperimentRecorder("table1", spec) as rec:   # doctest: +SKIP
    ...     rec.log_result(result)
    """

    def __init__(
        self,
        experiment: str,
        spec: Mapping[str, Any],
        tracking_uri: str | None = None,
        tags: Mapping[str, str] | None = None,
    ):
        self.experiment = experiment
        self.spec = dict(spec)
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.client: mlflow.MlflowClient | None = None  # made on entry, once the store answered
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.results: list[MethodResult] = []
        self._saved_suppress: str | None = None

    def run_link(self) -> str | None:
        """The parent run's page in the model-training view, for a tracking server (``http(s)://``)."""
        from clisc.tracking.ui import run_url

        if not self.tracking_uri.startswith(("http://", "https://")) or self.parent_run_id is None:
            return None
        return run_url(self.tracking_uri.rstrip("/"), self.experiment_id, self.parent_run_id)

    def __enter__(self) -> ExperimentRecorder:
        # MLflow prints a "View run" link per finished run of a server, without the model-training view
        # (it opens as GenAI): run_link() gives the parent's instead
        self._saved_suppress = os.environ.get(_SUPPRESS_URLS_ENV)
        os.environ[_SUPPRESS_URLS_ENV] = "true"
        check_tracking_store(self.tracking_uri)  # one line now, not a hang before or after the work
        self.client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)  # (a client opens its store at once)
        description = self.spec.get("description")
        self.experiment_id = get_or_create_experiment(self.client, self.experiment,
                                                      str(description) if description else None)
        stale = close_orphaned_runs(self.client, [self.experiment_id], f"tags.`{ROLE_TAG}` = 'experiment'")
        if stale:
            log.warning("marked %d parent run(s) of killed processes KILLED: %s", len(stale), ", ".join(stale))
        run = self.client.create_run(
            self.experiment_id, run_name=self.experiment,
            tags={**self.tags, ROLE_TAG: "experiment", OWNER_TAG: owner(),
                  **({DESCRIPTION_TAG: str(description)} if description else {})}
        )
        self.parent_run_id = run.info.run_id
        plain_spec = json.loads(json.dumps(self.spec, default=str))  # Paths, numpy scalars -> YAML-safe
        self.client.log_text(self.parent_run_id, yaml.safe_dump(plain_spec, sort_keys=False), SPEC_ARTIFACT)
        log_flat(self.client, self.parent_run_id, params=flatten_params(self.spec))
        return self

    def log_result(self, result: MethodResult) -> str:
        """Log ``result`` as a finished child run now; returns its run id. A store that stops answering
        is a one-line :class:`CliscError` saying how to log the work again (nothing is recomputed)."""
        if self.parent_run_id is None or self.experiment_id is None:
            raise RuntimeError("ExperimentRecorder.log_result called outside its `with` block")
        name = child_run_name(result, list(self.spec.get("sweep") or {}))
        # the UI's Duration column is end - start: the stages' compute time, not the seconds of logging
        end = int(time.time() * 1000)
        try:
            run_id = start_child_run(
                self.client, self.experiment_id, self.parent_run_id, name,
                {ROLE_TAG: "result", "method": result.method, "seed": str(result.seed), OWNER_TAG: owner()},
                start_time=end - compute_ms(result),
            )
            try:
                log_result_to_run(self.client, run_id, result)
            except BaseException:
                with contextlib.suppress(Exception):
                    self.client.set_terminated(run_id, "FAILED")
                raise
            self.client.set_terminated(run_id, "FINISHED", end_time=end)
        except MlflowException as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise CliscError(f"MLflow store {self.tracking_uri} failed while logging {name} ({reason}); its results "
                             "are kept in the run folder and the stage cache: run the same command again once the "
                             "store answers (finished stages are reused, not recomputed)") from None
        if not self.results:  # the parent's Dataset column: the data and split its children ran on
            log_dataset_input(self.client, self.parent_run_id, result)
        self.results.append(result)
        log.info("logged %s/seed%s as run %s", result.method, result.seed, run_id)
        return run_id

    def log_summary(self) -> list[str]:
        """The parent's table(s) and figures (artifacts) and headline metrics, from the results logged
        so far; returns the artifact names."""
        from clisc.tracking.summary import description, headline_metrics, summary_files

        if self.parent_run_id is None or not self.results:
            return []
        metrics, tags = headline_metrics(self.results, self.spec)
        note = description(self.experiment, self.spec, self.results)
        if note:  # the run page's Description: the table itself, the first thing it shows
            tags[DESCRIPTION_TAG] = note[:MAX_TAG_VAL_LENGTH]
        log_flat(self.client, self.parent_run_id, metrics=metrics, tags=tags)
        with tempfile.TemporaryDirectory(prefix="clisc-summary-") as tmp:
            files = summary_files(self.experiment, self.spec, self.results, Path(tmp))
            self.client.log_artifacts(self.parent_run_id, tmp)
        return [path.name for path in files]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._close(exc_type)
        finally:
            if self._saved_suppress is None:
                os.environ.pop(_SUPPRESS_URLS_ENV, None)
            else:
                os.environ[_SUPPRESS_URLS_ENV] = self._saved_suppress

    def _close(self, exc_type: type[BaseException] | None) -> None:
        """The parent's summary and final status (FINISHED, KILLED on Ctrl-C, else FAILED)."""
        if self.parent_run_id is None:
            return
        try:
            self.log_summary()
        except Exception as err:  # the children are logged; a summary failure must not hide the run's outcome
            if exc_type is not None:
                log.warning("parent run summary not logged: %s", err)
            else:
                self.client.set_terminated(self.parent_run_id, "FAILED")
                raise
        status = "FINISHED" if exc_type is None else ("KILLED" if exc_type is KeyboardInterrupt else "FAILED")
        if exc_type is None:
            self.client.set_terminated(self.parent_run_id, status)
        else:  # the run's own error is the one to report, even when the store is gone too
            with contextlib.suppress(Exception):
                self.client.set_terminated(self.parent_run_id, status)
