"""The foundation-model table (``experiments/foundations.yaml``): CLISC and SAM with ground-truth
prompts (5 points + box) for each ``sam.model``, CLISC for each ``foundation.clip_arch``, with the
columns of Table 1.

A row is a method with the two models its runs used (read from the runs' own params, not from the
spec). The paper's values stand beside the paper's models only (SAM ViT-B, CLIP ViT-B/32); p compares
each row with CLISC on those default models. Real numbers need the pretrained weights (``clisc
weights``) and a GPU; a table of random-weight runs says so on its face.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from clisc.foundation import catalogue
from clisc.pipeline.folds import pool_folds
from clisc.pipeline.result import MethodResult
from clisc.reporting.tables import (
    CI_RESAMPLES,
    _delta,
    comparability_banners,
    case_means,
    ci_cell,
    mean_std_cell,
    method_title,
    paper_rows,
    row_note,
    runs_label_free,
    seed_mean_summary,
    wilcoxon_p,
)

SAM_SETTING, CLIP_SETTING = "sam.model", "foundation.clip_arch"
METHODS = ("clisc", "sam_gt_prompts")
REAL_NUMBERS_NOTE = ("Real numbers need the pretrained weights of every model (clisc weights lists them and what "
                     "is verified here) and a GPU; rows with random weights say nothing about the models.")
COLUMNS = ["method", "label-free", "seeds", "cases", "DSC", "DSC 95% CI", "paper DSC", "Δ DSC",
           "HD95", "HD95 95% CI", "paper HD95", "Δ HD95", "p vs CLISC", "note"]
Row = tuple[str, str, str]  # method, sam.model, clip_arch
NOTES = (
    "DSC (%) and HD95 (mm): mean ± std over test cases; with several seeds, the mean of the per-seed means and "
    "of the per-seed stds (column seeds).",
    f"95% CI: percentile bootstrap ({CI_RESAMPLES} resamples, seed 0) of the mean of per-case values.",
    "p: two-sided paired Wilcoxon signed-rank test of per-case DSC, CLISC on the paper's models (SAM ViT-B, "
    "CLIP ViT-B/32) vs the row, on the cases both ran.",
    "label-free: from the runs' tags; SAM (prompts from ground truth) is a reference row that reads labels.",
    "paper / Δ: the paper's published mean, beside the paper's models only (SAM ViT-B, CLIP ViT-B/32).",
)


def _default(setting: str) -> str:
    return next(m.value for m in catalogue.MODELS if m.setting == setting and m.default)


def _title(setting: str, value: str) -> str:
    try:
        return catalogue.entry(setting, value).title
    except KeyError:
        return value


def row_key(result: MethodResult) -> Row:
    """(method, sam.model, clip_arch) of a run, from its params (defaults where a run lacks them)."""
    params = result.params
    return (result.method, str(params.get(SAM_SETTING, _default(SAM_SETTING))),
            str(params.get(CLIP_SETTING, _default(CLIP_SETTING))))


def _order(keys: Iterable[Row]) -> list[Row]:
    """SAM choices (catalogue order) x methods with the default CLIP, then CLIP choices with the
    default SAM, then anything else that ran."""
    sam_default, clip_default = _default(SAM_SETTING), _default(CLIP_SETTING)
    wanted = [(m, s, clip_default) for s in catalogue.choices(SAM_SETTING) for m in METHODS]
    wanted += [("clisc", sam_default, c) for c in catalogue.choices(CLIP_SETTING) if c != clip_default]
    present = set(keys)
    return [k for k in wanted if k in present] + sorted(present - set(wanted))


def _label(key: Row) -> str:
    method, sam, clip = key
    models = f"SAM stage: {_title(SAM_SETTING, sam)}"
    if method == "clisc":
        models += f"; CLIP: {_title(CLIP_SETTING, clip)}"
    return f"{method_title(method)} ({models})"


def foundations_table(results: Sequence[MethodResult]) -> pd.DataFrame:
    """One row per (method, SAM-stage model, CLIP) that ran; Table 1's columns; notes in ``attrs``."""
    grouped: dict[Row, list[MethodResult]] = {}
    for result in pool_folds(results):
        grouped.setdefault(row_key(result), []).append(result)
    paper = {row["method"]: row for row in paper_rows("table1")}
    defaults = (_default(SAM_SETTING), _default(CLIP_SETTING))
    reference_key = ("clisc", *defaults)
    reference = case_means(grouped[reference_key], "dsc") if reference_key in grouped else None
    rows = []
    for key in _order(grouped):
        runs = sorted(grouped[key], key=lambda r: r.seed)
        summary = seed_mean_summary(runs)
        spec = paper.get(key[0], {}) if key[1:] == defaults else {}
        paper_dsc, paper_hd = spec.get("dsc"), spec.get("hd95")
        p = math.nan if reference is None or key == reference_key else wilcoxon_p(reference, case_means(runs, "dsc"))
        rows.append({
            "method": _label(key),
            "label-free": "yes" if runs_label_free(runs) else "no",
            "seeds": str(len(runs)),
            "cases": str(int(summary["n_cases"])),
            "DSC": mean_std_cell(summary["dsc_mean"], summary["dsc_std"]),
            "DSC 95% CI": ci_cell(case_means(runs, "dsc")),
            "paper DSC": mean_std_cell(*paper_dsc) if paper_dsc else "",
            "Δ DSC": _delta(summary["dsc_mean"], paper_dsc[0] if paper_dsc else None),
            "HD95": mean_std_cell(summary["hd95_mean"], summary["hd95_std"]),
            "HD95 95% CI": ci_cell(case_means(runs, "hd95")),
            "paper HD95": mean_std_cell(*paper_hd) if paper_hd else "",
            "Δ HD95": _delta(summary["hd95_mean"], paper_hd[0] if paper_hd else None),
            "p vs CLISC": "" if math.isnan(p) else f"{p:.3g}",
            "note": row_note(runs),
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    df.attrs["notes"] = [REAL_NUMBERS_NOTE, *comparability_banners(grouped), *NOTES]
    df.attrs["warnings"] = []
    return df
