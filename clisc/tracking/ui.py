"""The MLflow UI (tracking server) command for a store."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import webbrowser
from collections.abc import Callable


def ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000, workers: int = 1,
               app: bool | None = None) -> list[str]:
    """argv of ``mlflow ui`` serving ``tracking_uri`` on ``host:port`` with this interpreter's mlflow.

    One server worker is plenty for browsing runs locally (MLflow's default is 4 processes). ``app``
    (default: when installed) serves it as the ``clisc`` MLflow app, whose UI opens in the
    model-training view in a fresh browser (:mod:`clisc.tracking.mlflow_app`). Run it in its own
    process group: ``mlflow ui`` starts uvicorn (and job runners) as child processes.
    """
    from clisc.tracking.mlflow_app import APP_NAME, app_registered

    argv = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", tracking_uri,
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]
    return argv + (["--app-name", APP_NAME] if (app_registered() if app is None else app) else [])


def ui_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for :func:`ui_command`: ``base`` (default ``os.environ``) with MLflow's background
    job workers off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``; they are for GenAI jobs, and start
    about ten extra processes, ~2.6 GB RSS, that browsing runs never uses)."""
    env = dict(os.environ if base is None else base)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env



# MLflow 3's UI shows an experiment as GenAI (traces overview) or model training (runs table) by this
# URL parameter, else by the browser's last choice of the "GenAI / Model training" switch (GenAI until
# the user picks the other; clisc's MLflow app makes model training the default), whatever the
# experiment's mlflow.experimentKind tag says. The parameter is dropped by MLflow's own navigation.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
SWITCH_HINT = ('MLflow 3 opens experiments in its GenAI view until you pick "Model training" in the switch at '
               "the top left of its home page once; your browser keeps that choice.")


def runs_url(base: str, experiment_id: str) -> str:
    """Address of an experiment's runs table in the model-training view (``base``: ``http://host:port``)."""
    return f"{base}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_VIEW}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """Address of one run's page in the model-training view."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_VIEW}"


def experiments_url(base: str) -> str:
    """Address of the experiment list in the model-training view (where ``clisc ui`` opens the browser)."""
    return f"{base}/#/experiments?{MODEL_TRAINING_VIEW}"


def ui_lines(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """What ``clisc ui`` prints: the address, the view switch hint, and each experiment's runs table."""
    from clisc.tracking.store import client_for

    from clisc.tracking.mlflow_app import app_registered

    base = f"http://{host}:{port}"
    lines = [f"MLflow UI for {tracking_uri} at {experiments_url(base)} (Ctrl-C stops it)"]
    if not app_registered():
        lines.append(f"  {SWITCH_HINT} (`make venv` installs clisc's MLflow app, which makes it the default)")
    experiments = [e for e in client_for(tracking_uri).search_experiments() if e.name != "Default"]
    lines += [f"  runs of {e.name}: {runs_url(base, e.experiment_id)}" for e in experiments]
    return lines


def has_browser() -> bool:
    """Whether a graphical browser can be opened here (macOS, Windows, or a Linux display): a headless
    Linux session would get a console browser (lynx, w3m) taking over the terminal instead."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def wait_until_up(base: str, server: subprocess.Popen, timeout_s: float = 120.0) -> bool:
    """Poll ``base/health`` until the server answers (True), exits or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def stop_server(server: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM then (after ``grace_s``) SIGKILL to the server's process group (it leads its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def serve_ui(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000, open_browser: bool | None = None,
             echo: Callable[[str], None] = print) -> int:
    """Run the MLflow UI on ``tracking_uri`` until it exits or Ctrl-C (then stopped without a traceback:
    the server runs in its own session, so the terminal's SIGINT reaches only this process).

    ``open_browser`` (default: when :func:`has_browser`) opens the experiment list in the
    model-training view once the server answers. Returns the server's exit status (0 after Ctrl-C).
    """
    base = f"http://{host}:{port}"
    server = subprocess.Popen(ui_command(tracking_uri, host=host, port=port), env=ui_environment(),
                              start_new_session=True)
    if has_browser() if open_browser is None else open_browser:
        def _open() -> None:
            if wait_until_up(base, server):
                webbrowser.open(experiments_url(base))

        threading.Thread(target=_open, daemon=True).start()
    try:
        return server.wait()
    except KeyboardInterrupt:
        echo("[clisc] stopping the MLflow UI ...")
        stop_server(server)
        return 0
