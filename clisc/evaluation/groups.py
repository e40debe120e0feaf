"""Tumour-size groups: quintiles of ground-truth tumour volume over the evaluated cases (paper, Table 1).

Cases are ranked by volume (ties broken by case id, i.e. the Series index, so the result does not
depend on row order) and the ranks are cut into five equal-frequency bins with ``pd.qcut``. With
n >= 5 cases group sizes differ by at most one (``pd.qcut``'s cut points on the ranks decide which
groups take the extra cases; 12 cases give 3, 2, 2, 2, 3). With 2 to 4 cases the same cut still assigns every case: the ranks sit at evenly spaced
quantile positions, so the smallest case is "tiny", the largest "huge", and the others fall in
between (3 cases: tiny, medium, huge; 4 cases: tiny, small, large, huge); some groups stay empty.
A single case is "medium".
"""
from __future__ import annotations

import pandas as pd

from clisc.errors import CliscError

SIZE_GROUPS = ("tiny", "small", "medium", "large", "huge")


def size_groups(volumes: pd.Series) -> pd.Series:
    """Size group of each case: a categorical Series (categories ``SIZE_GROUPS``, ordered) aligned
    with ``volumes`` (index = case id, values = ground-truth tumour volume in any unit)."""
    if not volumes.index.is_unique:
        raise CliscError("size groups need one volume per case; the case ids repeat")
    values = pd.to_numeric(volumes, errors="coerce")
    if values.isna().any():
        bad = list(values.index[values.isna()][:3])
        raise CliscError(f"size groups need a numeric volume for every case; missing or invalid for {bad}")
    dtype = pd.CategoricalDtype(SIZE_GROUPS, ordered=True)
    if len(values) == 0:
        return pd.Series([], index=volumes.index, dtype=dtype, name="size_group")
    if len(values) == 1:
        return pd.Series(["medium"], index=volumes.index, dtype=dtype, name="size_group")
    frame = pd.DataFrame({"volume": values.to_numpy(), "case": volumes.index.astype(str)}, index=volumes.index)
    ordered = frame.sort_values(["volume", "case"], kind="stable")
    ranks = pd.Series(range(1, len(ordered) + 1), index=ordered.index, dtype=float)
    groups = pd.qcut(ranks, q=len(SIZE_GROUPS), labels=list(SIZE_GROUPS))
    return pd.Series(groups.reindex(volumes.index), index=volumes.index, dtype=dtype, name="size_group")
