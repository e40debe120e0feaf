"""Tables 1/2 and the size table from hand-made per-case values whose summaries are known."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from clisc.reporting.tables import (NOT_RUN, RANDOM_WEIGHTS_NOTE, SYNTHETIC_DATA_NOTE, paper_rows, size_table,
                                    table1, table2, write_table)

CLISC_DSC = [80, 90, 70, 60, 100, 85, 95, 75, 65, 80]  # mean 80.00, std (ddof 1) 12.91
LOW_DSC = [d - 30 + i for i, d in enumerate(CLISC_DSC)]  # always lower than CLISC: Wilcoxon p = 0.002


def row(df: pd.DataFrame, label: str) -> pd.Series:
    return df.set_index("method").loc[label]


def test_table1_values_order_and_not_run(fakes) -> None:
    df = table1([fakes.fake_result("clisc", CLISC_DSC, hd95=[5.0] * 10),
                 fakes.fake_result("fully_supervised", [90.0] * 10)])
    assert list(df["method"]) == [r["label"] for r in paper_rows("table1")]
    clisc = row(df, "CLISC")
    assert clisc["DSC"] == "80.00 ± 12.91"
    assert clisc["paper DSC"] == "85.60 ± 9.26" and clisc["Δ DSC"] == "-5.60"
    assert clisc["HD95"] == "5.00 ± 0.00" and clisc["Δ HD95"] == "-1.72"
    assert clisc["seeds"] == "1" and clisc["cases"] == "10"
    lo, hi = (float(x) for x in clisc["DSC 95% CI"].strip("[]").split(","))
    assert lo < 80 < hi
    for label in ("SaLIP", "AMCons", "GradCAMCons", "3D IF", "Sim2Real", "SAM (prompts from ground truth)"):
        assert row(df, label)["DSC"] == NOT_RUN and row(df, label)["note"] == NOT_RUN
    assert row(df, "Fully supervised")["note"] == ""


@pytest.mark.parametrize(
    "rival_dsc, marked",
    [(LOW_DSC, True), (CLISC_DSC, False)],
    ids=["clear-difference", "equal-scores"],
)
def test_significance_mark(fakes, rival_dsc: list[float], marked: bool) -> None:
    df = table1([fakes.fake_result("clisc", CLISC_DSC), fakes.fake_result("sim2real", rival_dsc),
                 fakes.fake_result("fully_supervised", rival_dsc)])  # not label-free: never needed for the mark
    assert row(df, "CLISC")["DSC"].endswith("*") is marked
    p = float(row(df, "Sim2Real")["p vs CLISC"])
    assert (p < 0.05) is marked
    assert not row(df, "Sim2Real")["DSC"].endswith("*")


def test_mark_needs_every_label_free_rival(fakes) -> None:
    df = table1([fakes.fake_result("clisc", CLISC_DSC), fakes.fake_result("sim2real", LOW_DSC),
                 fakes.fake_result("salip", CLISC_DSC)])
    assert not row(df, "CLISC")["DSC"].endswith("*")


def test_seeds_average_per_seed_means(fakes) -> None:
    df = table2([fakes.fake_result("raw_cam", [40, 60], seed=0), fakes.fake_result("raw_cam", [50, 70], seed=1)])
    raw = row(df, "raw CAM")
    assert raw["DSC"] == "55.00 ± 14.14" and raw["seeds"] == "2" and raw["Δ DSC"] == "+3.90"
    assert row(df, "full CLISC")["DSC"] == NOT_RUN


@pytest.mark.parametrize(
    "tags, note",
    [({"weights": "sam_vit_b=random,clip=random"}, RANDOM_WEIGHTS_NOTE),
     ({"synthetic_data": "true"}, SYNTHETIC_DATA_NOTE)],
)
def test_comparability_banner(fakes, tmp_path: Path, tags: dict, note: str) -> None:
    df = table2([fakes.fake_result("clisc", CLISC_DSC, tags=tags), fakes.fake_result("raw_cam", LOW_DSC)])
    assert row(df, "full CLISC")["note"] == note and row(df, "raw CAM")["note"] == ""
    md, csv, tex = write_table(df, tmp_path / "t2")
    assert f"WARNING: some rows ran with {note}." in md.read_text()
    assert note in pd.read_csv(csv, keep_default_na=False)["note"].tolist()
    assert note.replace("—", "---") in tex.read_text()


def test_extra_method_is_appended_under_its_title(fakes) -> None:
    df = table1([fakes.fake_result("medclip_sam", [50, 60], tags={"label_free": "true"})])
    assert df["method"].iloc[-1] == "MedCLIP-SAM" and df["DSC"].iloc[-1] == "55.00 ± 7.07"
    assert df["paper DSC"].iloc[-1] == ""


def test_size_table(fakes) -> None:
    df = size_table([fakes.fake_result("clisc", CLISC_DSC)])  # tiny = cases 0 and 5: (80 + 85) / 2
    clisc = row(df, "CLISC")
    assert clisc["DSC tiny"] == "82.50" and clisc["DSC huge"] == "90.00"
    assert clisc["paper DSC tiny"] == "79.67" and clisc["HD95 tiny"] == "1.75"
    assert row(df, "SaLIP")["DSC tiny"] == NOT_RUN


def test_write_table_formats(fakes, tmp_path: Path) -> None:
    df = table1([fakes.fake_result("clisc", CLISC_DSC)])
    md, csv, tex = write_table(df, tmp_path / "sub" / "table1")
    lines = md.read_text().splitlines()
    assert lines[0] == "| " + " | ".join(df.columns) + " |"
    assert lines[1].count("---") == len(df.columns)
    assert "| CLISC | yes | 1 | 10 | 80.00 ± 12.91 |" in md.read_text()
    assert len(lines) >= 2 + len(df) and any(line.startswith("- p, p HD95: two-sided paired Wilcoxon") for line in lines)
    pd.testing.assert_frame_equal(pd.read_csv(csv, dtype=str, keep_default_na=False), df, check_dtype=False)
    text = tex.read_text()
    assert r"\begin{tabular}" in text and r"CLISC & yes & 1 & 10 & 80.00 $\pm$ 12.91" in text
    assert not {"±", "Δ", "—"} & set(text)
    assert r"\caption{" in text and "95\\% CI" in text


OFFICIAL_TAGS = {"protocol": "official", "label_free": "false",
                 "gt_switches": "gate_cams_with_gt,tune_cam_threshold_on_gt,select_checkpoints_on_gt"}


@pytest.mark.parametrize("make_table, label", [(table1, "CLISC"), (table2, "full CLISC")])
def test_a_ground_truth_run_is_not_called_label_free(fakes, tmp_path: Path, make_table, label: str) -> None:
    df = make_table([fakes.fake_result("clisc", CLISC_DSC, tags=OFFICIAL_TAGS),
                     fakes.fake_result("raw_cam", LOW_DSC)])
    clisc = row(df, label)
    assert clisc["label-free"] == "no"
    assert clisc["note"] == "ground truth used: gate_cams_with_gt, select_checkpoints_on_gt, tune_cam_threshold_on_gt"
    (warning,) = df.attrs["warnings"]
    assert warning.startswith(f"WARNING: {label} is label-free in the paper, but these runs used ground truth")
    assert warning in df.attrs["notes"]
    md, _, _ = write_table(df, tmp_path / "t")
    assert f"| {label} | no |" in md.read_text() and warning in md.read_text()
    other, label_free = ("SaLIP", "") if make_table is table1 else ("raw CAM", "yes")  # SaLIP did not run
    assert row(df, other)["label-free"] == label_free


def test_settings_tuned_on_labels_show_in_the_row_and_the_warning(fakes) -> None:
    tags = {"label_free": "false", "gt_switches": "tuned_on_validation_labels", "tuned_study": "search-vd",
            "tuned_objective": "validation_dice", "tuned_on_labels": "true"}
    df = table1([fakes.fake_result("clisc", CLISC_DSC, tags=tags)])
    clisc = row(df, "CLISC")
    assert clisc["label-free"] == "no"
    assert clisc["note"] == ("ground truth used: tuned_on_validation_labels; "
                             "settings tuned on validation labels in study search-vd")
    assert "(settings tuned on validation labels in study search-vd)" in df.attrs["warnings"][0]
    assert df.attrs["warnings"][0] in size_table([fakes.fake_result("clisc", CLISC_DSC, tags=tags)]).attrs["notes"]


@pytest.mark.parametrize("rivals, marked", [
    # a rival that read ground truth is no rival for the star, whatever the paper's row says
    ([("sim2real", LOW_DSC, {}), ("salip", CLISC_DSC, OFFICIAL_TAGS)], True),
    # a reference row whose runs are label-free by their tags is a rival
    ([("sim2real", LOW_DSC, {}), ("fully_supervised", CLISC_DSC, {"label_free": "true"})], False),
], ids=["gt-rival-ignored", "label-free-reference-counts"])
def test_the_stars_rivals_are_the_label_free_runs(fakes, rivals, marked: bool) -> None:
    df = table1([fakes.fake_result("clisc", CLISC_DSC)] + [fakes.fake_result(m, d, tags=t) for m, d, t in rivals])
    assert row(df, "CLISC")["DSC"].endswith("*") is marked


def test_cross_validation_folds_pool_into_one_row(fakes) -> None:
    dsc = [float(d) for d in CLISC_DSC]
    low = [float(d) for d in LOW_DSC]
    results = fakes.fold_results("clisc", dsc, 5) + fakes.fold_results("raw_cam", low, 2)
    df = table2(results)
    clisc, raw = row(df, "full CLISC"), row(df, "raw CAM")
    assert clisc["cases"] == "10" and clisc["seeds"] == "1" and clisc["DSC"].startswith("80.00 ± 12.91")
    assert raw["cases"] == "10" and clisc["note"] == "pooled over 5 folds"
    # the Wilcoxon test pairs the cases by id across differently folded runs: same p as unfolded
    unfolded = [fakes.fake_result("clisc", dsc), fakes.fake_result("raw_cam", low)]
    assert raw["p vs CLISC"] == row(table2(unfolded), "raw CAM")["p vs CLISC"] == "0.00195"
    assert any(n.startswith("Cross-validation: the per-case rows of all folds are pooled") for n in df.attrs["notes"])
    sizes = size_table(results, "table2")
    assert row(sizes, "full CLISC")["DSC tiny"] == row(size_table(unfolded, "table2"), "full CLISC")["DSC tiny"]


@pytest.mark.parametrize("tags, note", [
    ({"label_free": "false", "gt_switches": "none"}, "ground truth used: by design (a reference row)"),
    ({"label_free": "", "gt_switches": "none"}, "ground truth used: label_free tag missing"),
    ({"label_free": "false", "gt_switches": "slices.labels=ground_truth"}, "ground truth used: slices.labels=ground_truth"),
])
def test_provenance_note_names_how_ground_truth_was_read(fakes, tags, note) -> None:
    from clisc.reporting.tables import provenance_note

    assert provenance_note([fakes.fake_result("fully_supervised", [80, 90], tags=tags)]) == note
