"""Size quintiles of clisc.evaluation.groups."""
from __future__ import annotations

import pandas as pd
import pytest

from clisc.errors import CliscError
from clisc.evaluation.groups import SIZE_GROUPS, size_groups


def _volumes(values: list[float]) -> pd.Series:
    return pd.Series(values, index=[f"case{i:02d}" for i in range(len(values))], dtype=float)


@pytest.mark.parametrize(
    ("n", "counts"),
    [(5, [1, 1, 1, 1, 1]), (10, [2, 2, 2, 2, 2]), (12, [3, 2, 2, 2, 3]), (75, [15, 15, 15, 15, 15])],
)
def test_quintiles_are_equal_frequency_and_follow_volume(n: int, counts: list[int]) -> None:
    volumes = _volumes([float((i * 37) % n) * 10.0 + 1.0 for i in range(n)])  # shuffled, distinct
    groups = size_groups(volumes)
    assert list(groups.cat.categories) == list(SIZE_GROUPS)
    assert groups.value_counts(sort=False).tolist() == counts
    codes = groups.cat.codes
    ordered = codes[volumes.sort_values().index]
    assert ordered.is_monotonic_increasing


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], []),
        ([42.0], ["medium"]),
        ([9.0, 1.0], ["huge", "tiny"]),
        ([5.0, 1.0, 3.0], ["huge", "tiny", "medium"]),
        ([4.0, 1.0, 3.0, 2.0], ["huge", "tiny", "large", "small"]),
    ],
)
def test_fewer_than_five_cases_still_get_groups(values: list[float], expected: list[str]) -> None:
    assert size_groups(_volumes(values)).astype(str).tolist() == expected


def test_ties_are_broken_by_case_id_whatever_the_row_order() -> None:
    volumes = pd.Series([7.0, 7.0, 7.0, 7.0, 7.0], index=["e", "c", "a", "d", "b"])
    expected = {"a": "tiny", "b": "small", "c": "medium", "d": "large", "e": "huge"}
    assert size_groups(volumes).astype(str).to_dict() == expected
    assert size_groups(volumes.iloc[::-1]).astype(str).to_dict() == expected


@pytest.mark.parametrize(
    ("volumes", "message"),
    [
        (pd.Series([1.0, 2.0], index=["a", "a"]), "case ids repeat"),
        (pd.Series([1.0, float("nan")], index=["a", "b"]), "numeric volume"),
        (pd.Series(["1", "big"], index=["a", "b"]), "numeric volume"),
    ],
)
def test_bad_volumes_raise(volumes: pd.Series, message: str) -> None:
    with pytest.raises(CliscError, match=message):
        size_groups(volumes)
