"""The registry of methods: CLISC, its ablations and reference rows, declared as data.

A method names the *output* that is scored on the test split (a key of ``clisc.pipeline.run.OUTPUTS``,
or ``"package.module:function"`` for an output defined elsewhere, imported only when the method runs)
and the settings in which it differs from CLISC. Ablations are therefore differences, not copies, and
share every cached upstream stage with CLISC. The baselines of Table 1 live in the top-level
``baselines`` package, whose ``__init__`` registers them here as data (``register_method``); it is
loaded the first time the registry is read (:func:`all_methods`, :func:`get_method`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from clisc.errors import CliscError

# The settings through which the CLISC pipeline (and its ablations) can read ground truth outside test
# scoring; each is a ground-truth use when its value is ``True`` or ``"ground_truth"``.
PIPELINE_GT_SWITCHES = ("gt.gate_cams_with_gt", "gt.tune_cam_threshold_on_gt", "gt.select_checkpoints_on_gt",
                        "slices.labels")
PLUGINS = ("baselines",)


@dataclass(frozen=True)
class Method:
    name: str
    output: str  # key of clisc.pipeline.run.OUTPUTS, or "package.module:function"
    title: str  # the row's name in the paper's tables
    overrides: Mapping[str, Any] = field(default_factory=dict)
    label_free: bool = True  # False for rows that read ground truth by design (references)
    # dotted settings through which this method can read ground truth (see ``ground_truth_uses``)
    gt_switches: tuple[str, ...] = PIPELINE_GT_SWITCHES
    # switch -> the condition under which that switch reads ground truth: a boolean setting that must be on
    # (MedCLIP-SAM's U-Net, and so ``gt.select_checkpoints_on_gt``, exists only with weak supervision) or
    # ``key=a|b``, the values of a setting that read it (Sim2Real reads healthy slices only for some hosts)
    gt_switches_when: Mapping[str, str] = field(default_factory=dict)
    # key prefixes of the protocol layer that reach this method; None: all of them. A protocol is
    # CLISC's (its paper or its public code): a baseline follows its own code under every protocol, so
    # only a protocol's ``baselines.*`` keys (none today) reach it
    protocol_scope: tuple[str, ...] | None = None


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.name in METHODS and METHODS[method.name] != method:
        raise ValueError(f"method {method.name!r} is already registered differently")
    METHODS[method.name] = method
    return method


_plugins_loaded = False


def all_methods() -> dict[str, Method]:
    """The registry, with the plugin packages' methods (the baselines) registered."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        for plugin in PLUGINS:
            importlib.import_module(plugin)
    return METHODS


def get_method(name: str) -> Method:
    methods = all_methods()
    try:
        return methods[name]
    except KeyError:
        raise CliscError(f"unknown method {name!r}; known: {', '.join(sorted(methods))}") from None


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
