"""The CAM -> SAM chain carries signal in the tiny profile: with the oracle slice labels (the tiny random
CLIP calls every slice normal, which would leave the chain with nothing to prompt), the training slices
with tumour get CAMs, their ROIs prompt SAM, and SAM's pseudo-labels are non-empty on those slices only."""
from __future__ import annotations

import numpy as np

from clisc.pipeline.context import RunContext
from clisc.pipeline.settings import resolve_settings
from clisc.pipeline.steps_cam import cam_rois, gt_slice_labels
from clisc.pipeline.steps_seg import sam_pseudo_labels


def test_oracle_labels_drive_cams_rois_and_sam_masks(synthetic_dataset, tmp_path):
    settings = resolve_settings("paper", "tiny", {"slices.labels": "ground_truth"})
    ctx = RunContext(synthetic_dataset, settings, 0, tmp_path, progress=False, echo=lambda _: None)
    _, rois = cam_rois(ctx, "train")
    _, masks = sam_pseudo_labels(ctx, "train")
    volumes = list(ctx.volumes("train"))
    prompted = 0
    for volume in volumes:
        tumour_slices = gt_slice_labels(volume).astype(bool)
        roi = rois[volume.case_id]["mask"].astype(bool)
        has_cam = np.abs(rois[volume.case_id]["cam"].astype(np.float32)).reshape(-1, roi.shape[2]).max(0) > 0
        assert not has_cam[~tumour_slices].any()  # the paper's gate: CAMs only on labelled-tumour slices
        with_roi = roi.reshape(-1, roi.shape[2]).any(0)
        with_mask = np.asarray(masks[volume.case_id], bool).reshape(-1, roi.shape[2]).any(0)
        assert not with_mask[~with_roi].any()  # SAM is prompted only where a ROI is
        prompted += int(with_mask.sum())
    assert prompted > 0  # the chain produced pseudo-labels
