"""The registry of methods: CLISC, its ablations and reference rows, declared as data.

A method names the pipeline *output* that is scored on the test split (see
``clisc.pipeline.outputs.OUTPUTS``) and the settings in which it differs from CLISC. Ablations are
therefore differences, not copies, and share every cached upstream stage with CLISC. Baselines add
their own output function and register a method the same way (``register_method``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from clisc.errors import CliscError


@dataclass(frozen=True)
class Method:
    name: str
    output: str  # key of clisc.pipeline.outputs.OUTPUTS
    title: str  # the row's name in the paper's tables
    overrides: Mapping[str, Any] = field(default_factory=dict)
    label_free: bool = True  # False for rows that read ground truth by design (references)


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.name in METHODS and METHODS[method.name] != method:
        raise ValueError(f"method {method.name!r} is already registered differently")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise CliscError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None


for _method in (
    Method("clisc", "unet_round2", "CLISC"),
    # Table 2 ablations (all evaluated on the test split)
    Method("raw_cam", "cam_raw", "raw CAM"),
    Method("cam_amda", "cam_amda", "CAM with AMDA"),
    Method("sam_points", "sam", "SAM (5 points)", {"prompts.variant": "points"}),
    Method("sam_box", "sam", "SAM (box)", {"prompts.variant": "box"}),
    Method("sam_box_points", "sam", "SAM (5 points + box)", {"prompts.variant": "box+points"}),
    Method("no_self_training", "unet_round1", "w/o self-training"),
    Method("no_s3f", "unet_round2", "w/o S3F", {"s3f.beta": 0.0}),
    # reference rows of Table 1 (not label-free by design)
    Method("fully_supervised", "supervised", "Fully supervised", label_free=False),
    Method("sam_gt_prompts", "sam_gt", "SAM (prompts from ground truth)", label_free=False),
):
    register_method(_method)
