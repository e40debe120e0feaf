"""Reading finished runs back from MLflow: the latest parent run of an experiment and its children as
:class:`MethodResult` (tags, params, stage times, per-case table), for reports and summaries."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from clisc.pipeline.result import MethodResult
from clisc.tracking.health import OWNER_TAG
from clisc.tracking.store import PER_CASE_ARTIFACT, ROLE_TAG, STAGE_TIME_PREFIX, client_for

_INTERNAL_TAGS = {ROLE_TAG, "method", "seed", OWNER_TAG}
_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def _search_all(
    client: mlflow.MlflowClient, experiment_id: str, filter_string: str, order_by: list[str]
) -> Iterator[Run]:
    """Every active run matching ``filter_string``, page after page."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string, ViewType.ACTIVE_ONLY, 1000, order_by, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def latest_parent_run(experiment: str, tracking_uri: str | None = None) -> Run | None:
    """The most recently started parent run of ``experiment`` (any status), or None."""
    client = client_for(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id], f"tags.`{ROLE_TAG}` = 'experiment'", ViewType.ACTIVE_ONLY, 1, ["start_time DESC"]
    )
    return runs[0] if runs else None


def _read_per_case(path: str | Path) -> pd.DataFrame:
    text_cols = {"case_id": str, "size_group": str, "empty": str}
    missing = ["", "nan", "NaN"]
    return pd.read_csv(path, dtype=text_cols, keep_default_na=False, na_values={"dsc": missing, "hd95": missing})


def result_from_run(
    client: mlflow.MlflowClient, run: Run, dst_dir: Path, fetch: Iterable[str] = ()
) -> MethodResult:
    """Rebuild a :class:`MethodResult` from a child run: tags, params, stage times, per-case table.

    Files named in ``fetch`` that the run logged (e.g. ``qualitative.npz``) are downloaded into
    ``dst_dir/<run id>/`` and listed in ``artifacts`` under their file name. Params come back as
    strings (MLflow stores them so).
    """
    run_id = run.info.run_id
    target = dst_dir / run_id
    target.mkdir(parents=True, exist_ok=True)
    per_case = _read_per_case(client.download_artifacts(run_id, PER_CASE_ARTIFACT, str(target)))
    logged = {f.path for f in client.list_artifacts(run_id)}
    artifacts = {
        name: Path(client.download_artifacts(run_id, name, str(target))) for name in fetch if name in logged
    }
    data = run.data
    return MethodResult(
        method=data.tags["method"],
        seed=int(data.tags["seed"]),
        per_case=per_case,
        params=dict(data.params),
        tags={k: v for k, v in data.tags.items() if not k.startswith("mlflow.") and k not in _INTERNAL_TAGS},
        stage_times={
            k[len(STAGE_TIME_PREFIX):]: v for k, v in data.metrics.items() if k.startswith(STAGE_TIME_PREFIX)
        },
        artifacts=artifacts,
    )


def load_experiment_results(
    experiment: str,
    tracking_uri: str | None = None,
    fetch: Iterable[str] = (),
    dst_dir: Path | None = None,
) -> list[MethodResult]:
    """Finished children of the latest parent run of ``experiment``, read back from MLflow (logging order).

    Empty list when the experiment or its parent run does not exist. Downloads go to ``dst_dir``
    (default: a new temporary directory).
    """
    parent = latest_parent_run(experiment, tracking_uri)
    if parent is None:
        return []
    client = client_for(tracking_uri)
    dst = Path(dst_dir) if dst_dir is not None else Path(tempfile.mkdtemp(prefix="clisc-mlflow-"))
    children = _search_all(
        client,
        parent.info.experiment_id,
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}' and tags.`{ROLE_TAG}` = 'result'"
        " and attributes.status = 'FINISHED'",
        ["end_time ASC"],  # logging order (a child's start is back-dated by its compute time)
    )
    fetch = tuple(fetch)
    with _quiet_downloads():
        return [result_from_run(client, run, dst, fetch) for run in children]


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow progress bar per downloaded file (one per child run clutters ``clisc report``)."""
    saved = os.environ.get(_PROGRESS_BAR_ENV)
    os.environ[_PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_BAR_ENV, None)
        else:
            os.environ[_PROGRESS_BAR_ENV] = saved
