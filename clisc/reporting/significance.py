"""The paper's asterisk: which of CLISC's cells are significantly *better* than every rival's.

The paper marks CLISC's DSC, HD95 and the DSC of each tumour-size group (Table 1) with "∗" for a
significant difference from the other (unsupervised) methods. Here a cell is marked when, against
every rival row, the paired two-sided Wilcoxon signed-rank test of the per-case values gives
p < ``ALPHA`` *and* CLISC's mean over the paired cases is better: higher for DSC, lower for HD95
(a significant difference in the rival's favour is no mark). A size group's cell is tested on the
cases of that group (CLISC's size groups; both rows scored the same test cases). A rival without
cases in common, or a metric with no paired difference, gives no mark.

Per-case series are indexed by case id (each case averaged over seeds), one per metric column.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from clisc.evaluation import SIZE_GROUPS, paired_wilcoxon

ALPHA = 0.05
HIGHER_IS_BETTER = {"dsc": True, "hd95": False}
CELLS = tuple(HIGHER_IS_BETTER) + tuple(f"{metric}_{group}" for metric in HIGHER_IS_BETTER for group in SIZE_GROUPS)


def wilcoxon_p(reference: pd.Series, other: pd.Series) -> float:
    """Two-sided paired Wilcoxon p of two per-case series over their common cases (1.0 if identical,
    NaN without a common case)."""
    common = reference.index.intersection(other.index)
    if len(common) == 0:
        return math.nan
    a, b = reference.loc[common], other.loc[common]
    if np.allclose(a.to_numpy(), b.to_numpy()):
        return 1.0
    return float(paired_wilcoxon(a, b)[1])


def significantly_better(reference: pd.Series, other: pd.Series, metric: str) -> bool:
    """``reference`` beats ``other`` on ``metric`` (``dsc`` / ``hd95``): p < ALPHA and a better mean
    over the common cases."""
    common = reference.index.intersection(other.index)
    if len(common) == 0:
        return False
    difference = float(reference.loc[common].mean() - other.loc[common].mean())
    better = difference > 0 if HIGHER_IS_BETTER[metric] else difference < 0
    return better and wilcoxon_p(reference.loc[common], other.loc[common]) < ALPHA


def marked_cells(reference: Mapping[str, pd.Series], groups: pd.Series,
                 rivals: Mapping[str, Mapping[str, pd.Series]]) -> set[str]:
    """The cells of ``CELLS`` (``dsc``, ``hd95``, ``dsc_<group>``, ``hd95_<group>``) where the
    reference beats every rival. ``reference`` / each rival: ``{metric: per-case series}``;
    ``groups``: the size group of each reference case (index = case id). No rival, no mark."""
    if not rivals:
        return set()
    marked = set()
    for cell in CELLS:
        metric, _, group = cell.partition("_")
        ours = reference[metric]
        if group:
            ours = ours[ours.index.isin(groups.index[groups.astype(str) == group])]
            if ours.empty:
                continue
        if all(significantly_better(ours, rival[metric], metric) for rival in rivals.values()):
            marked.add(cell)
    return marked
