"""Browser check of the MLflow UI: serve a store on a loopback port, click through it as a user would
with headless Chromium, and screenshot each page.

    python scripts/ui_screenshots.py [--tracking-uri sqlite:///mlflow.db] [--experiment table1] [--out reports/ui]

Starts from the address ``clisc ui`` prints (``0_home.png``), picks "Model training" as its hint says,
then: ``1_experiments.png`` (the list), a click on the
experiment -> ``2_experiment.png`` (it must open on its runs table, Dataset column filled), a click on
the parent run -> ``3_parent_run.png`` (headline metrics, dataset), its Artifacts tab ->
``4_parent_artifacts.png`` (table and figures), a child run's metric charts -> ``5_child_metrics.png``
(training curves), and the direct runs link ``clisc ui`` prints in a fresh tab -> ``6_runs_link.png``. Needs Chromium (``apt-get install -y chromium``; exits 2 without it) and aiohttp
(an MLflow dependency) to drive it over the DevTools protocol.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from clisc.tracking.store import ROLE_TAG, client_for, default_tracking_uri
from clisc.tracking.ui import runs_url, ui_command

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
SETTLE_S = 6.0  # the single-page app fetches runs after the page loads


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_url(url: str, timeout: float, process: subprocess.Popen) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args[0]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


class Page:
    """One Chromium tab driven over the DevTools protocol (aiohttp websocket)."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(SETTLE_S)

    async def click_text(self, text: str, selector: str = "a, button, [role=tab], [role=radio], label, span") -> None:
        """Click the innermost element matching ``selector`` whose visible text is ``text`` (first in
        document order among the innermost ones)."""
        script = (f"(() => {{ const all = [...document.querySelectorAll({json.dumps(selector)})]"
                  f".filter(e => e.textContent.trim() === {json.dumps(text)} && e.offsetParent !== null);"
                  " const el = all.find(e => !all.some(o => o !== e && e.contains(o)));"
                  " if (!el) return false; el.click(); return true; })()")
        found = (await self.call("Runtime.evaluate", expression=script, returnByValue=True))["result"]["value"]
        if not found:
            raise SystemExit(f"no clickable {text!r} on {await self.location()}")
        await asyncio.sleep(SETTLE_S)

    async def click_link_to(self, fragment: str) -> None:
        """Click the first link whose address contains ``fragment``."""
        script = (f"(() => {{ const el = [...document.querySelectorAll('a')].find(a => a.href.includes({json.dumps(fragment)}));"
                  " if (!el) return false; el.click(); return true; })()")
        if not (await self.call("Runtime.evaluate", expression=script, returnByValue=True))["result"]["value"]:
            raise SystemExit(f"no link to {fragment!r} on {await self.location()}")
        await asyncio.sleep(SETTLE_S)

    async def location(self) -> str:
        return (await self.call("Runtime.evaluate", expression="location.href", returnByValue=True))["result"]["value"]

    async def shot(self, path: Path) -> None:
        data = (await self.call("Page.captureScreenshot", format="png"))["data"]
        path.write_bytes(base64.b64decode(data))
        print(f"wrote {path}  <- {await self.location()}")


async def click_through(debug_port: int, base: str, experiment: str, parent_id: str, child: tuple[str, str],
                        out: Path) -> None:
    """What a user does after ``clisc ui``: the home page, the "Model training" switch (once per
    browser), the experiment, its parent run and artifacts, then a child run's metric charts."""
    import aiohttp

    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=5).read())
    ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        page = Page(ws)
        await page.call("Emulation.setDeviceMetricsOverride", width=1600, height=1500, deviceScaleFactor=1,
                        mobile=False)
        await page.goto(f"{base}/")
        await page.shot(out / "0_home.png")
        await page.click_text("Model training")
        await page.click_text("Experiments")
        await page.shot(out / "1_experiments.png")
        await page.click_text(experiment)
        await page.shot(out / "2_experiment.png")
        await page.click_link_to(f"/runs/{parent_id}")  # the parent run, in the runs table
        await page.shot(out / "3_parent_run.png")
        experiment_id, child_id = child
        await page.goto(f"{base}/#/experiments/{experiment_id}/runs/{parent_id}/artifacts")
        await page.shot(out / "4_parent_artifacts.png")
        await page.goto(f"{base}/#/experiments/{experiment_id}/runs/{child_id}/model-metrics")
        await page.shot(out / "5_child_metrics.png")
        await page.goto(runs_url(base, experiment_id))  # the direct link clisc ui prints
        await page.shot(out / "6_runs_link.png")


def pick_runs(uri: str, experiment: str | None) -> tuple[str, str, tuple[str, str]]:
    """(experiment name, its latest parent run, (experiment id, a child run with training curves))."""
    client = client_for(uri)
    found = client.get_experiment_by_name(experiment) if experiment else None
    if experiment and found is None:
        raise SystemExit(f"{uri}: no experiment named {experiment!r}")
    ids = [found.experiment_id] if found else [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(ids, f"tags.`{ROLE_TAG}` = 'experiment'", max_results=1, order_by=["start_time DESC"])
    if not parents:
        raise SystemExit(f"{uri}: no experiment parent run to show (run `clisc experiment` first)")
    parent = parents[0]
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    children.sort(key=lambda r: -sum("/" in k for k in r.data.metrics))  # the one with most curves first
    child = children[0].info.run_id if children else parent.info.run_id
    name = client.get_experiment(parent.info.experiment_id).name
    return name, parent.info.run_id, (parent.info.experiment_id, child)


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(15)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default=None, help="experiment name (default: the latest parent run's)")
    parser.add_argument("--out", type=Path, default=Path("reports/ui"))
    args = parser.parse_args()
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        print("no Chromium found (apt-get install -y chromium): no screenshots taken", file=sys.stderr)
        return 2
    uri = args.tracking_uri or default_tracking_uri()
    experiment, parent, child = pick_runs(uri, args.experiment)
    port, debug_port = free_port(), free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(ui_command(uri, port=port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env, start_new_session=True)
    with tempfile.TemporaryDirectory(prefix="clisc-chromium-") as profile:
        chrome = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                   "--no-first-run", f"--user-data-dir={profile}",
                                   f"--remote-debugging-port={debug_port}", "about:blank"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_for_url(f"http://127.0.0.1:{port}/health", 180, server)
            wait_for_url(f"http://127.0.0.1:{debug_port}/json/version", 60, chrome)
            args.out.mkdir(parents=True, exist_ok=True)
            asyncio.run(click_through(debug_port, f"http://127.0.0.1:{port}", experiment, parent, child, args.out))
        finally:
            stop(chrome)
            stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
