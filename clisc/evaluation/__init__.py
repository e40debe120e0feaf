"""Evaluation: Dice, HD95 (mm, medpy-exact), the empty-mask rule, size quintiles, paired Wilcoxon,
bootstrap intervals and per-case tables. ``clisc eval`` lives in ``clisc.evaluation.cli``."""
from clisc.evaluation.evaluate import (PER_CASE_COLUMNS, EvaluationSettings, evaluate_case, evaluate_cases,
                                       per_case_table, run_evaluation_settings, summarize, summary_table)
from clisc.evaluation.groups import SIZE_GROUPS, size_groups
from clisc.evaluation.metrics import EMPTY_HD95_MM, CaseScore, dice, empty_rule, hd95, score_case
from clisc.evaluation.stats import bootstrap_ci, paired_wilcoxon

__all__ = [
    "EMPTY_HD95_MM",
    "PER_CASE_COLUMNS",
    "SIZE_GROUPS",
    "CaseScore",
    "EvaluationSettings",
    "bootstrap_ci",
    "dice",
    "empty_rule",
    "evaluate_case",
    "evaluate_cases",
    "hd95",
    "paired_wilcoxon",
    "per_case_table",
    "run_evaluation_settings",
    "score_case",
    "size_groups",
    "summarize",
    "summary_table",
]
