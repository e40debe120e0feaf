"""Hand-made MethodResults for the tracking/search/reporting tests, and a stand-in for the
``clisc.evaluation`` summary/statistics API used only while that package does not provide it."""
from __future__ import annotations

import sys
import types
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from clisc.pipeline.result import MethodResult

GROUPS = ("tiny", "small", "medium", "large", "huge")


def per_case_table(dsc: Sequence[float], hd95: Sequence[float] | None = None, prefix: str = "case") -> pd.DataFrame:
    """Per-case table with the given Dice (%) values; case i is in group GROUPS[i % 5]."""
    n = len(dsc)
    hd = list(hd95) if hd95 is not None else [10.0 - d / 10 for d in dsc]
    return pd.DataFrame({
        "case_id": [f"{prefix}{i:03d}" for i in range(n)],
        "dsc": [float(d) for d in dsc],
        "hd95": [float(h) for h in hd],
        "gt_voxels": [1000 * (i % 5 + 1) for i in range(n)],
        "size_group": [GROUPS[i % 5] for i in range(n)],
        "empty": ["" for _ in range(n)],
    })


def fake_result(method: str, dsc: Sequence[float], seed: int = 0, **kwargs) -> MethodResult:
    """MethodResult of ``method`` with per-case Dice ``dsc`` and provenance tags of a real-weights run."""
    tags = {"protocol": "paper", "label_free": "true", "weights": "sam_vit_b=ec2df627", "synthetic_data": "false"}
    tags.update(kwargs.pop("tags", {}))
    return MethodResult(method=method, seed=seed, per_case=per_case_table(dsc, kwargs.pop("hd95", None)),
                        tags=tags, **kwargs)


def _summarize(per_case: pd.DataFrame) -> dict[str, float]:
    out = {"dsc_mean": per_case["dsc"].mean(), "dsc_std": per_case["dsc"].std(ddof=0),
           "hd95_mean": per_case["hd95"].mean(), "hd95_std": per_case["hd95"].std(ddof=0),
           "n_cases": len(per_case)}
    for rule in ("both", "pred", "gt"):
        out[f"n_empty_{rule}"] = int((per_case["empty"] == rule).sum())
    for group in GROUPS:
        rows = per_case[per_case["size_group"] == group]
        out[f"dsc_{group}"] = rows["dsc"].mean() if len(rows) else float("nan")
        out[f"hd95_{group}"] = rows["hd95"].mean() if len(rows) else float("nan")
    return {k: float(v) for k, v in out.items()}


def _paired_wilcoxon(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    diff = np.asarray(a, float) - np.asarray(b, float)
    if not np.any(diff):
        return 0.0, 1.0
    res = scipy_stats.wilcoxon(diff)
    return float(res.statistic), float(res.pvalue)


def _bootstrap_ci(values, confidence: float = 0.95, n_resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    x = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_resamples, len(x)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def ensure_evaluation_api() -> None:
    """Give ``clisc.evaluation`` the summary/stats API when that package does not provide it yet."""
    import clisc.evaluation as evaluation

    if not hasattr(evaluation, "summarize"):
        evaluation.summarize = _summarize
    try:
        import clisc.evaluation.stats  # noqa: F401
    except ImportError:
        module = types.ModuleType("clisc.evaluation.stats")
        module.paired_wilcoxon = _paired_wilcoxon
        module.bootstrap_ci = _bootstrap_ci
        sys.modules["clisc.evaluation.stats"] = module
        evaluation.stats = module
    try:
        import clisc.evaluation.groups  # noqa: F401
    except ImportError:
        module = types.ModuleType("clisc.evaluation.groups")
        module.SIZE_GROUPS = GROUPS
        sys.modules["clisc.evaluation.groups"] = module
        evaluation.groups = module
