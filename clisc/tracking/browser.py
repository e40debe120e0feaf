"""A headless Chromium with a fresh profile, driven over the DevTools protocol, to check the MLflow UI as a
new user sees it (``scripts/ui_screenshots.py``, ``tests/integration/test_browser.py``).

Needs a Chromium binary (``apt-get install -y chromium``) and aiohttp (an MLflow dependency) for the
DevTools websocket; no browser download, no Playwright.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
SETTLE_S = 6.0  # the single-page app fetches runs after the page loads


def find_browser() -> str | None:
    """The first Chromium on PATH, or None."""
    return next((b for b in BROWSERS if shutil.which(b)), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_url(url: str, timeout: float, process: subprocess.Popen) -> bytes:
    """The body of ``url`` once it answers; RuntimeError when ``process`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the process group ``process`` leads."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(15)


@contextlib.contextmanager
def fresh_chromium(browser: str) -> Iterator[int]:
    """Headless ``browser`` on a new empty profile (nothing stored: what a new user's browser has);
    yields its DevTools port."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="clisc-chromium-") as profile:
        chrome = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                   "--no-first-run", f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                                   "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            wait_for_url(f"http://127.0.0.1:{port}/json/version", 60, chrome)
            yield port
        finally:
            stop(chrome)


class Page:
    """One Chromium tab driven over the DevTools protocol (aiohttp websocket)."""

    def __init__(self, ws: Any):
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        return (await self.call("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(SETTLE_S)

    async def click_text(self, text: str, selector: str = "a, button, [role=tab], [role=radio], label, span") -> None:
        """Click the innermost visible element matching ``selector`` whose text is ``text``."""
        script = (f"(() => {{ const all = [...document.querySelectorAll({json.dumps(selector)})]"
                  f".filter(e => e.textContent.trim() === {json.dumps(text)} && e.offsetParent !== null);"
                  " const el = all.find(e => !all.some(o => o !== e && e.contains(o)));"
                  " if (!el) return false; el.click(); return true; })()")
        if not await self.evaluate(script):
            raise LookupError(f"no clickable {text!r} on {await self.location()}")
        await asyncio.sleep(SETTLE_S)

    async def click_link_to(self, fragment: str) -> None:
        """Click the first link whose address contains ``fragment``."""
        script = (f"(() => {{ const el = [...document.querySelectorAll('a')].find(a => a.href.includes({json.dumps(fragment)}));"
                  " if (!el) return false; el.click(); return true; })()")
        if not await self.evaluate(script):
            raise LookupError(f"no link to {fragment!r} on {await self.location()}")
        await asyncio.sleep(SETTLE_S)

    async def location(self) -> str:
        return await self.evaluate("location.href")

    async def text(self) -> str:
        return await self.evaluate("document.body.innerText")

    async def shot(self, path: Path) -> None:
        data = (await self.call("Page.captureScreenshot", format="png"))["data"]
        path.write_bytes(base64.b64decode(data))


@contextlib.asynccontextmanager
async def open_page(debug_port: int, width: int = 1600, height: int = 1000) -> AsyncIterator[Page]:
    """The browser's first tab as a :class:`Page` of ``width`` x ``height`` CSS pixels."""
    import aiohttp

    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=5).read())
    ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        page = Page(ws)
        await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)
        yield page


@contextlib.contextmanager
def mlflow_ui(tracking_uri: str, env: dict[str, str] | None = None, timeout_s: float = 180) -> Iterator[str]:
    """``clisc ui``'s server (:func:`clisc.tracking.ui.ui_command`) on a free loopback port; yields its
    ``http://127.0.0.1:port`` once ``/health`` answers. ``env``: the server's environment (default
    :func:`clisc.tracking.ui.ui_environment`)."""
    from clisc.tracking.ui import ui_command, ui_environment

    port = free_port()
    server = subprocess.Popen(ui_command(tracking_uri, port=port), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env or ui_environment(), start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_url(f"{base}/health", timeout_s, server)
        yield base
    finally:
        stop(server)
