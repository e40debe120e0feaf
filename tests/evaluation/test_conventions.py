"""Scoring conventions (``evaluation.*``): the paper protocol's penalty and sample std, the public
code's Dice 0 / HD95 0 for an empty prediction and ``np.std`` under ``official``; tables say which."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import clisc.pipeline.run as run_module
from clisc.data.discovery import discover_cases
from clisc.data.native import save_native_mask
from clisc.errors import CliscError
from clisc.evaluation import EMPTY_HD95_MM, EvaluationSettings, run_evaluation_settings, score_case, summarize
from clisc.evaluation.cli import evaluate_folder
from clisc.pipeline.settings import resolve_settings
from clisc.reporting.study import study_table
from clisc.reporting.tables import size_table, table1
from clisc.tracking.store import summary_metrics

GT = np.zeros((8, 8, 8), dtype=bool)
GT[2:5, 2:5, 2:5] = True
EMPTY = np.zeros_like(GT)


def test_the_protocols_name_their_conventions() -> None:
    paper, official = resolve_settings("paper").evaluation, resolve_settings("official").evaluation
    assert (paper.empty_prediction, paper.std_ddof) == ("penalty", 1)
    assert (official.empty_prediction, official.std_ddof) == ("zero", 0)
    assert resolve_settings("official").flat()["evaluation.std_ddof"] == 0  # logged with every run
    with pytest.raises(CliscError, match="evaluation.std_ddof"):
        resolve_settings(overrides={"evaluation.std_ddof": 2})


@pytest.mark.parametrize("rule, pred, gt, expected", [
    ("penalty", EMPTY, GT, (0.0, EMPTY_HD95_MM, "pred")),
    ("zero", EMPTY, GT, (0.0, 0.0, "pred")),  # utils.py: pred.sum() == 0 -> (0, 0)
    ("penalty", EMPTY, EMPTY, (100.0, 0.0, "both")),
    ("zero", EMPTY, EMPTY, (0.0, 0.0, "both")),  # the code's rule does not look at the ground truth
    ("zero", GT, EMPTY, (0.0, EMPTY_HD95_MM, "gt")),  # the code's medpy raises here: the suite's rule stays
    ("zero", GT, GT, (100.0, 0.0, "")),
])
def test_empty_prediction_rules(rule: str, pred, gt, expected) -> None:
    score = score_case(pred, gt, (1.0, 1.0, 1.0), empty_prediction=rule)
    assert (score.dsc, score.hd95, score.empty) == expected


def test_unknown_rule_is_refused() -> None:
    with pytest.raises(CliscError, match="empty_prediction"):
        score_case(GT, GT, 1.0, empty_prediction="nan")


def _table(dsc: list[float]) -> pd.DataFrame:
    n = len(dsc)
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "dsc": dsc, "hd95": [float(i) for i in range(n)],
                         "size_group": ["tiny", "small", "medium", "large", "huge"][:n] * (n // 5 or 1),
                         "empty": [""] * n})


def test_std_ddof_follows_the_setting() -> None:
    dsc = [60.0, 70.0, 80.0, 90.0, 100.0]
    assert summarize(_table(dsc))["dsc_std"] == pytest.approx(np.std(dsc, ddof=1))
    assert summarize(_table(dsc), ddof=0)["dsc_std"] == pytest.approx(np.std(dsc))  # test_3D.py's np.std
    assert summarize(_table(dsc), ddof=0)["hd95_std"] == pytest.approx(np.std(np.arange(5.0)))
    assert summary_metrics(_table(dsc), ddof=0)["dsc_std"] == pytest.approx(np.std(dsc))


def test_a_run_s_convention_is_read_back_from_its_params() -> None:
    assert run_evaluation_settings({}) == EvaluationSettings()  # a run from before the settings existed
    assert run_evaluation_settings({"evaluation.empty_prediction": "zero", "evaluation.std_ddof": "0"}) == \
        EvaluationSettings("zero", 0)


OFFICIAL = {"evaluation.empty_prediction": "zero", "evaluation.std_ddof": 0}
DSC = [80, 90, 70, 60, 100, 85, 95, 75, 65, 80]


def test_tables_use_each_run_s_ddof_and_state_the_convention(fakes) -> None:
    paper = table1([fakes.fake_result("clisc", DSC)])
    official = table1([fakes.fake_result("clisc", DSC, params=dict(OFFICIAL))])
    cell = lambda df: df.set_index("method").loc["CLISC", "DSC"]  # noqa: E731
    assert cell(paper).startswith(f"80.00 ± {np.std(DSC, ddof=1):.2f}")
    assert cell(official).startswith(f"80.00 ± {np.std(DSC):.2f}")
    assert any(n.startswith("Scoring: an empty prediction scores Dice 0, HD95 373.13 mm") and "ddof 1" in n
               for n in paper.attrs["notes"])
    assert any(n.startswith("Scoring: an empty prediction scores Dice 0, HD95 0 mm (the public code's rule)")
               and "np.std" in n for n in official.attrs["notes"])
    sizes = size_table([fakes.fake_result("clisc", DSC, params=dict(OFFICIAL))])
    assert any("evaluation.empty_prediction=zero" in n for n in sizes.attrs["notes"])
    study = study_table([fakes.fake_result("raw_cam", DSC, params=dict(OFFICIAL))])
    assert any("evaluation.std_ddof=0" in n for n in study.attrs["notes"])


def test_mixed_conventions_are_flagged(fakes) -> None:
    df = table1([fakes.fake_result("clisc", DSC), fakes.fake_result("sim2real", DSC, params=dict(OFFICIAL))])
    assert any(n.startswith("WARNING: the rows were scored under different conventions") for n in df.attrs["notes"])
    assert any(n.startswith("Scoring of Sim2Real:") and "Dice 0, HD95 0 mm" in n for n in df.attrs["notes"])


def test_run_method_scores_with_the_protocol_s_rule(tiny_brats_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty prediction of every test case: 373.13 mm under paper, 0 mm under official."""
    def nothing(ctx, split):
        return "empty", {v.case_id: np.zeros(v.image.shape, dtype=np.uint8) for v in ctx.volumes(split)}

    monkeypatch.setattr(run_module, "resolve_output", lambda name: nothing)
    for overrides, hd in (({}, EMPTY_HD95_MM), (OFFICIAL, 0.0)):
        result = run_module.run_method("clisc", tiny_brats_dir, profile="tiny", overrides=overrides,
                                       cache_root=tmp_path, progress=False, echo=lambda _: None)
        assert (result.per_case["hd95"] == hd).all() and (result.per_case["dsc"] == 0).all()
        assert (result.per_case["empty"] == "pred").all()


def test_clisc_eval_takes_the_rule(tiny_brats_dir: Path, tmp_path: Path) -> None:
    case = discover_cases(tiny_brats_dir)[0]
    empty = np.zeros(nib.load(case.flair).shape, dtype=np.uint8)
    save_native_mask(tmp_path / "pred" / f"{case.case_id}.nii.gz", empty, case, "test")  # others: missing = empty
    for rule, hd in (("penalty", EMPTY_HD95_MM), ("zero", 0.0)):
        table, missing = evaluate_folder(tmp_path / "pred", str(tiny_brats_dir), empty_prediction=rule)
        assert len(missing) == 2 and (table["hd95"] == hd).all() and (table["dsc"] == 0).all()
