"""Cross-validation (``--folds K``): the fold split files of a run and the pooling of its folds' results.

Each fold is an ordinary run on its own split file (``splits/<fingerprint>_seed<s>_fold<i>of<K>.csv``,
see :func:`clisc.data.split.make_folds`) tagged ``fold`` (1..K) and ``folds`` (K). Reports pool the
per-case rows of all folds of a method x seed x settings into one result, so a table row counts every
case once (n = all cases) and the Wilcoxon test pairs methods by case id.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from clisc.data.split import load_or_create_folds
from clisc.errors import CliscError
from clisc.evaluation.groups import size_groups
from clisc.pipeline.result import MethodResult

FOLD_TAG = "fold"
FOLDS_TAG = "folds"
POOLED_TAG = "folds_pooled"  # on a pooled result: how many fold runs it holds
_PER_FOLD_TAGS = ("split_file", "split_sha256")


def fold_tags(fold: int, k: int) -> dict[str, str]:
    return {FOLD_TAG: str(fold), FOLDS_TAG: str(k)}


def fold_split_files(data: str | Path, k: int, protocol: str, profile: str, overrides: Mapping[str, Any],
                     skip_cases: Iterable[str] = ()) -> list[Path]:
    """The ``k`` fold split files (made when missing) of the data less ``skip_cases``, seeded with the
    run's ``split_seed`` setting (``overrides`` may set it)."""
    from clisc.pipeline.settings import resolve_settings

    seed = int(overrides.get("split_seed", resolve_settings(protocol, profile).split_seed))
    return load_or_create_folds(data, k, seed, exclude=skip_cases)


def _pool_key(result: MethodResult) -> tuple:
    params = tuple(sorted((str(k), str(v)) for k, v in result.params.items()))
    return result.method, result.seed, params, result.tags.get(FOLDS_TAG)


def _with_size_groups(per_case: pd.DataFrame) -> pd.DataFrame:
    """Size groups recomputed over the pooled cases (a fold's own quintiles cover only its test cases)."""
    volume = "gt_ml" if "gt_ml" in per_case.columns else "gt_voxels"
    if volume not in per_case.columns or "size_group" not in per_case.columns:
        return per_case
    groups = size_groups(pd.Series(per_case[volume].to_numpy(), index=per_case["case_id"].astype(str)))
    return per_case.assign(size_group=groups.astype(str).to_numpy())


def pool_fold_runs(runs: list[MethodResult]) -> MethodResult:
    """One result from the fold runs of one method x seed x settings: per-case rows concatenated
    (CliscError if a case was tested twice), size groups recomputed, tags merged (``label_free`` only
    if every fold was, ``gt_switches`` the union, ``fold`` = "pooled", ``folds_pooled`` = runs pooled)."""
    runs = sorted(runs, key=lambda r: int(r.tags.get(FOLD_TAG, 0)))
    per_case = pd.concat([r.per_case for r in runs], ignore_index=True)
    repeated = per_case["case_id"][per_case["case_id"].duplicated()]
    if len(repeated):
        raise CliscError(f"{runs[0].method} (seed {runs[0].seed}): case {repeated.iloc[0]} was tested in two "
                         "folds; the fold runs do not come from one cross-validation")
    tags = {k: v for k, v in runs[0].tags.items() if k not in _PER_FOLD_TAGS}
    switches = sorted({s for r in runs for s in r.tags.get("gt_switches", "none").split(",") if s and s != "none"})
    tags.update({
        FOLD_TAG: "pooled",
        POOLED_TAG: str(len(runs)),
        "label_free": str(all(r.tags.get("label_free") == "true" for r in runs)).lower(),
        "gt_switches": ",".join(switches) or "none",
        "split_file": ",".join(r.tags.get("split_file", "") for r in runs),
    })
    stage_times: dict[str, float] = {}
    for run in runs:
        for stage, seconds in run.stage_times.items():
            stage_times[stage] = stage_times.get(stage, 0.0) + seconds
    return MethodResult(runs[0].method, runs[0].seed, _with_size_groups(per_case), dict(runs[0].params), tags,
                        stage_times, dict(runs[0].artifacts))


def pool_folds(results: Iterable[MethodResult]) -> list[MethodResult]:
    """Results with every group of fold runs (tag ``folds``) replaced by its pooled result, in the order
    of first appearance; results of runs without folds pass through unchanged."""
    groups: dict[tuple, list[MethodResult]] = {}
    order: list[tuple | int] = []
    plain: list[MethodResult] = []
    for result in results:
        if FOLDS_TAG not in result.tags:
            order.append(len(plain))
            plain.append(result)
            continue
        key = _pool_key(result)
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(result)
    return [plain[item] if isinstance(item, int) else pool_fold_runs(groups[item]) for item in order]


def folds_note(result: MethodResult) -> str:
    """``"pooled over K folds"`` (``"... (only n of K folds finished)"``) for a pooled result, else ''."""
    if result.tags.get(FOLD_TAG) != "pooled":
        return ""
    k, done = result.tags.get(FOLDS_TAG, "?"), result.tags.get(POOLED_TAG, "?")
    return f"pooled over {k} folds" + ("" if done == k else f" (only {done} of {k} folds finished)")
