"""Results for reports come only from MLflow: the latest parent run of each experiment."""
from __future__ import annotations

from pathlib import Path

from clisc.pipeline.result import MethodResult
from clisc.tracking.readback import load_experiment_results

QUALITATIVE_ARTIFACT = "qualitative.npz"


def load_results(experiment: str, tracking_uri: str | None, download_dir: Path) -> list[MethodResult]:
    """Finished children of ``experiment``'s latest parent run; their ``qualitative.npz`` (if logged)
    is downloaded under ``download_dir`` and listed in ``artifacts``."""
    return load_experiment_results(experiment, tracking_uri, fetch=[QUALITATIVE_ARTIFACT], dst_dir=download_dir)
