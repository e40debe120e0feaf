"""Paired Wilcoxon test and percentile bootstrap of clisc.evaluation.stats."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from clisc.errors import CliscError
from clisc.evaluation.stats import bootstrap_ci, paired_wilcoxon

CASES = [f"case{i}" for i in range(10)]


def test_wilcoxon_matches_scipy_and_aligns_by_case_id() -> None:
    rng = np.random.default_rng(0)
    a = pd.Series(rng.normal(80, 5, size=10), index=CASES)
    b = pd.Series(a.to_numpy() - rng.normal(3, 2, size=10), index=CASES)
    expected = stats.wilcoxon(a.to_numpy() - b.to_numpy(), zero_method="pratt")
    assert paired_wilcoxon(a, b) == pytest.approx((expected.statistic, expected.pvalue))
    assert paired_wilcoxon(a, b.iloc[::-1]) == pytest.approx((expected.statistic, expected.pvalue))


def test_wilcoxon_exact_p_for_a_clear_difference() -> None:
    a = pd.Series(np.arange(1.0, 9.0), index=CASES[:8])
    b = pd.Series(np.zeros(8), index=CASES[:8])
    statistic, p_value = paired_wilcoxon(a, b)
    assert statistic == 0.0
    assert p_value == pytest.approx(2 / 2**8)  # two-sided exact: only all-positive or all-negative


def test_wilcoxon_keeps_zero_differences_in_the_ranking() -> None:
    # 16 cases, 4 zero differences: beyond the exhaustive-permutation range, so the choice shows
    differences = np.array([0, 0, 0, 0, -1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], dtype=float)
    index = [f"c{i}" for i in range(differences.size)]
    a, b = pd.Series(differences + 50.0, index=index), pd.Series(np.full(differences.size, 50.0), index=index)
    pratt = stats.wilcoxon((a - b).to_numpy(), zero_method="pratt").pvalue
    wilcox = stats.wilcoxon((a - b).to_numpy(), zero_method="wilcox").pvalue
    assert pratt != pytest.approx(wilcox)
    assert paired_wilcoxon(a, b)[1] == pytest.approx(pratt)


@pytest.mark.parametrize("n", [1, 5, 60])
def test_wilcoxon_all_equal_scores_give_p_one(n: int) -> None:
    scores = pd.Series(np.linspace(50, 90, n), index=[f"c{i}" for i in range(n)])
    assert paired_wilcoxon(scores, scores.copy()) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (pd.Series([1.0, 2.0], index=["x", "y"]), pd.Series([1.0, 2.0], index=["x", "z"]), "different cases"),
        (pd.Series([1.0, 2.0], index=["x", "x"]), pd.Series([1.0, 2.0], index=["x", "y"]), "repeat"),
        (pd.Series([1.0, np.nan], index=["x", "y"]), pd.Series([1.0, 2.0], index=["x", "y"]), "non-finite"),
        (pd.Series([], dtype=float), pd.Series([], dtype=float), "at least one case"),
    ],
)
def test_wilcoxon_rejects_unpaired_input(a: pd.Series, b: pd.Series, message: str) -> None:
    with pytest.raises(CliscError, match=message):
        paired_wilcoxon(a, b)


def test_bootstrap_is_deterministic_per_seed_and_brackets_the_mean() -> None:
    values = np.random.default_rng(3).normal(70, 12, size=40)
    first = bootstrap_ci(values, seed=5)
    assert bootstrap_ci(pd.Series(values), seed=5) == first
    assert bootstrap_ci(values, seed=6) != first
    low, high = first
    assert low < values.mean() < high
    assert bootstrap_ci(values, confidence=0.5, seed=5)[1] - bootstrap_ci(values, confidence=0.5, seed=5)[0] < high - low


def test_bootstrap_agrees_with_scipy_percentile_bootstrap() -> None:
    values = np.random.default_rng(4).gamma(2.0, 5.0, size=30)
    ours = bootstrap_ci(values, n_resamples=20000, seed=1)
    ci = stats.bootstrap((values,), np.mean, n_resamples=20000, method="percentile", rng=2).confidence_interval
    sem = values.std(ddof=1) / np.sqrt(values.size)
    assert ours == pytest.approx((ci.low, ci.high), abs=0.1 * sem)


@pytest.mark.parametrize(
    ("values", "expected"),
    [([3.0], (3.0, 3.0)), ([2.0, 2.0, 2.0], (2.0, 2.0)), ([0.0, 1.0], (0.0, 1.0))],
)
def test_bootstrap_small_samples(values: list[float], expected: tuple[float, float]) -> None:
    # two values: resample means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    assert bootstrap_ci(values, n_resamples=4000) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        ([], {}, "at least one value"),
        ([1.0, np.inf], {}, "non-finite"),
        ([1.0, 2.0], {"confidence": 1.0}, "strictly between"),
        ([1.0, 2.0], {"n_resamples": 0}, "at least 1"),
    ],
)
def test_bootstrap_rejects_bad_input(values: list[float], kwargs: dict, message: str) -> None:
    with pytest.raises(CliscError, match=message):
        bootstrap_ci(values, **kwargs)
