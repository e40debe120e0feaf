"""The result at a glance: a compact Table 1/2 in Markdown for the parent run's description
(``mlflow.note.content``, the first thing its page shows) and a bar chart of every row's DSC with
its 95% CI beside the paper's (``<experiment>_dsc.png``, in the parent's Artifacts)."""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from clisc.pipeline.result import MethodResult

COMPACT_COLUMNS = ["method", "label-free", "DSC", "DSC 95% CI", "HD95", "paper DSC"]
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def layout_of(experiment: str, results: Sequence[MethodResult]) -> str:
    """``table2`` for the ablation or an experiment of Table 2's methods only, else ``table1``."""
    from clisc.reporting.tables import paper_rows

    if experiment in ("table1", "table2"):
        return experiment
    return "table2" if {r.method for r in results} <= {row["method"] for row in paper_rows("table2")} else "table1"


def ran_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that ran (``DSC`` not ``not run``), attrs kept with ``row_methods``/``cell_notes`` re-indexed."""
    from clisc.reporting.tables import NOT_RUN

    keep = [i for i in range(len(table)) if table.at[i, "DSC"] != NOT_RUN]
    ran = table.iloc[keep].reset_index(drop=True)
    ran.attrs = dict(table.attrs)
    if "row_methods" in table.attrs:
        ran.attrs["row_methods"] = [table.attrs["row_methods"][i] for i in keep]
    if "cell_notes" in table.attrs:
        ran.attrs["cell_notes"] = [[keep.index(r), c, t] for r, c, t in table.attrs["cell_notes"] if r in keep]
    return ran


def compact_markdown(table: pd.DataFrame, title: str, description: str | None = None) -> str:
    """The rows that ran in :data:`COMPACT_COLUMNS`, then ``title``, ``description`` and what the columns
    are, the footnotes, the table's WARNING lines and the rows that did not run."""
    from clisc.reporting.tables import NOT_RUN, display_table

    ran = ran_rows(table)
    ran.attrs["cell_notes"] = [n for n in ran.attrs.get("cell_notes", []) if n[1] in COMPACT_COLUMNS]
    shown = display_table(ran)
    not_run = [m for m, dsc in zip(table["method"], table["DSC"]) if dsc == NOT_RUN]
    cases = sorted({c for c in shown.get("cases", pd.Series(dtype=str)) if c})
    columns = [c for c in COMPACT_COLUMNS if c in shown.columns]
    if "note" in shown.columns:  # a row's note markers go beside its name: one column fewer
        shown["method"] = [f"{m} {n}".strip() for m, n in zip(shown["method"], shown["note"])]
    # the table first: MLflow shows a run's description folded to its first lines; headers and numbers
    # kept on one line each (no-break spaces, a no-break hyphen) in its narrow description pane
    lines = ["| " + " | ".join(_unbroken(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(v).replace("|", r"\|") if c == "method" else _unbroken(str(v))
                                for c, v in zip(columns, row)) + " |"
              for row in shown[columns].itertuples(index=False)]
    lines += ["", f"**{title}**" + (f": {description}" if description else "") + ". "
              f"DSC (%) and HD95 (mm): mean ± std over {' / '.join(cases) or '?'} test cases; "
              "95% CI: bootstrap of the mean. Full table, p-values and notes: the Artifacts tab."]
    lines += [f"- {n}" for n in shown.attrs.get("notes", []) if n.startswith("[")]
    lines += [""] + [f"> {n}" for n in shown.attrs.get("notes", []) if n.startswith("WARNING")]
    if not_run:
        lines += ["", f"Not run: {', '.join(not_run)}."]
    return "\n".join(lines) + "\n"


def _unbroken(text: str) -> str:
    return text.replace(" ", "\u00a0").replace("-", "\u2011")


def _number(cell: str) -> float:
    match = _NUMBER.match(str(cell).strip())
    return float(match.group()) if match else math.nan


def dsc_bars_figure(table: pd.DataFrame, title: str, out_stem: Path) -> list[Path]:
    """Horizontal bars of each row's DSC that ran, its 95% CI as error bars, the paper's mean as a
    black tick; ``out_stem.png`` and ``.pdf``."""
    from clisc.reporting.figures import save_figure  # sets the Agg backend first
    import matplotlib.pyplot as plt

    ran = ran_rows(table)
    if ran.empty:
        return []
    means = [_number(c) for c in ran["DSC"]]
    ci = [[_number(x) for x in str(c).strip("[]").split(",")] if str(c).startswith("[") else [m, m]
          for c, m in zip(ran["DSC 95% CI"], means)]
    low = [max(m - lo, 0) for m, (lo, _) in zip(means, ci)]
    high = [max(hi - m, 0) for m, (_, hi) in zip(means, ci)]
    paper = [_number(c) for c in ran["paper DSC"]]
    labels = [f"{m}{'' if lf != 'no' else ' (uses labels)'}" for m, lf in zip(ran["method"], ran["label-free"])]
    y = list(range(len(ran)))[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.38 * len(ran) + 1.4))
    ax.barh(y, means, xerr=[low, high], color="tab:blue", alpha=0.8, capsize=3, label="ours (95% CI)")
    ax.scatter(paper, y, marker="|", s=220, color="black", label="paper", zorder=3)
    for yi, m, (_, hi) in zip(y, means, ci):
        ax.text(min(max(m, hi), 92), yi, f" {m:.1f}", va="center", fontsize=7)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"DSC (%), {title}")
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1, 1), ncol=2, frameon=False)
    warnings = [n.removeprefix("WARNING: ") for n in table.attrs.get("notes", []) if n.startswith("WARNING")]
    if warnings:
        fig.text(0.5, 0.005, "\n".join(warnings), ha="center", va="bottom", color="red", fontsize=6)
    fig.tight_layout(rect=(0, 0.035 * len(warnings), 1, 1))
    return save_figure(fig, out_stem)
