"""The MLflow UI (tracking server) command for a store."""
from __future__ import annotations

import sys


def ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> list[str]:
    """argv of ``mlflow ui`` serving ``tracking_uri`` on ``host:port`` with this interpreter's mlflow.

    One server worker is plenty for browsing runs locally (MLflow's default is 4 processes). Run it in
    its own process group: ``mlflow ui`` starts uvicorn (and job runners) as child processes.
    """
    return [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", tracking_uri,
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]
