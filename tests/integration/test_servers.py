"""The multi-machine setup on one machine: a throwaway PostgreSQL cluster holding an Optuna study that
two search workers share and the backend store of an MLflow tracking server (local artifact root)
that experiments and searches log to. Run with `make test-integration`; skipped without the Debian
PostgreSQL binaries (apt-get install -y postgresql) or a driver (pip install -e '.[ops]')."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import optuna
import pytest

from clisc.pipeline.experiment import run_experiment
from clisc.search.study import run_search
from clisc.tracking import ExperimentRecorder, load_experiment_results

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HERE = Path(__file__).resolve().parent
SPACE = {"alpha": {"type": "float", "low": 0, "high": 30, "step": 10}}
SERVER_START_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found and (found[-1].parent / "pg_ctl").is_file() else None


@pytest.fixture(scope="module")
def postgres():
    """URL prefix ``postgresql://clisc@127.0.0.1:<port>`` of a new cluster (databases optuna, mlflow)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin (apt-get install -y postgresql)")
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install -e '.[ops]'")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="clisc-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as the postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    run = lambda *argv: subprocess.run(as_user + [str(a) for a in argv], check=True, capture_output=True, text=True)
    try:
        run(bin_dir / "initdb", "-D", data, "-U", "clisc", "--auth=trust", "-E", "UTF8")
        run(bin_dir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-t", "120", "start",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1")
        for name in ("optuna", "mlflow"):
            run(bin_dir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "clisc", name)
        yield f"postgresql://clisc@127.0.0.1:{port}"
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """``(uri, artifact folder)`` of ``mlflow server`` on the cluster's ``mlflow`` database."""
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    port = free_port()
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"{postgres}/mlflow",
            "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = tmp_path_factory.mktemp("mlflow-log") / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, f"mlflow server not up in {SERVER_START_S} s: {log.read_text()[-3000:]}"
                time.sleep(1)
        yield uri, artifacts
    finally:
        stop_group(server)


def stop_group(server: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the server's process group (it leads its own session)."""
    for sig in (15, 9):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(30)
            return
        except subprocess.TimeoutExpired:
            continue


def test_two_search_workers_share_one_postgresql_study(toy, postgres, mlflow_server) -> None:
    uri, _ = mlflow_server
    study = run_search(toy.slow_objective_partial(), SPACE, n_trials=6, study_name="pg-two-workers",
                       storage=f"{postgres}/optuna", workers=2, tracking_uri=uri, label_free=False, seed=1)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 6
    assert len({t.user_attrs["owner"] for t in study.trials}) == 2  # both workers took trials
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("search/pg-two-workers")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * 7  # the search run + 6 trials
    again = optuna.load_study(study_name="pg-two-workers", storage=f"{postgres}/optuna")
    assert again.best_value == study.best_value  # any machine reading the database sees the study


def test_an_experiment_logs_to_the_mlflow_server(postgres, mlflow_server, synthetic_dataset, tmp_path, fakes) -> None:
    uri, artifacts = mlflow_server
    spec = tmp_path / "served.yaml"
    spec.write_text("name: served\ndescription: an experiment logged to a tracking server\nmethods: [cam_amda]\n")
    results = run_experiment(spec, synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                             runs_root=tmp_path / "runs", tracking_uri=uri, echo=lambda _: None)
    back = load_experiment_results("served", uri)
    assert [r.method for r in back] == ["cam_amda"]
    assert back[0].per_case["dsc"].round(6).tolist() == results[0].per_case["dsc"].round(6).tolist()
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("served")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.search_runs([experiment.experiment_id], "tags.`clisc.role` = 'experiment'")[0]
    assert {"served.md", "served.csv", "stage_times.png"} <= {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert any(p.name == "served.md" for p in artifacts.rglob("*.md"))  # the server wrote them to its local root
