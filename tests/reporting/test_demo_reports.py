"""The demo's outputs explain themselves: a `make demo`-like run (synthetic data, random tiny models,
table2 rows) read back from MLflow by `clisc report`, and what its parent run shows in the UI."""
from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from clisc.pipeline.experiment import run_experiment
from clisc.reporting.cli import write_reports
from clisc.reporting.footnotes import smallest_wilcoxon_p
from clisc.tracking import latest_parent_run, load_experiment_results

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(synthetic_dataset, tmp_path_factory, fakes) -> tuple[str, Path]:
    """(tracking URI, reports folder) of table2's raw CAM, SAM (box) and CLISC rows, as `make demo` runs them."""
    root = tmp_path_factory.mktemp("demo")
    uri = fakes.fresh_store(tmp_path_factory)
    spec = root / "table2.yaml"
    spec.write_text("name: table2\ndescription: CLISC ablation (demo)\nmethods: [raw_cam, sam_box, clisc]\nseeds: [0]\n")
    run_experiment(spec, synthetic_dataset, profile="tiny", overrides={"foundation.weights": "random"},
                   cache_root=root / "cache", runs_root=root / "runs", tracking_uri=uri, echo=lambda _: None)
    written, missing = write_reports(["table2"], root / "reports", uri, warn=lambda _: None)
    assert not missing and written
    return uri, root / "reports"


def md_rows(md: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0]]
    return {cells[0].strip(): dict(zip(header, (c.strip() for c in cells))) for cells in rows[1:]}


def test_demo_table_footnotes_say_what_the_numbers_are(demo) -> None:
    uri, reports = demo
    md = (reports / "table2.md").read_text()
    rows = md_rows(md)
    results = {r.method: r for r in load_experiment_results("table2", uri)}
    notes = [line[2:] for line in md.splitlines() if line.startswith("- [")]
    for method, label in (("raw_cam", "raw CAM"), ("sam_box", "SAM (box)"), ("clisc", "full CLISC")):
        per_case = results[method].per_case
        empty = int((per_case["empty"] == "pred").sum())
        dsc = rows[label]["DSC"]
        if empty:  # a degenerate row names how many predictions were empty, in its cell's footnote
            marker = dsc.rsplit(" ", 1)[-1]
            text = next(n for n in notes if n.startswith(marker))
            assert f"{'all' if empty == len(per_case) else empty} of {len(per_case)} test predictions empty" in text
            assert "373.13 mm, the empty-mask penalty" in text and rows[label]["HD95"].endswith(marker)
        else:
            assert "[" not in dsc
        p = rows[label]["p vs CLISC"]
        if p and method != "clisc":
            n = int(((per_case.set_index("case_id")["dsc"] - results["clisc"].per_case.set_index("case_id")["dsc"])
                     .abs() > 1e-9).sum())
            at_floor = n > 0 and abs(float(p.split()[0]) - smallest_wilcoxon_p(n)) < 1e-3 * smallest_wilcoxon_p(n)
            assert (" [" in p) is at_floor, (label, p, n)
    # synthetic data and random weights: said once each, not on every row
    assert md.count("synthetic data — not comparable") == 1 and md.count("random weights — not comparable") == 1
    assert all("not comparable" not in row["note"] for row in rows.values())
    csv = pd.read_csv(reports / "table2.csv", keep_default_na=False)
    assert not csv["DSC"].str.contains(r"\[").any()  # the data file keeps plain numbers


def test_demo_parent_run_shows_the_table_and_its_figures(demo) -> None:
    uri, _ = demo
    client = mlflow.MlflowClient(uri)
    parent = latest_parent_run("table2", uri)
    note = parent.data.tags["mlflow.note.content"].replace("\u00a0", " ").replace("\u2011", "-")
    assert note.startswith("| method | label-free | DSC | DSC 95% CI | HD95 | paper DSC |")
    assert "**table2**: CLISC ablation (demo)." in note
    assert "| full CLISC | yes |" in note
    assert "Not run: " in note
    files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"table2.md", "table2_dsc.png", "stage_times.png"} <= files
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.info.run_name for c in children} == {"raw CAM · seed 0", "SAM (box) · seed 0", "CLISC · seed 0"}
    for child in children:
        assert "qualitative.png" in {f.path for f in client.list_artifacts(child.info.run_id)}
        compute_s = sum(v for k, v in child.data.metrics.items() if k.startswith("time_"))
        assert (child.info.end_time - child.info.start_time) == pytest.approx(1000 * compute_s, abs=2)
