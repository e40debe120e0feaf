"""Footnotes of the comparison tables: what a newcomer would otherwise take for a bug.

- a row whose predictions were empty says how many, on its DSC and HD95 cells (an empty prediction
  scores Dice 0 and HD95 ``EMPTY_HD95_MM``, the empty-mask penalty: a row of ``0.00 ± 0.00`` /
  ``373.13`` is every prediction empty, not a broken metric);
- a p-value that is the smallest the exact two-sided Wilcoxon signed-rank test can give with that
  many paired cases (``2 / 2**n``; n = 4: 0.125) says so: it cannot reach 0.05 however different;
- the per-row notes become numbered footnotes, one per distinct text, and the comparability notes
  every row repeats (random weights, synthetic data) are left to the table's one WARNING line.

Markers are ``[k]`` (plain text: Markdown, CSV and LaTeX alike); the footnotes go to ``df.attrs["notes"]``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from clisc.evaluation.metrics import EMPTY_HD95_MM
from clisc.pipeline.result import MethodResult

NOTE_SEPARATOR = "; "
P_COLUMNS = {"p vs CLISC": "dsc", "p HD95 vs CLISC": "hd95"}  # p cells and the per-case metric they test
EMPTY_GROUP = "—"


def empty_predictions(runs: Sequence[MethodResult]) -> tuple[int, int]:
    """(test predictions that were empty while the ground truth was not, all scored predictions) over ``runs``."""
    empty = sum(int((r.per_case["empty"] == "pred").sum()) for r in runs if "empty" in r.per_case.columns)
    return empty, sum(len(r.per_case) for r in runs)


def empty_note(empty: int, total: int, seeds: int) -> str:
    where = f"{total} test predictions" + (f" ({seeds} seeds)" if seeds > 1 else "")
    return (f"{'all' if empty == total else empty} of {where} empty: each scores DSC 0 and HD95 {EMPTY_HD95_MM:.2f} mm, "
            "the empty-mask penalty (the diagonal of the 240 x 240 x 155 mm BraTS box; docs/METRICS.md)")


def smallest_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p of the exact Wilcoxon signed-rank test with ``n`` non-zero paired differences."""
    return 2.0 / 2**n if n > 0 else 1.0


def paired_nonzero(reference: pd.Series, other: pd.Series) -> int:
    """Common cases (by index) whose values differ: the n of the signed-rank test (zeros are dropped)."""
    common = reference.index.intersection(other.index)
    return int(np.count_nonzero(~np.isclose(reference.loc[common].to_numpy(), other.loc[common].to_numpy())))


def floor_p_note(n: int) -> str:
    return (f"the smallest p the two-sided Wilcoxon signed-rank test can give with {n} paired cases "
            f"(2/2^{n} = {smallest_wilcoxon_p(n):.3g}): too few cases to reach p < 0.05")


class Footnotes:
    """Numbered footnotes, one number per distinct text."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"

    def lines(self) -> list[str]:
        return [f"[{i}] {text}" for i, text in enumerate(self.texts, 1)]


def _append(cell: str, marker: str) -> str:
    return f"{cell} {marker}" if cell else marker


def cell_notes(df: pd.DataFrame, grouped: Mapping[str, list[MethodResult]], reference: str) -> list[list]:
    """``[row, column, text]`` of each cell footnote of a comparison table whose ``attrs["row_methods"]``
    names each row's method: empty predictions on DSC and HD95, a floor p-value on the p columns."""
    from clisc.reporting.tables import case_means

    found: list[list] = []
    ref = {m: case_means(grouped[reference], m) for m in P_COLUMNS.values()} if reference in grouped else None
    for i, method in enumerate(df.attrs.get("row_methods", [])):
        runs = grouped.get(method)
        if not runs:
            continue
        empty, total = empty_predictions(runs)
        if empty:
            found += [[i, column, empty_note(empty, total, len(runs))] for column in ("DSC", "HD95")
                      if column in df.columns]
        if ref is None or method == reference:
            continue
        for column, metric in P_COLUMNS.items():
            p_value = re.match(r"[0-9.eE+-]+", str(df.at[i, column])) if column in df.columns else None
            if p_value:
                n = paired_nonzero(ref[metric], case_means(runs, metric))
                if n and math.isclose(float(p_value.group()), smallest_wilcoxon_p(n), rel_tol=1e-2):
                    found.append([i, column, floor_p_note(n)])
    return found


def display_table(df: pd.DataFrame, banner_notes: Sequence[str] = ()) -> pd.DataFrame:
    """The table as printed (Markdown, LaTeX, the parent run's description): ``attrs["cell_notes"]``
    and each row's note as ``[k]`` markers with the footnotes after the table's notes; note texts in
    ``banner_notes`` (said once by the table's WARNING line) are dropped from the rows. The data
    (``df``, its CSV) keeps the full texts."""
    out = df.copy()
    out.attrs = dict(df.attrs)
    notes = Footnotes()
    for i in range(len(out)):
        for row, column, text in df.attrs.get("cell_notes", []):
            if row == i:
                out.at[i, column] = _append(str(out.at[i, column]), notes.mark(text))
        if "note" in out.columns and df.attrs.get("row_methods"):
            note = str(out.at[i, "note"])
            parts = [p for p in note.split(NOTE_SEPARATOR) if p and p not in banner_notes]
            if note != "not run":
                out.at[i, "note"] = " ".join(notes.mark(p) for p in parts)
    out.attrs["notes"] = list(df.attrs.get("notes", [])) + notes.lines()
    out.attrs.pop("cell_notes", None)
    return _group_headers(out) if "group_n" in out.attrs else out


def _group_headers(df: pd.DataFrame) -> pd.DataFrame:
    """Size-group columns headed with their number of test cases; a group without any shows ``—``
    in our columns (not ``n/a`` on every row) and is named in a note."""
    counts: dict[str, int] = df.attrs["group_n"]
    empty = [g for g, n in counts.items() if n == 0]
    for group in empty:
        for column in (f"DSC {group}", f"HD95 {group}"):
            if column in df.columns:
                df[column] = df[column].where(df[column] == "not run", EMPTY_GROUP)
    df = df.rename(columns={f"{prefix} {g}": f"{prefix} {g} (n={n})" for g, n in counts.items()
                            for prefix in ("DSC", "HD95")})
    if empty:
        df.attrs["notes"] = df.attrs["notes"] + [
            f"{EMPTY_GROUP}: no test case in the size group{'s' if len(empty) > 1 else ''} {', '.join(empty)} (n=0)."]
    return df
