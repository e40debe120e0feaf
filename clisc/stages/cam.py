"""Stage 3: Layer-CAM of the tumour class (Jiang et al., TIP 2021), binarisation, 3D post-processing.

For a target layer with activation ``A`` (BxKxhxw) and gradient ``G = dY_c/dA`` of the class score
(the pre-softmax logit) ``Y_c``: ``CAM = ReLU(sum_k ReLU(G_k) * A_k)``, normalised to [0, 1] per
image by min-max (a constant map -> 0, as in ``pytorch_grad_cam`` which the code uses), then
upsampled bilinearly (half-pixel centres, like ``cv2.resize``). Several layers are fused by the
element-wise maximum of their normalised, upsampled CAMs.

Target layers (``cam.layers``) are ResNet50 module names; for a 224 px input: ``layer1`` 256 x 56^2,
``layer2`` 512 x 28^2, ``layer3`` 1024 x 14^2 (the public code's only layer), ``layer4``
2048 x 7^2 (the last, not "intermediate").

Binarisation (the ROI): ``cam >= t`` with ``t`` fixed (``cam.threshold``, 0.5 by default), chosen by
Otsu's rule on the CAM's positive values (per slice or per volume, label-free), or, under the
public code's ground-truth switch, the grid value with the best validation Dice
(:func:`best_threshold`). The code's 3D clean-up (:func:`postprocess_cam_volume`) is a switch.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn


def _normalise(cam: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of ``Bxhxw`` to [0, 1]; a constant map becomes 0."""
    flat = cam.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    span = flat.max(dim=1).values[:, None, None] - low
    return torch.where(span > 0, (cam - low) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(cam))


def _capture(store: dict[str, torch.Tensor], name: str) -> Callable:
    """Forward hook keeping the module's output and handing a clone downstream, so that later
    in-place operations cannot alter the captured activation."""
    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        store[name] = output
        return output.clone()
    return hook


def layer_cam(model: nn.Module, images: torch.Tensor, layers: Sequence[str] = ("layer3",),
              class_index: int = 1, out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Layer-CAM ``BxHxW`` float32 in [0, 1] of ``class_index`` for images ``Bx3xHxW``.

    ``layers`` name submodules (``model.named_modules()``); ``out_size`` defaults to the input's
    ``(H, W)``. The model runs in eval mode (its mode is restored afterwards); gradients are taken
    with ``torch.autograd.grad``, so parameter ``.grad`` stays untouched, and the hooks are removed
    even when the forward pass fails.
    """
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing or not layers:
        raise ValueError(f"unknown or no layers {missing or list(layers)}; model has "
                         f"{[n for n, _ in model.named_children()]}")
    out_size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
    device = next(model.parameters()).device
    activations: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(_capture(activations, name)) for name in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            inputs = images.detach().to(device).float().requires_grad_(True)
            scores = model(inputs)[:, class_index].sum()  # images are independent in eval mode
            captured = [activations[name] for name in layers]
            gradients = torch.autograd.grad(scores, captured)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    fused = None
    with torch.no_grad():
        for activation, gradient in zip(captured, gradients):
            cam = torch.relu((torch.relu(gradient) * activation).sum(dim=1)).float()  # Bxhxw
            cam = _normalise(cam)[:, None]
            if tuple(cam.shape[-2:]) != out_size:
                cam = F.interpolate(cam, size=out_size, mode="bilinear", align_corners=False)
            fused = cam if fused is None else torch.maximum(fused, cam)
    return fused[:, 0].clamp(0.0, 1.0).cpu().numpy().astype(np.float32)


THRESHOLD_RULES = ("fixed", "otsu_slice", "otsu_volume")


def cam_to_mask(cam: np.ndarray, threshold: float) -> np.ndarray:
    """Binary ROI ``HxW`` bool: ``cam >= threshold`` (the code's rule)."""
    return np.asarray(cam) >= threshold


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float | None:
    """Otsu's threshold of ``values`` in [0, 1] (a 256-bin histogram over [0, 1]): the bin edge
    maximising the between-class variance, the lower class being ``< t``. None when fewer than
    two distinct bins are occupied (nothing to split)."""
    counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins, range=(0.0, 1.0))
    if np.count_nonzero(counts) < 2:
        return None
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)[:-1].astype(np.float64)  # classes split before bin i + 1
    weight_high = counts.sum() - weight_low
    mass_low = np.cumsum(counts * centres)[:-1]
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (np.sum(counts * centres) - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[1:-1][int(np.argmax(between))])


def binarise_cams(cams: np.ndarray, rule: str = "fixed", threshold: float = 0.5) -> np.ndarray:
    """ROI masks ``XxYxZ`` bool of a volume's CAMs ``XxYxZ`` (axial slices ``[:, :, z]``).

    "fixed": ``cam >= threshold``. "otsu_slice" / "otsu_volume": ``cam >= t`` with ``t`` Otsu's
    threshold of the positive CAM values of each slice / of the whole volume (zeros are the
    slices without a CAM and the ReLU'd background: counting them would split "zero" from
    "anything"); a slice or volume whose positive values cannot be split keeps them all.
    """
    cams = np.asarray(cams, dtype=np.float32)
    if rule == "fixed":
        return cams >= threshold
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"unknown CAM threshold rule {rule!r}; known: {', '.join(THRESHOLD_RULES)}")
    blocks = [cams[:, :, z:z + 1] for z in range(cams.shape[2])] if rule == "otsu_slice" else [cams]
    masks = []
    for block in blocks:
        positive = block[block > 0]
        t = otsu_threshold(positive) if positive.size else None
        masks.append((block >= t) if t is not None else block > 0)
    return np.concatenate(masks, axis=2) if masks else np.zeros(cams.shape, bool)


def best_threshold(cams: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                   grid: Sequence[float]) -> tuple[float, list[float]]:
    """The public code's ground-truth threshold search (``find_best_binary_threshold``).

    For each ``t`` of ``grid``: mean Dice of ``cam >= t`` (no opening, no component filter) against
    the labels (``XxYxZ`` each), over the volumes whose label is not empty; the first best ``t``
    wins. Returns ``(t, mean Dice per grid value)``. (The code starts from ``t = 0`` and keeps it
    when every Dice is 0; here the first grid value is kept instead.)
    """
    from clisc.evaluation.metrics import dice

    pairs = [(np.asarray(c), np.asarray(g) > 0) for c, g in zip(cams, labels) if np.any(g)]
    scores = [float(np.mean([dice(c >= t, g) for c, g in pairs])) if pairs else 0.0 for t in grid]
    return float(grid[int(np.argmax(scores))]), scores


def postprocess_cam_volume(mask: np.ndarray, opening: bool = True,
                           component_ratio: float = 3.0) -> np.ndarray:
    """The code's 3D clean-up of stacked CAM masks ``XxYxZ`` -> bool ``XxYxZ``.

    Binary opening with the full 3x3x3 structuring element (outside the volume counts as 0), then
    26-connected components; a component is kept when ``size >= largest / component_ratio``
    (the code: ratio 3, i.e. at least a third of the largest component).
    """
    cube = np.ones((3, 3, 3), dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if opening:
        mask = ndimage.binary_opening(mask, structure=cube)
    components, count = ndimage.label(mask, structure=cube)
    if count <= 1:
        return mask
    sizes = np.bincount(components.ravel())[1:]
    keep = np.concatenate([[False], sizes >= sizes.max() / component_ratio])
    return keep[components]
