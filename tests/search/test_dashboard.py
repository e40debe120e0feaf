"""clisc dashboard: which storage it serves, its argv, and (with optuna-dashboard installed) a real server."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import optuna
import pytest

from clisc.errors import CliscError
from clisc.search.cli import dashboard_command, find_storage
from clisc.search.study import open_storage


def test_find_storage(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CliscError, match="studies found: none"):
        find_storage(None, None)
    with pytest.raises(CliscError, match="no Optuna study journal"):
        find_storage("absent", None)
    (tmp_path / "optuna").mkdir()
    (tmp_path / "optuna" / "s1.log").write_text("")
    assert find_storage(None, None) == str(tmp_path / "optuna" / "s1.log")
    (tmp_path / "optuna" / "s2.log").write_text("")
    with pytest.raises(CliscError, match="s1, s2"):
        find_storage(None, None)
    assert find_storage("s2", None) == str(tmp_path / "optuna" / "s2.log")
    assert find_storage(None, "postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.slow
def test_dashboard_serves_a_journal_study_on_loopback(tmp_path) -> None:
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard not installed (pip install -e '.[ops]')")
    journal = tmp_path / "study.log"
    study = optuna.create_study(study_name="dash", storage=open_storage(str(journal)))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = dashboard_command(str(journal), port=port)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.loads(response.read())["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.3)
        assert [s["study_name"] for s in studies] == ["dash"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(15)
        server.stderr.close()
