"""`mlflow ui` started from ui_command serves the experiment and its parent/child runs over REST."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from clisc.tracking import ExperimentRecorder, ui_command

START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc; empty elsewhere)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def call(base: str, path: str, body: dict | None = None, query: str = "") -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}{path}{query}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_ui_environment_turns_job_workers_off() -> None:
    from clisc.tracking.ui import ui_environment
    env = ui_environment({"PATH": "/bin", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})
    assert env == {"PATH": "/bin", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def test_ui_command_argv() -> None:
    argv = ui_command("sqlite:///x/mlflow.db", port=5123, app=False)
    assert argv[1:] == ["-m", "mlflow", "ui", "--backend-store-uri", "sqlite:///x/mlflow.db",
                        "--host", "127.0.0.1", "--port", "5123", "--workers", "1"]
    assert ui_command("sqlite:///x/mlflow.db", app=True)[-2:] == ["--app-name", "clisc"]


def test_mlflow_app_entry_point_is_declared_and_importable() -> None:
    import tomllib

    from clisc.tracking import mlflow_app

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    target = pyproject["project"]["entry-points"]["mlflow.app"][mlflow_app.APP_NAME]
    module, name = target.split(":")
    assert module == mlflow_app.__name__ and callable(getattr(mlflow_app, name))


def test_index_html_gets_the_model_training_default_once() -> None:
    from clisc.tracking.mlflow_app import DEFAULT_VIEW_SCRIPT, with_default_view

    html = '<!doctype html><html><head><meta charset="utf-8"><script src="main.js"></script></head></html>'
    patched = with_default_view(html)
    assert patched.index(DEFAULT_VIEW_SCRIPT) < patched.index("main.js")  # before the bundle reads the key
    assert with_default_view(patched) == patched
    assert "localStorage.getItem(k)===null" in DEFAULT_VIEW_SCRIPT  # a user's own choice is kept
    assert '"mlflow.workflowType_v1": "\\"machine_learning\\""' in DEFAULT_VIEW_SCRIPT


def test_runs_table_default_view_script() -> None:
    import json
    import re

    from clisc.tracking.mlflow_app import RUNS_COLUMNS, RUNS_VIEW_KEY, runs_view_script

    script = runs_view_script({"7": ["parentrun"]})
    key = 'MLflowLocalStorage-1.1-ExperimentPage-["7"]-ReactComponentState'  # MLflow's own key of experiment 7
    assert re.match(RUNS_VIEW_KEY, key).group(1) == "7"
    views = json.loads(re.search(r"var V=(\{.*?\}\}\}),D=", script).group(1))
    assert views["7"]["runsExpanded"] == {"parentrun": True} and views["7"]["selectedColumns"] == RUNS_COLUMNS
    assert "metrics.`dsc_mean`" in RUNS_COLUMNS and "tags.`label_free`" in RUNS_COLUMNS
    assert "if(v===null" in script  # a view the user saved wins


def test_mlflow_app_serves_patched_index() -> None:
    """MLflow's Flask app, patched by the clisc app, serves index.html with the default-view script."""
    from mlflow.server import app as flask_app

    from clisc.tracking.mlflow_app import DEFAULT_VIEW_SCRIPT, patch_index

    patch_index(flask_app)
    patch_index(flask_app)  # idempotent
    response = flask_app.test_client().get("/")
    if b"landing page (index.html) not found" in response.data:
        pytest.skip("this MLflow has no built UI (a source install)")
    assert DEFAULT_VIEW_SCRIPT in response.get_data(as_text=True)


def curve_result(fakes, method: str, dsc: list[float]):
    """A fake result with a 3-epoch U-Net curve and a data split, as a pipeline run has."""
    split = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "split": ["train", "train", "valid", "test"]})
    return fakes.fake_result(method, dsc, histories={"unet_round1": [{"epoch": e, "loss": 1.0 / e} for e in (1, 2, 3)]},
                             split=split, data_root="/data/BraTS2020", stage_times={"unet_round1": 2.0},
                             tags={"dataset": "f1ngerpr1nt", "split_file": "f1ngerpr1nt_seed0.csv"})


@pytest.mark.slow
def test_ui_serves_runs(tracking_uri: str, fakes) -> None:
    spec = {"methods": ["clisc", "raw_cam"], "description": "what the UI check is about"}
    with ExperimentRecorder("ui_check", spec, tracking_uri=tracking_uri) as rec:
        child_ids = {rec.log_result(curve_result(fakes, m, [50, 60])) for m in ("clisc", "raw_cam")}
        parent_id = rec.parent_run_id
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
    server = subprocess.Popen(ui_command(tracking_uri, port=port), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                experiment = call(base, "/api/2.0/mlflow/experiments/get-by-name", query="?experiment_name=ui_check")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"mlflow ui did not answer within {START_TIMEOUT_S} s"
                time.sleep(0.5)
        experiment_id = experiment["experiment"]["experiment_id"]
        experiment_tags = {t["key"]: t["value"] for t in experiment["experiment"]["tags"]}
        assert experiment_tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs
        assert experiment_tags["mlflow.note.content"] == "what the UI check is about"
        runs = call(base, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment_id], "max_results": 10})["runs"]
        tags = {run["info"]["run_id"]: {t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs}
        assert set(tags) == child_ids | {parent_id}
        assert MLFLOW_PARENT_RUN_ID not in tags[parent_id]
        assert all(tags[child][MLFLOW_PARENT_RUN_ID] == parent_id for child in child_ids)
        # the parent shows the result: its table and figures as artifacts, headline metrics
        files = {f["path"] for f in call(base, "/api/2.0/mlflow/artifacts/list", query=f"?run_id={parent_id}")["files"]}
        assert {"ui_check.md", "ui_check.csv", "stage_times.png", "spec.yaml"} <= files
        by_id = {run["info"]["run_id"]: run for run in runs}
        parent_metrics = {m["key"]: m["value"] for m in by_id[parent_id]["data"]["metrics"]}
        assert parent_metrics["dsc_mean"] == 55.0 and parent_metrics["best_rival_dsc_mean"] == 55.0
        # every run names its dataset (the UI's Dataset column)
        for run_id in child_ids | {parent_id}:
            inputs = by_id[run_id]["inputs"]["dataset_inputs"]
            assert [d["dataset"]["name"] for d in inputs] == ["BraTS2020"]
            assert json.loads(inputs[0]["dataset"]["profile"])["cases_train"] == 2
        # the training curve of each child, step by step
        child = sorted(child_ids)[0]
        history = call(base, "/api/2.0/mlflow/metrics/get-history", query=f"?run_id={child}&metric_key=unet_round1/loss")
        assert [(m["step"], round(m["value"], 4)) for m in history["metrics"]] == [(1, 1.0), (2, 0.5), (3, 0.3333)]
    finally:  # mlflow ui runs uvicorn as a child: end the server's whole process group
        stop_group(server)


def stop_group(server: subprocess.Popen) -> None:
    """SIGTERM then SIGKILL to the server's process group (it leads its own session)."""
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(server.pid, sig)
            except ProcessLookupError:
                return
            try:
                server.wait(timeout=15)
                time.sleep(0.5)  # give the group's other members time to exit before SIGKILL
            except subprocess.TimeoutExpired:
                continue
    finally:
        server.stderr.close()


def test_ui_lines_link_each_experiment_to_its_runs_table(tracking_uri: str, fakes) -> None:
    from clisc.tracking.ui import ui_lines

    with ExperimentRecorder("linked", {"methods": ["clisc"]}, tracking_uri=tracking_uri) as rec:
        rec.log_result(fakes.fake_result("clisc", [50, 60]))
        experiment_id = rec.experiment_id
    lines = ui_lines(tracking_uri, port=5123)
    assert lines[0].endswith("at http://127.0.0.1:5123/#/experiments?workflowType=machine_learning (Ctrl-C stops it)")
    assert f"  runs of linked: http://127.0.0.1:5123/#/experiments/{experiment_id}/runs?workflowType=machine_learning" in lines


@pytest.mark.slow
def test_clisc_ui_stops_on_ctrl_c_without_traceback(tracking_uri: str, tmp_path) -> None:
    """Ctrl-C in the terminal (SIGINT to the foreground process group) ends `clisc ui` and its server
    with exit status 0 and no traceback. The child starts with SIGINT at its default, as in a terminal: a
    shell without job control starts background commands (``make test &``) with SIGINT ignored, which
    they pass on, and `clisc ui` then rightly ignores Ctrl-C as `nohup` asks."""
    import sys

    port = free_port()
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    cli = subprocess.Popen([sys.executable, "-c", "import sys; from clisc.cli import main; sys.exit(main())",
                            "ui", "--tracking-uri", tracking_uri, "--port", str(port), "--no-browser"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert cli.poll() is None, cli.stderr.read().decode()[-2000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"clisc ui did not answer within {START_TIMEOUT_S} s"
                time.sleep(0.5)
        os.killpg(cli.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:  # failed: the server leads its own session, so stop it too, not only the CLI
            for child in _children(cli.pid):
                try:
                    os.killpg(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err and b"Traceback" not in out, err.decode()[-2000:]
    with pytest.raises(OSError):  # the server is gone too
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_recorder_link_to_a_server_run_opens_the_model_training_view(tracking_uri: str) -> None:
    rec = ExperimentRecorder("x", {"methods": []}, tracking_uri="http://mlflow.example:5000/")
    rec.experiment_id, rec.parent_run_id = "3", "abc"
    assert rec.run_link() == "http://mlflow.example:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert ExperimentRecorder("x", {}, tracking_uri=tracking_uri).run_link() is None  # a local store: no server
