"""The CPU study's table: pooled folds, the paper's values from Table 1 and 2, p vs raw CAM, computed time."""
from __future__ import annotations

from pathlib import Path

from clisc.reporting.study import computed_minutes, study_table
from clisc.reporting.tables import write_table


def study_results(fakes) -> list:
    """Fully supervised, raw CAM and CAM + AMDA, each 12 cases in 4 folds, every fold 60 s of stage time
    (CAM + AMDA: 30 s, its raw classifier read from the cache)."""
    results = []
    for method, base, seconds in (("fully_supervised", 80, 60.0), ("raw_cam", 40, 60.0), ("cam_amda", 45, 30.0)):
        for run in fakes.fold_results(method, [base + i for i in range(12)], 4,
                                      tags={f: {"label_free": "false", "gt_switches": "slices.labels=ground_truth"}
                                            for f in range(1, 5)}):
            run.stage_times = {"stage": seconds}
            results.append(run)
    return results


def test_study_table_pools_folds_and_times_rows(fakes, tmp_path: Path) -> None:
    table = study_table(study_results(fakes))
    rows = table.set_index("method")
    assert list(rows.index) == ["Fully supervised", "raw CAM", "CAM with AMDA"]
    assert set(rows["cases"]) == {"12"} and set(rows["label-free"]) == {"no"}
    assert rows.loc["raw CAM", "DSC"].startswith("45.50 ± ")
    assert rows.loc["raw CAM", "paper DSC"] == "51.10 ± 12.14"  # Table 2
    assert rows.loc["Fully supervised", "paper DSC"] == "87.97 ± 9.35"  # Table 1
    assert list(rows["time (min)"]) == ["4.0", "4.0", "2.0"]
    assert rows.loc["raw CAM", "p vs raw CAM"] == ""
    assert float(rows.loc["CAM with AMDA", "p vs raw CAM"]) < 0.01  # +5 on all 12 cases
    assert "pooled over 4 folds" in rows.loc["CAM with AMDA", "note"]
    md = write_table(table, tmp_path / "cpu_study")[0].read_text()
    assert "| CAM with AMDA | no | 12 |" in md and "random weights" not in md


def test_computed_minutes_sums_stages_of_every_run(fakes) -> None:
    runs = [fakes.fake_result("raw_cam", [50], stage_times={"a": 30.0, "b": 90.0}) for _ in range(2)]
    assert computed_minutes(runs) == 4.0


def test_table1_cpu_rows_are_tested_against_the_flair_floor(fakes) -> None:
    results = []
    for method, base in (("flair_threshold", 60), ("amcons", 50), ("sim2real", 62)):
        results += fakes.fold_results(method, [base + i for i in range(12)], 4)
    rows = study_table(results, "flair_threshold").set_index("method")
    assert list(rows.index) == ["FLAIR threshold", "AMCons", "Sim2Real"]
    assert rows.loc["AMCons", "paper DSC"] == "64.37 ± 21.08" and rows.loc["FLAIR threshold", "paper DSC"] == ""
    assert rows.loc["FLAIR threshold", "p vs FLAIR threshold"] == ""
    assert float(rows.loc["AMCons", "p vs FLAIR threshold"]) < 0.01  # 10 below on all 12 cases
