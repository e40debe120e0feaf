"""The asterisk: CLISC significantly *better* than every label-free rival, on DSC, HD95 and per size group."""
from __future__ import annotations

import pandas as pd
import pytest

from clisc.reporting.significance import marked_cells, significantly_better
from clisc.reporting.tables import size_table, table1

N = 50  # 10 cases per size group: the exact two-sided Wilcoxon p can fall below 0.05 within a group
RIVAL = [50.0 + 0.5 * i for i in range(N)]
# CLISC beats the rival on every case of the tiny..large groups (case i is in group i % 5) and loses on "huge"
CLISC = [r + (5.0 + 0.1 * i if i % 5 != 4 else -3.0 - 0.1 * i) for i, r in enumerate(RIVAL)]
GROUPS = ("tiny", "small", "medium", "large", "huge")


def cell(df: pd.DataFrame, label: str, column: str) -> str:
    return df.set_index("method").loc[label, column]


def test_a_significantly_better_rival_gives_no_star(fakes) -> None:
    """Two-sided p < 0.05 used to be enough, even when the rival was the better one."""
    better_rival = [d + 10.0 + 0.01 * i for i, d in enumerate(CLISC)]
    df = table1([fakes.fake_result("clisc", CLISC), fakes.fake_result("sim2real", better_rival)])
    assert float(cell(df, "Sim2Real", "p vs CLISC")) < 0.05 and float(cell(df, "Sim2Real", "p HD95 vs CLISC")) < 0.05
    assert not cell(df, "CLISC", "DSC").endswith("*") and not cell(df, "CLISC", "HD95").endswith("*")
    assert not any(cell(size_table([fakes.fake_result("clisc", CLISC), fakes.fake_result("sim2real", better_rival)]),
                        "CLISC", f"DSC {g}").endswith("*") for g in GROUPS)


def test_dsc_hd95_and_size_groups_are_marked_where_clisc_is_better(fakes) -> None:
    results = [fakes.fake_result("clisc", CLISC), fakes.fake_result("sim2real", RIVAL)]
    df = table1(results)
    assert cell(df, "CLISC", "DSC").endswith("*") and cell(df, "CLISC", "HD95").endswith("*")
    sizes = size_table(results)
    for group in GROUPS:
        expected = group != "huge"  # CLISC loses every "huge" case
        assert cell(sizes, "CLISC", f"DSC {group}").endswith("*") is expected, group
        assert cell(sizes, "CLISC", f"HD95 {group}").endswith("*") is expected, group
        assert not cell(sizes, "Sim2Real", f"DSC {group}").endswith("*")
    assert any(n.startswith("* on a CLISC cell") for n in sizes.attrs["notes"])


def test_hd95_is_marked_on_its_own_direction(fakes) -> None:
    """Equal DSC, CLISC's HD95 lower on every case: HD95 gets the star, DSC does not."""
    hd_clisc = [5.0 + 0.1 * i for i in range(N)]
    results = [fakes.fake_result("clisc", RIVAL, hd95=hd_clisc),
               fakes.fake_result("sim2real", RIVAL, hd95=[h + 4.0 + 0.01 * i for i, h in enumerate(hd_clisc)])]
    df = table1(results)
    assert cell(df, "CLISC", "HD95").endswith("*") and not cell(df, "CLISC", "DSC").endswith("*")
    reversed_ = [fakes.fake_result("clisc", RIVAL, hd95=[h + 4.0 + 0.01 * i for i, h in enumerate(hd_clisc)]),
                 fakes.fake_result("sim2real", RIVAL, hd95=hd_clisc)]
    assert not cell(table1(reversed_), "CLISC", "HD95").endswith("*")  # significant, but the rival's way


def test_every_rival_must_be_beaten(fakes) -> None:
    results = [fakes.fake_result("clisc", CLISC), fakes.fake_result("sim2real", RIVAL),
               fakes.fake_result("salip", CLISC)]
    assert not cell(table1(results), "CLISC", "DSC").endswith("*")


@pytest.mark.parametrize("metric, ours, theirs, expected", [
    ("dsc", [80.0, 81, 82, 83, 84, 85, 86], [70.0, 71, 72, 73, 74, 75, 76], True),
    ("dsc", [70.0, 71, 72, 73, 74, 75, 76], [80.0, 81, 82, 83, 84, 85, 86], False),
    ("hd95", [5.0, 6, 7, 8, 9, 10, 11], [15.0, 16, 17, 18, 19, 20, 21], True),
    ("hd95", [15.0, 16, 17, 18, 19, 20, 21], [5.0, 6, 7, 8, 9, 10, 11], False),
])
def test_direction_of_each_metric(metric: str, ours, theirs, expected: bool) -> None:
    index = [f"c{i}" for i in range(len(ours))]
    assert significantly_better(pd.Series(ours, index=index), pd.Series(theirs, index=index), metric) is expected


def test_no_rival_or_no_common_case_gives_no_mark() -> None:
    ours = {"dsc": pd.Series([90.0] * 7, index=list("abcdefg")), "hd95": pd.Series([1.0] * 7, index=list("abcdefg"))}
    groups = pd.Series(["tiny"] * 7, index=list("abcdefg"))
    assert marked_cells(ours, groups, {}) == set()
    elsewhere = {m: pd.Series(s.to_numpy(), index=list("hijklmn")) for m, s in ours.items()}
    assert marked_cells(ours, groups, {"other": elsewhere}) == set()
