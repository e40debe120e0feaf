"""A tracking store that is down costs one line before any work; runs of killed processes are closed."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import mlflow
import pytest

from clisc.errors import CliscError
from clisc.pipeline.experiment import run_experiment
from clisc.tracking.health import OWNER_TAG, check_tracking_store, close_orphaned_runs, owner, owner_is_dead


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("scheme", ["http", "postgresql"])
def test_a_store_that_is_down_fails_fast_with_one_line(scheme: str) -> None:
    uri = (f"http://127.0.0.1:{closed_port()}" if scheme == "http"
           else f"postgresql://clisc:secret@127.0.0.1:{closed_port()}/mlflow")
    start = time.monotonic()
    with pytest.raises(CliscError, match="unreachable") as err:
        check_tracking_store(uri, timeout=2)
    assert time.monotonic() - start < 10
    assert "\n" not in str(err.value) and "secret" not in str(err.value)


def test_local_stores_need_no_probe(tracking_uri: str, tmp_path) -> None:
    check_tracking_store(tracking_uri)  # an existing SQLite store: its schema is checked, nothing more
    check_tracking_store(str(tmp_path / "mlruns"))


def test_experiment_against_a_down_server_stops_before_any_stage(tmp_path, tiny_brats_dir) -> None:
    import clisc.pipeline.run  # noqa: F401  (the imports, slow on a loaded machine, are not what is timed)

    uri = f"http://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    with pytest.raises(CliscError, match="nothing was run"):
        run_experiment("table1", tiny_brats_dir, profile="tiny", cache_root=tmp_path / "cache",
                       runs_root=tmp_path / "runs", tracking_uri=uri, echo=lambda _: None)
    assert time.monotonic() - start < 15
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


def test_owner_liveness() -> None:
    host = socket.gethostname()
    assert not owner_is_dead(owner())
    assert owner_is_dead(f"{host}@{dead_pid()}")
    assert not owner_is_dead(f"another-host@{dead_pid()}")  # unknown: left to the heartbeat
    assert not owner_is_dead(None) and not owner_is_dead("garbage")


def test_runs_left_running_by_a_dead_process_are_killed(tracking_uri: str) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.create_experiment("orphans")
    dead = client.create_run(experiment, tags={OWNER_TAG: f"{socket.gethostname()}@{dead_pid()}"}).info.run_id
    alive = client.create_run(experiment, tags={OWNER_TAG: owner()}).info.run_id
    assert close_orphaned_runs(client, [experiment]) == [dead]
    assert client.get_run(dead).info.status == "KILLED" and client.get_run(alive).info.status == "RUNNING"


def test_a_store_failing_mid_experiment_is_one_line_saying_how_to_log_again(tracking_uri: str, fakes,
                                                                            monkeypatch) -> None:
    from mlflow.exceptions import MlflowException

    from clisc.tracking import ExperimentRecorder

    with pytest.raises(CliscError, match="run the same command again") as err:
        with ExperimentRecorder("store_dies", {"methods": ["clisc"]}, tracking_uri=tracking_uri) as rec:
            rec.log_result(fakes.fake_result("raw_cam", [40, 50]))

            def refused(*args, **kwargs):
                raise MlflowException("API request failed: Connection refused\nmore detail")

            monkeypatch.setattr(rec.client, "log_batch", refused)
            monkeypatch.setattr(rec.client, "set_terminated", refused)
            rec.log_result(fakes.fake_result("clisc", [50, 60]))
    assert "\n" not in str(err.value) and "CLISC · seed 0" in str(err.value) and "Connection refused" in str(err.value)


@pytest.mark.slow
def test_two_processes_opening_a_new_sqlite_store_at_once(tmp_path) -> None:
    """Found by benchmarks/chaos.py: both ran MLflow's schema migration and one failed."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    code = ("import sys; from clisc.tracking.health import check_tracking_store; check_tracking_store(sys.argv[1]); "
            "import mlflow; mlflow.MlflowClient(sys.argv[1]).create_experiment(sys.argv[2])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    both = [subprocess.Popen([sys.executable, "-c", code, uri, name], env=env, stderr=subprocess.PIPE)
            for name in ("a", "b")]
    errors = [p.communicate(timeout=600)[1].decode() for p in both]
    assert [p.returncode for p in both] == [0, 0], [e[-1500:] for e in errors]
    assert {e.name for e in mlflow.MlflowClient(uri).search_experiments()} >= {"a", "b"}
