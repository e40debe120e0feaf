"""The paper's Table 1, Table 2 and size-group table, rebuilt from MethodResults (read from MLflow).

Every number comes from the per-case tables of the runs, except the paper's published values, which
are data in ``paper_values.yaml``. Whether a row is label-free comes from its runs' own tags
(``label_free``, ``gt_switches``), never from the paper: a run that read ground truth outside test
scoring says "no", and a method the paper calls label-free that ran with ground truth gets a
warning. Cross-validation folds are pooled into one result per method x seed (all cases once).
Cells are display strings (``mean ± std``), so one DataFrame writes identically to Markdown, CSV and
LaTeX; the notes explaining them travel in ``df.attrs`` (``df.attrs["warnings"]``: the warnings).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from clisc.evaluation import SIZE_GROUPS, EvaluationSettings, bootstrap_ci, run_evaluation_settings, summarize
from clisc.pipeline.folds import folds_note, pool_folds
from clisc.pipeline.result import MethodResult
from clisc.pipeline.settings_file import TUNED_ON_LABELS_SWITCH
from clisc.reporting.significance import ALPHA, HIGHER_IS_BETTER, marked_cells, wilcoxon_p

PAPER_VALUES = Path(__file__).with_name("paper_values.yaml")
REFERENCE_METHOD = "clisc"
NOT_RUN = "not run"
RANDOM_WEIGHTS_NOTE = "random weights — not comparable to the paper"
SYNTHETIC_DATA_NOTE = "synthetic data — not comparable to the paper"
CI_CONFIDENCE = 0.95
CI_RESAMPLES = 10000


@cache
def paper_rows(table: str) -> tuple[dict[str, Any], ...]:
    """Rows of the paper's ``table1`` or ``table2`` in its order (method, label, label_free, dsc, hd95...)."""
    return tuple(yaml.safe_load(PAPER_VALUES.read_text())[table])


def size_groups() -> list[str]:
    """Tumour-size groups, smallest first."""
    return list(SIZE_GROUPS)


def by_method(results: Iterable[MethodResult]) -> dict[str, list[MethodResult]]:
    """Results grouped by method, seeds in ascending order; the folds of a cross-validated run are
    first pooled into one result (:func:`clisc.pipeline.folds.pool_folds`)."""
    grouped: dict[str, list[MethodResult]] = {}
    for result in pool_folds(results):
        grouped.setdefault(result.method, []).append(result)
    return {m: sorted(runs, key=lambda r: r.seed) for m, runs in grouped.items()}


def seed_mean_summary(runs: Sequence[MethodResult]) -> dict[str, float]:
    """``summarize`` of each seed's per-case table, averaged over seeds (mean of per-seed means/stds);
    each run's stds with its own ``evaluation.std_ddof``."""
    per_seed = pd.DataFrame([{k: float(v) for k, v in summarize(
        r.per_case, ddof=run_evaluation_settings(r.params).std_ddof).items()} for r in runs])
    return per_seed.mean(skipna=True).to_dict()


def convention_notes(grouped: dict[str, list[MethodResult]]) -> list[str]:
    """The scoring convention(s) of the rows (``evaluation.*`` settings of their runs): one note when all
    rows share one, else one per convention naming its rows (their numbers are then not comparable)."""
    rows: dict[EvaluationSettings, list[str]] = {}
    for method, runs in grouped.items():
        for convention in dict.fromkeys(run_evaluation_settings(r.params) for r in runs):
            rows.setdefault(convention, []).append(method_title(method))
    def name(c: EvaluationSettings) -> str:
        return f"evaluation.empty_prediction={c.empty_prediction}, evaluation.std_ddof={c.std_ddof}"
    if len(rows) == 1:
        (convention,) = rows
        return [f"Scoring: {convention.describe()} ({name(convention)}; docs/METRICS.md)."]
    return ["WARNING: the rows were scored under different conventions; their numbers are not comparable."] + [
        f"Scoring of {', '.join(methods)}: {c.describe()} ({name(c)})." for c, methods in rows.items()]


def case_means(runs: Sequence[MethodResult], column: str) -> pd.Series:
    """Per-case ``column`` averaged over seeds, indexed by case_id (NaN cases dropped)."""
    stacked = pd.concat([r.per_case[["case_id", column]] for r in runs])
    return stacked.groupby("case_id")[column].mean().dropna()


def comparability_note(runs: Sequence[MethodResult]) -> str:
    """The banner for runs with random foundation weights or synthetic data, else ''."""
    notes = []
    if any("=random" in r.tags.get("weights", "") for r in runs):
        notes.append(RANDOM_WEIGHTS_NOTE)
    if any(r.tags.get("synthetic_data", "").lower() == "true" for r in runs):
        notes.append(SYNTHETIC_DATA_NOTE)
    return "; ".join(notes)


def comparability_banners(grouped: dict[str, list[MethodResult]]) -> list[str]:
    """One table-level warning per comparability note any row has (each said once, however many rows
    and note combinations repeat it): ``every row`` or ``some rows``."""
    notes = [comparability_note(runs) for runs in grouped.values()]
    said = [n for n in (RANDOM_WEIGHTS_NOTE, SYNTHETIC_DATA_NOTE) if any(n in row for row in notes)]
    return [f"WARNING: {'every row' if all(n in row for row in notes) else 'some rows'} ran with {n}." for n in said]


def runs_label_free(runs: Sequence[MethodResult]) -> bool:
    """True when every run is tagged ``label_free=true`` (a run without the tag does not count as label-free)."""
    return bool(runs) and all(r.tags.get("label_free", "").lower() == "true" for r in runs)


def gt_switches(runs: Sequence[MethodResult]) -> list[str]:
    """The ground-truth uses (``gt_switches`` tags) of any of ``runs``, sorted."""
    return sorted({s for r in runs for s in r.tags.get("gt_switches", "none").split(",") if s and s != "none"})


def provenance_note(runs: Sequence[MethodResult]) -> str:
    """What a row's runs read besides test labels, and where their settings came from, else ''."""
    notes = []
    if not runs_label_free(runs):
        by_design = all(r.tags.get("label_free", "").lower() == "false" for r in runs)
        notes.append("ground truth used: " + (", ".join(gt_switches(runs))
                                              or ("by design (a reference row)" if by_design else "label_free tag missing")))
    studies = sorted({r.tags["tuned_study"] for r in runs if r.tags.get("tuned_study")})
    if studies:
        on_labels = any(r.tags.get("tuned_on_labels") == "true" for r in runs)
        notes.append(f"settings tuned {'on validation labels ' if on_labels else ''}in study {', '.join(studies)}")
    pooled = sorted({folds_note(r) for r in runs} - {""})
    return "; ".join(notes + pooled)


def mean_std_cell(mean: float, std: float | None = None) -> str:
    """``mean ± std`` with two decimals (``mean`` alone without a std, ``n/a`` without a mean)."""
    if mean is None or math.isnan(mean):
        return "n/a"
    return f"{mean:.2f}" if std is None or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def ci_cell(values: pd.Series) -> str:
    """``[lo, hi]``: the bootstrap interval of the mean of per-case ``values`` (``n/a`` under two cases)."""
    if len(values) < 2:
        return "n/a"
    lo, hi = bootstrap_ci(values.to_numpy(), confidence=CI_CONFIDENCE, n_resamples=CI_RESAMPLES, seed=0)
    return f"[{lo:.2f}, {hi:.2f}]"


def _delta(ours: float, paper: float | None) -> str:
    if paper is None or math.isnan(ours):
        return ""
    return f"{ours - paper:+.2f}"


def _row_specs(table: str, grouped: dict[str, list[MethodResult]]) -> list[dict[str, Any]]:
    """The paper's rows in order, then methods that ran but are not in the paper's table; ``label_free``
    is the paper's claim (None for rows not in the paper), what the runs did is read from their tags."""
    specs = [dict(row) for row in paper_rows(table)]
    known = {row["method"] for row in specs}
    for method in grouped:
        if method not in known:
            specs.append({"method": method, "label": method_title(method), "label_free": None})
    return specs


def method_title(method: str) -> str:
    """The registered method's title (its row name), or the name itself for an unregistered one."""
    from clisc.pipeline.methods import all_methods

    registered = all_methods().get(method)
    return registered.title if registered else method


def case_groups(runs: Sequence[MethodResult]) -> pd.Series:
    """The size group of each case of ``runs`` (index = case id; the first run naming a case)."""
    stacked = pd.concat([r.per_case[["case_id", "size_group"]] for r in runs]).drop_duplicates("case_id")
    return stacked.set_index("case_id")["size_group"].astype(str)


def _significance(grouped: dict[str, list[MethodResult]]) -> tuple[dict[str, dict[str, float]], set[str]]:
    """p of CLISC vs each other method per metric (``{method: {"dsc": p, "hd95": p}}``), and the cells
    of CLISC (``clisc.reporting.significance.CELLS``) significantly better than every other method
    whose runs are label-free (by their tags)."""
    if REFERENCE_METHOD not in grouped:
        return {}, set()
    runs_of = {m: {metric: case_means(runs, metric) for metric in HIGHER_IS_BETTER} for m, runs in grouped.items()}
    reference = runs_of.pop(REFERENCE_METHOD)
    p = {m: {metric: wilcoxon_p(reference[metric], values[metric]) for metric in HIGHER_IS_BETTER}
         for m, values in runs_of.items()}
    rivals = {m: values for m, values in runs_of.items() if runs_label_free(grouped[m])}
    return p, marked_cells(reference, case_groups(grouped[REFERENCE_METHOD]), rivals)


def _p_cell(p: float) -> str:
    return "" if math.isnan(p) else f"{p:.3g}"


def label_free_warnings(grouped: dict[str, list[MethodResult]], specs: list[dict[str, Any]]) -> list[str]:
    """A warning for each method the paper calls label-free whose runs read ground truth."""
    warnings = []
    for spec in specs:
        runs = grouped.get(spec["method"])
        if runs and spec["label_free"] and not runs_label_free(runs):
            switches = gt_switches(runs)
            tuned = (f" (settings tuned on validation labels in study "
                     f"{', '.join(sorted({r.tags.get('tuned_study', '?') for r in runs}))})"
                     if TUNED_ON_LABELS_SWITCH in switches else "")
            warnings.append(f"WARNING: {spec['label']} is label-free in the paper, but these runs used ground "
                            f"truth ({', '.join(switches) or 'label_free tag missing'}){tuned}: label-free = no.")
    return warnings


def _notes(grouped: dict[str, list[MethodResult]], warnings: Sequence[str] = ()) -> list[str]:
    notes = [
        "DSC (%) and HD95 (mm): mean ± std over test cases; with several seeds, the mean of the per-seed "
        "means and of the per-seed stds (column seeds).",
        f"95% CI: percentile bootstrap ({CI_RESAMPLES} resamples, seed 0) of the mean of per-case values "
        "(each case averaged over seeds).",
        "p, p HD95: two-sided paired Wilcoxon signed-rank test of per-case DSC (HD95), CLISC vs the row's "
        f"method, on the cases both ran. * on a CLISC cell: against every other method whose runs are "
        f"label-free, p < {ALPHA} and CLISC's mean over the paired cases better (higher DSC, lower HD95); "
        "size groups (size table): the same test on the cases of the group.",
        "label-free: from the runs' tags (label_free, gt_switches); 'no' when any run read ground truth "
        "outside test scoring (the note names how); empty for rows that did not run.",
        "Δ: ours minus the paper's published mean.",
    ] + convention_notes(grouped)
    if any(folds_note(r) for runs in grouped.values() for r in runs):
        notes.append("Cross-validation: the per-case rows of all folds are pooled (cases = every case once; "
                     "p pairs cases by id).")
    return comparability_banners(grouped) + list(warnings) + notes


def row_note(runs: Sequence[MethodResult]) -> str:
    """A row's note: its comparability banner and provenance (:func:`provenance_note`), else ''."""
    return "; ".join(n for n in (comparability_note(runs), provenance_note(runs)) if n)


def comparison_table(results: Iterable[MethodResult], table: str) -> pd.DataFrame:
    """Rows of the paper's ``table`` (``table1``/``table2``): ours beside the paper's, CI, p, notes."""
    grouped = by_method(results)
    specs = _row_specs(table, grouped)
    p_values, marked = _significance(grouped)
    warnings = label_free_warnings(grouped, specs)
    rows = []
    for spec in specs:
        method = spec["method"]
        paper_dsc, paper_hd = spec.get("dsc"), spec.get("hd95")
        runs = grouped.get(method)
        row = {
            "method": spec["label"],
            "label-free": ("yes" if runs_label_free(runs) else "no") if runs else "",
            "paper DSC": mean_std_cell(*paper_dsc) if paper_dsc else "",
            "paper HD95": mean_std_cell(*paper_hd) if paper_hd else "",
        }
        if not runs:
            row.update({"seeds": "", "cases": "", "DSC": NOT_RUN, "DSC 95% CI": "", "Δ DSC": "",
                        "HD95": NOT_RUN, "HD95 95% CI": "", "Δ HD95": "", "p vs CLISC": "", "p HD95 vs CLISC": "",
                        "note": NOT_RUN})
            rows.append(row)
            continue
        summary = seed_mean_summary(runs)
        mark = (lambda cell: "*" if method == REFERENCE_METHOD and cell in marked else "")  # noqa: E731
        p = p_values.get(method, {})
        row.update({
            "seeds": str(len(runs)),
            "cases": str(int(summary["n_cases"])),
            "DSC": mean_std_cell(summary["dsc_mean"], summary["dsc_std"]) + mark("dsc"),
            "DSC 95% CI": ci_cell(case_means(runs, "dsc")),
            "Δ DSC": _delta(summary["dsc_mean"], paper_dsc[0] if paper_dsc else None),
            "HD95": mean_std_cell(summary["hd95_mean"], summary["hd95_std"]) + mark("hd95"),
            "HD95 95% CI": ci_cell(case_means(runs, "hd95")),
            "Δ HD95": _delta(summary["hd95_mean"], paper_hd[0] if paper_hd else None),
            "p vs CLISC": _p_cell(p.get("dsc", math.nan)),
            "p HD95 vs CLISC": _p_cell(p.get("hd95", math.nan)),
            "note": row_note(runs),
        })
        rows.append(row)
    columns = ["method", "label-free", "seeds", "cases", "DSC", "DSC 95% CI", "paper DSC", "Δ DSC",
               "HD95", "HD95 95% CI", "paper HD95", "Δ HD95", "p vs CLISC", "p HD95 vs CLISC", "note"]
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["notes"] = _notes(grouped, warnings)
    df.attrs["warnings"] = warnings
    df.attrs["row_methods"] = [spec["method"] for spec in specs]
    df.attrs["cell_notes"] = _cell_notes(df, grouped)
    return df


def _cell_notes(df: pd.DataFrame, grouped: dict[str, list[MethodResult]]) -> list[list]:
    """Empty predictions and floor p-values, as cell footnotes (:mod:`clisc.reporting.footnotes`)."""
    from clisc.reporting.footnotes import cell_notes

    return cell_notes(df, grouped, REFERENCE_METHOD)


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as printed: footnote markers and footnotes (:func:`clisc.reporting.footnotes.display_table`)."""
    from clisc.reporting.footnotes import display_table as with_footnotes

    return with_footnotes(df, (RANDOM_WEIGHTS_NOTE, SYNTHETIC_DATA_NOTE))


def table1(results: Iterable[MethodResult]) -> pd.DataFrame:
    """The paper's Table 1 (methods) with our values beside the published ones."""
    return comparison_table(results, "table1")


def table2(results: Iterable[MethodResult]) -> pd.DataFrame:
    """The paper's Table 2 (ablation) with our values beside the published ones."""
    return comparison_table(results, "table2")


def size_table(results: Iterable[MethodResult], table: str = "table1") -> pd.DataFrame:
    """DSC (ours, paper) and HD95 (ours) per tumour-size group, rows in the paper's order."""
    grouped = by_method(results)
    groups = size_groups()
    specs = _row_specs(table, grouped)
    warnings = label_free_warnings(grouped, specs)
    marked = _significance(grouped)[1]
    rows = []
    for spec in specs:
        runs = grouped.get(spec["method"])
        paper_groups = spec.get("groups", {})
        row: dict[str, str] = {"method": spec["label"]}
        summary = seed_mean_summary(runs) if runs else {}

        def cell(metric: str, group: str) -> str:
            if not runs:
                return NOT_RUN
            star = "*" if spec["method"] == REFERENCE_METHOD and f"{metric}_{group}" in marked else ""
            return mean_std_cell(summary.get(f"{metric}_{group}", math.nan)) + star

        for group in groups:
            row[f"DSC {group}"] = cell("dsc", group)
            row[f"paper DSC {group}"] = mean_std_cell(paper_groups[group]) if group in paper_groups else ""
        for group in groups:
            row[f"HD95 {group}"] = cell("hd95", group)
        row["note"] = row_note(runs) if runs else NOT_RUN
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["notes"] = [line for line in _notes(grouped, warnings) if line.startswith("WARNING")] + [
        "Mean per size group (quintiles of ground-truth tumour volume); several seeds: mean of per-seed means.",
        f"* on a CLISC cell: against every other method whose runs are label-free, the two-sided paired Wilcoxon "
        f"signed-rank test of the group's per-case DSC (HD95) gives p < {ALPHA} and CLISC's mean over the paired "
        "cases is better (higher DSC, lower HD95).",
    ] + convention_notes(grouped)
    df.attrs["warnings"] = warnings
    df.attrs["row_methods"] = [spec["method"] for spec in specs]
    df.attrs["group_n"] = _group_counts(grouped, groups)
    return df


def _group_counts(grouped: dict[str, list[MethodResult]], groups: Sequence[str]) -> dict[str, int]:
    """Test cases per size group (the most any method scored: methods share the test split)."""
    counts = {group: 0 for group in groups}
    for runs in grouped.values():
        cases = pd.concat([r.per_case[["case_id", "size_group"]] for r in runs]).drop_duplicates("case_id")
        for group in groups:
            counts[group] = max(counts[group], int((cases["size_group"] == group).sum()))
    return counts


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


_LATEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "—": "---"}  # compile with plain pdflatex too


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def markdown_table(df: pd.DataFrame) -> str:
    """GitHub Markdown pipe table of ``df`` (cells as strings, ``|`` escaped), then its notes."""
    def cells(values: Iterable[Any]) -> str:
        return "| " + " | ".join(str(v).replace("|", r"\|") for v in values) + " |"

    df = display_table(df)

    lines = [cells(df.columns), "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += [cells(row) for row in df.itertuples(index=False)]
    notes = df.attrs.get("notes", [])
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


def write_table(df: pd.DataFrame, stem: Path) -> list[Path]:
    """Write ``stem.md`` (own pipe-table writer), ``stem.csv`` and ``stem.tex`` (pandas ``to_latex``,
    which needs jinja2; ±, Δ and — become LaTeX commands)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, csv, tex = (stem.with_name(stem.name + ext) for ext in (".md", ".csv", ".tex"))
    md.write_text(markdown_table(df), encoding="utf-8")
    df.to_csv(csv, index=False)
    shown = display_table(df)
    caption = " ".join(shown.attrs.get("notes", [])) or None
    latex = shown.to_latex(index=False, escape=True, caption=_latex_escape(caption) if caption else None)
    for char, command in _LATEX_UNICODE.items():
        latex = latex.replace(char, command)
    tex.write_text(latex, encoding="utf-8")
    return [md, csv, tex]
