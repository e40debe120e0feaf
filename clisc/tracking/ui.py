"""The MLflow UI (tracking server) command for a store."""
from __future__ import annotations

import os
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


def ui_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for :func:`ui_command`: ``base`` (default ``os.environ``) with MLflow's background
    job workers off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``; they are for GenAI jobs, and start
    about ten extra processes, ~2.6 GB RSS, that browsing runs never uses)."""
    env = dict(os.environ if base is None else base)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env



# MLflow 3's UI shows an experiment as GenAI (traces overview) or model training (runs table) by this
# URL parameter, else by the browser's last choice of the "GenAI / Model training" switch (GenAI until
# the user picks the other), whatever the experiment's mlflow.experimentKind tag says
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
SWITCH_HINT = ('MLflow 3 opens experiments in its GenAI view until you pick "Model training" in the switch at '
               "the top left of its home page once; your browser keeps that choice.")


def runs_url(base: str, experiment_id: str) -> str:
    """Address of an experiment's runs table in the model-training view (``base``: ``http://host:port``)."""
    return f"{base}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_VIEW}"


def ui_lines(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """What ``clisc ui`` prints: the address, the view switch hint, and each experiment's runs table."""
    from clisc.tracking.store import client_for

    base = f"http://{host}:{port}"
    lines = [f"MLflow UI for {tracking_uri} at {base}/ (Ctrl-C stops it)", f"  {SWITCH_HINT}"]
    experiments = [e for e in client_for(tracking_uri).search_experiments() if e.name != "Default"]
    lines += [f"  runs of {e.name}: {runs_url(base, e.experiment_id)}" for e in experiments]
    return lines
