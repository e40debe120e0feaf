"""Paired significance test and bootstrap confidence interval for per-case scores.

``paired_wilcoxon`` is the two-sided Wilcoxon signed-rank test of ``scipy.stats.wilcoxon`` on the
per-case differences ``a - b`` (aligned by case id). Zero differences (two methods scoring a case
identically, e.g. both hitting the empty-mask HD95) use ``zero_method="pratt"``: they take part in
the ranking and their ranks are then dropped, the more conservative choice than discarding them
before ranking (scipy's default). ``method="auto"``: exact null distribution up to 50 cases without
ties or zeros, exhaustive permutations up to 13 cases with them, normal approximation otherwise. When
every difference is zero the test has nothing to rank and returns statistic 0, p = 1.

``bootstrap_ci`` is the percentile bootstrap of the mean: resample the cases with replacement,
take each resample's mean, report the (1-c)/2 and (1+c)/2 quantiles of those means.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from clisc.errors import CliscError

_BOOTSTRAP_CHUNK = 2_000_000  # resampled values drawn at once (bounds memory for large case counts)


def _aligned_differences(a: pd.Series, b: pd.Series) -> np.ndarray:
    """``a - b`` per case id; CliscError on repeated, missing or non-finite scores."""
    for name, series in (("a", a), ("b", b)):
        if not series.index.is_unique:
            raise CliscError(f"paired scores {name}: case ids repeat")
    only_a = a.index.difference(b.index)
    only_b = b.index.difference(a.index)
    if len(only_a) or len(only_b):
        raise CliscError(
            f"paired scores cover different cases: {len(only_a)} only in a {list(only_a[:3])}, "
            f"{len(only_b)} only in b {list(only_b[:3])}"
        )
    if len(a) == 0:
        raise CliscError("paired test needs at least one case")
    left = pd.to_numeric(a, errors="coerce").to_numpy(dtype=float)
    right = pd.to_numeric(b.reindex(a.index), errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(left).all() and np.isfinite(right).all()):
        raise CliscError("paired scores hold missing or non-finite values")
    return left - right


def paired_wilcoxon(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """Wilcoxon signed-rank test of paired per-case scores (index = case id): (statistic, p-value).

    Two-sided; zero differences handled with Pratt's method; all-equal scores give (0.0, 1.0).
    """
    differences = _aligned_differences(a, b)
    if not differences.any():
        return 0.0, 1.0
    result = stats.wilcoxon(differences, zero_method="pratt", alternative="two-sided", method="auto")
    return float(result.statistic), float(result.pvalue)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray | pd.Series,
    confidence: float = 0.95,
    n_resamples: int = 10000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval ``(low, high)`` of the mean of ``values``.

    Deterministic for a given ``seed``; resamples are drawn with ``numpy.random.default_rng(seed)``
    in blocks of whole resamples and averaged with vectorised numpy.
    """
    data = np.asarray(values, dtype=float).ravel()
    if data.size == 0:
        raise CliscError("bootstrap needs at least one value")
    if not np.isfinite(data).all():
        raise CliscError("bootstrap values hold missing or non-finite entries")
    if not 0.0 < confidence < 1.0:
        raise CliscError(f"confidence {confidence} must lie strictly between 0 and 1")
    if n_resamples < 1:
        raise CliscError(f"n_resamples {n_resamples} must be at least 1")
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_CHUNK // data.size)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        picks = rng.integers(0, data.size, size=(stop - start, data.size))
        means[start:stop] = data[picks].mean(axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)
