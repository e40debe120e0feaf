"""Degenerate rows explain themselves: empty predictions, floor p-values, one footnote per repeated note."""
from __future__ import annotations

from pathlib import Path

from clisc.reporting.footnotes import smallest_wilcoxon_p
from clisc.reporting.tables import markdown_table, table2, write_table

SYNTHETIC = {"synthetic_data": "true", "weights": "clip=random"}


def empty_result(fakes, method: str, n: int = 4):
    """Every prediction empty: Dice 0 and the empty-mask HD95, as the demo's random-weight rows score."""
    result = fakes.fake_result(method, [0.0] * n, hd95=[373.13] * n, tags=SYNTHETIC)
    result.per_case["empty"] = "pred"
    return result


def test_smallest_wilcoxon_p() -> None:
    assert smallest_wilcoxon_p(4) == 0.125 and smallest_wilcoxon_p(10) == 2 / 1024


def test_empty_rows_floor_p_and_repeated_notes(fakes, tmp_path: Path) -> None:
    clisc = fakes.fake_result("clisc", [7.0, 9.0, 5.0, 8.0], tags=SYNTHETIC)
    results = [clisc, empty_result(fakes, "raw_cam"), empty_result(fakes, "sam_box")]
    df = table2(results)
    assert df.set_index("method").loc["raw CAM", "p vs CLISC"] == "0.125"  # the data stays plain
    md = markdown_table(df)
    raw = next(line for line in md.splitlines() if line.startswith("| raw CAM "))
    box = next(line for line in md.splitlines() if line.startswith("| SAM (box) "))
    assert "0.00 ± 0.00 [1]" in raw and "373.13 ± 0.00 [1]" in raw and "| 0.125 [2] | 0.125 [2] |" in raw
    assert "0.00 ± 0.00 [1]" in box  # the same text, the same footnote
    assert "- [1] all of 4 test predictions empty: each scores DSC 0 and HD95 373.13 mm, the empty-mask penalty" in md
    assert "- [2] the smallest p the two-sided Wilcoxon signed-rank test can give with 4 paired cases" in md
    clisc_line = next(line for line in md.splitlines() if line.startswith("| full CLISC "))
    assert "[1]" not in clisc_line  # no empty prediction there
    # the comparability notes every row repeated: said once, by the WARNING line
    assert md.count("synthetic data — not comparable") == md.count("random weights — not comparable") == 1
    assert "WARNING: every row ran with synthetic data — not comparable to the paper." in md
    files = write_table(df, tmp_path / "table2")
    assert "0.125 [2]" in files[2].read_text() and "[2] the smallest p" in files[2].read_text()


def test_some_empty_predictions_are_counted(fakes) -> None:
    clisc = fakes.fake_result("clisc", [70.0, 80.0, 75.0, 60.0, 90.0])
    partly = fakes.fake_result("raw_cam", [0.0, 50.0, 40.0, 0.0, 30.0], hd95=[373.13, 9, 9, 373.13, 9])
    partly.per_case.loc[[0, 3], "empty"] = "pred"
    md = markdown_table(table2([clisc, partly]))
    assert "- [1] 2 of 5 test predictions empty" in md


def test_size_table_gives_n_per_group_and_marks_empty_groups(fakes) -> None:
    from clisc.reporting.tables import NOT_RUN, size_table

    result = fakes.fake_result("clisc", [80, 90, 70, 60])  # cases in tiny, small, medium, large: none huge
    df = size_table([result])
    assert df.attrs["group_n"] == {"tiny": 1, "small": 1, "medium": 1, "large": 1, "huge": 0}
    md = markdown_table(df)
    header = md.splitlines()[0]
    assert "| DSC tiny (n=1) |" in header and "| DSC huge (n=0) |" in header and "| HD95 huge (n=0) |" in header
    clisc = next(line for line in md.splitlines() if line.startswith("| CLISC "))
    assert "n/a" not in clisc and clisc.count("| — |") == 2
    assert f"| {NOT_RUN} |" in next(line for line in md.splitlines() if line.startswith("| SaLIP "))
    assert "- —: no test case in the size group huge (n=0)." in md
