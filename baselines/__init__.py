"""The other rows of Table 1, registered in CLISC's method registry as data.

Each baseline is a module of this package exposing an output function ``segment(ctx, split) ->
(key, {case_id: XxYxZ uint8 mask})`` over the same data layer, split, stage cache, scorer and MLflow
tracking as CLISC; its settings are a section of ``baselines.settings.BaselineSettings``. Nothing heavy
is imported here: an output module is imported only when its method runs.

``gt_switches`` names the settings through which a baseline can read ground truth (``HEALTHY`` for
the anomaly-detection rows; CLISC's ``gt.select_checkpoints_on_gt`` for MedCLIP-SAM's weakly
supervised U-Net, only when that U-Net exists: ``gt_switches_when``): a run that turns one on is
tagged ``label_free=false``. ``tests/pipeline/test_gt_tags.py`` runs every method under every switch
without any segmentation file and checks that each read of ground truth is tagged.

A baseline runs its own settings under every protocol: the ``paper`` and ``official`` protocols are
CLISC's paper and CLISC's public code, so only their ``baselines.*`` keys (none today) and the
scoring conventions ``evaluation.*`` (every row of a table is scored alike) reach a baseline
(``OWN``, its ``protocol_scope``); what a baseline shares with CLISC (the zero-shot slice
labels of its gate or healthy slices, SAM's input, the U-Net's inference) is a setting of its own
in ``baselines.settings``.
"""
from __future__ import annotations

from clisc.pipeline.methods import Method, register_method

HEALTHY = "baselines.healthy_source"
# the protocol keys that reach a baseline: its own, and the scoring conventions (the table's, not a method's)
OWN = ("baselines.", "evaluation.")

for _method in (
    Method("salip", "baselines.salip:segment", "SaLIP",
           gt_switches=("baselines.salip.slices", "baselines.salip.tta_on_gt"), protocol_scope=OWN),
    Method("flair_threshold", "baselines.flair_threshold:segment", "FLAIR threshold", gt_switches=(),
           protocol_scope=OWN),
    Method("medclip_sam", "baselines.medclip_sam:segment", "MedCLIP-SAM",
           gt_switches=("baselines.medclip_sam.slices", "gt.select_checkpoints_on_gt"),
           # its weakly supervised U-Net keeps the epoch of best validation Dice under this switch
           gt_switches_when={"gt.select_checkpoints_on_gt": "baselines.medclip_sam.weak_supervision"},
           protocol_scope=OWN),
    Method("amcons", "baselines.amcons:segment_amcons", "AMCons", gt_switches=(HEALTHY,), protocol_scope=OWN),
    Method("gradcamcons", "baselines.amcons:segment_gradcamcons", "GradCAMCons", gt_switches=(HEALTHY,),
           protocol_scope=OWN),
    Method("3d_if", "baselines.implicit_field:segment", "3D IF", gt_switches=(HEALTHY,), protocol_scope=OWN),
    Method("sim2real", "baselines.sim2real:segment", "Sim2Real", gt_switches=(HEALTHY, "baselines.sim2real.host_slices"),
           gt_switches_when={HEALTHY: "baselines.sim2real.host_slices=healthy|healthy_strict"}, protocol_scope=OWN),
):
    register_method(_method)
