"""The MLflow UI as a new user meets it: a fresh headless Chromium profile on `clisc ui`'s server clicks
Home -> Experiments -> table1 and must land on the runs table (model-training view), not MLflow 3's
GenAI overview. Skipped without Chromium (apt-get install -y chromium) or aiohttp; run with
`make test-integration`."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clisc.tracking import ExperimentRecorder
from clisc.tracking.browser import find_browser, fresh_chromium, mlflow_ui, open_page
from clisc.tracking.mlflow_app import app_registered
from clisc.tracking.ui import ui_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def app_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's environment, with clisc's ``mlflow.app`` entry point findable even where this
    checkout's package metadata predates it (a venv not reinstalled since pyproject.toml declared it)."""
    env = ui_environment()
    if not app_registered():
        dist = tmp_path / "ep" / "clisc_mlflow_app-0.dist-info"
        dist.mkdir(parents=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clisc-mlflow-app\nVersion: 0\n")
        (dist / "entry_points.txt").write_text("[mlflow.app]\nclisc = clisc.tracking.mlflow_app:create_app\n")
        monkeypatch.syspath_prepend(str(dist.parent))
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = ":".join(p for p in (str(dist.parent), root, env.get("PYTHONPATH", "")) if p)
    return env


def test_fresh_browser_home_experiments_table1_lands_on_runs_table(tracking_uri: str, fakes, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium on PATH (apt-get install -y chromium)")
    pytest.importorskip("aiohttp", reason="aiohttp drives Chromium's DevTools protocol")
    with ExperimentRecorder("table1", {"methods": ["clisc"], "description": "browser check"},
                            tracking_uri=tracking_uri) as rec:
        rec.log_result(fakes.fake_result("clisc", [50, 60]))
    env = app_on_path(tmp_path, monkeypatch)

    async def click_through(debug_port: int, base: str) -> tuple[str, str]:
        async with open_page(debug_port) as page:
            await page.goto(f"{base}/")
            for text in ("Home", "Experiments", "table1"):
                await page.click_text(text)
            return await page.location(), await page.text()

    with mlflow_ui(tracking_uri, env=env) as base, fresh_chromium(browser) as debug_port:
        location, text = asyncio.run(click_through(debug_port, base))
    assert "/experiments/" in location and "/runs" in location, location
    assert "workflowType=genai" not in location and "/overview" not in location, location
    assert "Run Name" in text and "table1" in text, text[:500]
    # the result is in the table: its columns, and the parent expanded on its children (named by title)
    assert "dsc_mean" in text and "label_free" in text and "CLISC · seed 0" in text, text[:1500]
