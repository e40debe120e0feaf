"""Toy objectives for the search tests; imported by name so that spawned workers can unpickle them."""
from __future__ import annotations

from typing import Any

import pandas as pd

from clisc.pipeline.result import MethodResult


def toy_objective(params: dict[str, Any], fail_at: float | None = None) -> MethodResult:
    """Per-case Dice alpha + i (i = 0..4); raises ValueError when ``alpha == fail_at``."""
    alpha = float(params["alpha"])
    if fail_at is not None and alpha == fail_at:
        raise ValueError(f"alpha {alpha} is the failing value")
    per_case = pd.DataFrame({
        "case_id": [f"c{i}" for i in range(5)],
        "dsc": [alpha + i for i in range(5)],
        "hd95": [30.0 - alpha] * 5,
        "gt_voxels": [100 * (i + 1) for i in range(5)],
        "size_group": ["tiny", "small", "medium", "large", "huge"],
        "empty": [""] * 5,
        "agreement": [alpha / 30] * 5,  # a label-free criterion
    })
    return MethodResult(method="clisc", seed=0, per_case=per_case, params={"amda.alpha": alpha},
                        tags={"label_free": "true"})


def slow_objective(params: dict[str, Any], delay: float) -> MethodResult:
    """:func:`toy_objective` after ``delay`` seconds (a trial long enough to be killed in)."""
    import time

    time.sleep(delay)
    return toy_objective(params)


def slow_objective_partial(delay: float = 0.5):
    """A picklable :func:`slow_objective` with ``delay`` (so that two workers both take trials)."""
    import functools

    return functools.partial(slow_objective, delay=delay)
