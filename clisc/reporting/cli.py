"""``clisc report`` (tables and figures from the MLflow runs) and ``clisc ui`` (the MLflow UI)."""
from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from clisc.errors import CliscError
from clisc.pipeline.result import MethodResult
from clisc.reporting.load import QUALITATIVE_ARTIFACT, load_results
from clisc.tracking.store import default_tracking_uri
from clisc.tracking.ui import serve_ui, ui_lines

EXPERIMENTS = ("table1", "table2", "sweep_alpha", "sweep_beta", "cpu_study", "table1_cpu", "foundations")


def _stderr(message: str) -> None:
    print(f"clisc: {message}", file=sys.stderr)


def write_reports(experiments: Sequence[str], out: Path, tracking_uri: str,
                  warn: Callable[[str], None] = _stderr) -> tuple[list[Path], list[str]]:
    """Write every table/figure the runs in ``tracking_uri`` allow; returns (files written, missing experiments).
    Each table's warnings (e.g. a method the paper calls label-free whose runs used ground truth) go to
    ``warn`` (default: stderr) as well as into the table's notes.

    ``table1`` -> table1.{md,csv,tex}, table1_size_groups.{md,csv,tex}, qualitative.{png,pdf} (when the
    runs logged qualitative.npz); ``table2`` -> table2.*; ``sweep_alpha``/``sweep_beta`` -> <name>.{png,pdf};
    ``cpu_study``, ``table1_cpu`` -> <name>.{md,csv,tex} (:func:`clisc.reporting.study.study_table`);
    ``foundations`` -> foundations.{md,csv,tex} (:func:`clisc.reporting.foundations.foundations_table`).
    """
    written: list[Path] = []
    missing: list[str] = []
    with tempfile.TemporaryDirectory(prefix="clisc-report-") as downloads:
        for experiment in experiments:
            results = load_results(experiment, tracking_uri, Path(downloads) / experiment)
            if not results:
                missing.append(experiment)
                continue
            written += report_experiment(experiment, results, out, warn)
    return written, missing


def report_experiment(experiment: str, results: Sequence[MethodResult], out: Path,
                      warn: Callable[[str], None] = _stderr) -> list[Path]:
    """The tables/figures of one of ``EXPERIMENTS`` from its results (see :func:`write_reports`)."""
    from clisc.reporting.figures import qualitative_figure, sweep_figure
    from clisc.reporting.study import STUDY_REFERENCES, study_table
    from clisc.reporting.tables import size_table, table1, table2, write_table

    if experiment in ("table1", "table2"):
        table = (table1 if experiment == "table1" else table2)(results)
        for warning in table.attrs["warnings"]:
            warn(f"{experiment}: {warning}")
        written = write_table(table, out / experiment)
        if experiment == "table1":
            written += write_table(size_table(results), out / "table1_size_groups")
            if any(QUALITATIVE_ARTIFACT in r.artifacts for r in results):
                written += qualitative_figure(results, out / "qualitative")
        return written
    if experiment == "foundations":
        from clisc.reporting.foundations import foundations_table

        return write_table(foundations_table(results), out / experiment)
    if experiment in STUDY_REFERENCES:
        return write_table(study_table(results, STUDY_REFERENCES[experiment]), out / experiment)
    return sweep_figure(results, experiment.removeprefix("sweep_"), out / experiment)


def _report(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or default_tracking_uri()
    written, missing = write_reports(args.experiments, Path(args.out), uri)
    for path in written:
        print(f"wrote {path}")
    for experiment in missing:
        print(f"missing: experiment '{experiment}' has no runs in {uri}")
    if not written:
        raise CliscError(f"{uri}: none of the experiments {', '.join(args.experiments)} has runs to report")
    return 0


def _ui(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or default_tracking_uri()
    print("\n".join(ui_lines(uri, args.host, args.port)), flush=True)
    return serve_ui(uri, args.host, args.port, open_browser=False if args.no_browser else None)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``clisc report`` and ``clisc ui``."""
    report = subparsers.add_parser("report", help="tables and figures of the paper from the MLflow runs")
    report.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS),
                        help="experiments to report (default: all)")
    report.add_argument("--out", default="reports", help="output folder (default: reports/)")
    report.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    report.set_defaults(func=_report)

    ui = subparsers.add_parser("ui", help="browse the runs in the MLflow UI")
    ui.add_argument("--port", type=int, default=5000, help="port to serve on (default: 5000)")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    ui.add_argument("--no-browser", action="store_true",
                    help="do not open a browser (default: open the experiment list when a display is there)")
    ui.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or ./mlflow.db)")
    ui.set_defaults(func=_ui)
