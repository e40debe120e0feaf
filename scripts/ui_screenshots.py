"""Screenshots of the MLflow UI as a new user meets it: `clisc ui`'s server on a loopback port, a headless
Chromium with a fresh profile (nothing stored, so MLflow's own defaults apply), clicked through as a user
would, one PNG per page.

    python scripts/ui_screenshots.py [--tracking-uri sqlite:///mlflow.db] [--experiment table1] [--out docs/img/ui]

After `make demo` (or a `--profile tiny` run of `clisc experiment table1`). Pages, from the home page:
``1_experiments.png`` (Home -> Experiments: the list), ``2_runs_table.png`` (a click on the experiment: it
must open on its runs table, children named by table title, with DSC, HD95 and label-free columns),
``3_parent_run.png`` (the parent run: its description is the compact table), ``4_parent_artifacts.png``
(its Artifacts tab on the DSC bar chart), ``5_child_curves.png`` (a child's training curves). Exits 2
without Chromium (``apt-get install -y chromium``); aiohttp (an MLflow dependency) drives it.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from clisc.tracking.browser import find_browser, fresh_chromium, mlflow_ui, open_page
from clisc.tracking.store import ROLE_TAG, client_for, default_tracking_uri

WIDTH, HEIGHT = 1280, 860  # small PNGs: one screen each


async def click_through(debug_port: int, base: str, experiment: str, parent_id: str, child: tuple[str, str],
                        out: Path) -> list[Path]:
    """Home -> Experiments -> the experiment -> its parent run -> Artifacts, then a child's curves."""
    experiment_id, child_id = child
    shots = []

    async with open_page(debug_port, WIDTH, HEIGHT) as page:
        async def shot(name: str) -> None:
            path = out / name
            await page.shot(path)
            small(path)
            shots.append(path)
            print(f"wrote {path}  <- {await page.location()}")

        await page.goto(f"{base}/")
        await page.click_text("Home")
        await page.click_text("Experiments")
        await shot("1_experiments.png")
        await page.click_text(experiment)
        location = await page.location()
        if "/runs" not in location:
            raise SystemExit(f"the experiment opened on {location}, not on its runs table")
        await page.evaluate("document.querySelector('[aria-label=\"Expand row\"], [data-testid=\"expand-row\"]')?.click()")
        await asyncio.sleep(2)
        await shot("2_runs_table.png")
        await page.click_link_to(f"/runs/{parent_id}")
        try:  # MLflow folds a long description to its first lines
            await page.click_text("Show more")
        except LookupError:
            pass
        await shot("3_parent_run.png")
        await page.goto(f"{base}/#/experiments/{experiment_id}/runs/{parent_id}/artifacts/{experiment}_dsc.png")
        await shot("4_parent_artifacts.png")
        await page.goto(f"{base}/#/experiments/{experiment_id}/runs/{child_id}/model-metrics")
        await shot("5_child_curves.png")
    return shots


def small(path: Path, colours: int = 96) -> None:
    """Rewrite a screenshot as a palette PNG (a third of the bytes; UI colours are few)."""
    from PIL import Image

    with Image.open(path) as image:
        quantized = image.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
    quantized.save(path, optimize=True)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--experiment", default="table1", help="experiment to click through (default: table1)")
    parser.add_argument("--out", type=Path, default=Path("docs/img/ui"), help="PNG folder (default: docs/img/ui)")
    args = parser.parse_args()
    browser = find_browser()
    if browser is None:
        print("no Chromium found (apt-get install -y chromium): no screenshots taken", file=sys.stderr)
        return 2
    uri = args.tracking_uri or default_tracking_uri()
    experiment, parent, child = pick_runs(uri, args.experiment)
    args.out.mkdir(parents=True, exist_ok=True)
    with mlflow_ui(uri) as base, fresh_chromium(browser) as debug_port:
        asyncio.run(click_through(debug_port, base, experiment, parent, child, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
