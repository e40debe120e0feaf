"""Dice and HD95 of binary masks, with one explicit rule for empty masks.

Masks are ``XxYxZ`` arrays (bool, or any dtype where non-zero is object); ``spacing`` is the voxel
size ``(sx, sy, sz)`` in mm. Any number of dimensions works as long as ``spacing`` matches it.

HD95 reproduces ``medpy.metric.binary.hd95(pred, gt, voxelspacing=spacing)`` exactly: the surface of
a mask is the mask XOR its binary erosion (connectivity-1 structure, outside the array counts as
background), each surface voxel of one mask gets its Euclidean distance (mm) to the nearest surface
voxel of the other, and the result is the 95th percentile (linear interpolation) of both directions
stacked. It is fast because it never touches the whole volume beyond finding the masks' joint
bounding box: the surfaces are computed inside that box (padded by one background voxel), and the
nearest-surface distances come from a k-d tree over the surface voxels, recomputed from the integer
offsets exactly as scipy's EDT computes them.

Empty-mask rule (applied identically to every method; ``empty`` names the case that applied):

- both masks empty (``empty="both"``): Dice 1, HD95 0 mm;
- prediction empty, ground truth not (``empty="pred"``): Dice 0, HD95 ``empty_hd95``;
- ground truth empty, prediction not (``empty="gt"``): Dice 0, HD95 ``empty_hd95``;
- neither empty: ``empty=""``.

``empty_prediction="zero"`` (the ``official`` protocol, ``evaluation.empty_prediction``) replaces the
rule for an empty prediction by the public code's (``calculate_metric_percase`` in ``utils/utils.py``):
Dice 0 and HD95 0 whenever the prediction is empty, whatever the ground truth (both empty included);
the ``empty`` column still says which case applied.

``empty_hd95`` defaults to ``EMPTY_HD95_MM`` = 373.13 mm, the diagonal of a 240x240x155 1 mm BraTS
volume (the largest distance two voxels of that grid can have; BraTS's tooling uses 374). This
differs on purpose from the public CLISC code (medpy with an empty prediction scored HD95 0, which
flatters a method that misses the tumour) and from MONAI (NaN, silently dropped from the mean);
medpy itself raises on an empty mask, and its ``dc`` scores two empty masks 0 where we score 1.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from clisc.errors import CliscError

EMPTY_HD95_MM = 373.13  # sqrt(240^2 + 240^2 + 155^2) = 373.128... mm
EMPTY_RULES = ("", "both", "pred", "gt")
EMPTY_PREDICTION = ("penalty", "zero")  # the suite's rule above; the public code's Dice 0 / HD95 0


@dataclass(frozen=True)
class CaseScore:
    """Scores of one case: Dice in percent (0-100), HD95 in mm, and the empty rule that applied."""

    dsc: float
    hd95: float
    empty: str


def _as_masks(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays of one shape; CliscError when the shapes differ."""
    pred_mask = np.asarray(pred).astype(bool, copy=False)
    gt_mask = np.asarray(gt).astype(bool, copy=False)
    if pred_mask.shape != gt_mask.shape:
        raise CliscError(f"prediction shape {pred_mask.shape} differs from ground-truth shape {gt_mask.shape}")
    if pred_mask.ndim == 0:
        raise CliscError("masks must have at least one dimension")
    return pred_mask, gt_mask


def _as_spacing(spacing: Sequence[float] | float, ndim: int) -> np.ndarray:
    """Voxel spacing as a float64 vector of length ``ndim``; CliscError unless finite and positive."""
    values = np.asarray(spacing, dtype=np.float64).ravel()
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim:
        raise CliscError(f"spacing {tuple(values.tolist())} has {values.size} values for a {ndim}D mask")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise CliscError(f"spacing {tuple(values.tolist())} must be finite and positive")
    return values


def empty_rule(pred: np.ndarray, gt: np.ndarray) -> str:
    """Which empty-mask rule applies: ``"both"``, ``"pred"``, ``"gt"`` or ``""`` (neither empty)."""
    pred_mask, gt_mask = _as_masks(pred, gt)
    return _empty_rule(bool(pred_mask.any()), bool(gt_mask.any()))


def _empty_rule(pred_any: bool, gt_any: bool) -> str:
    if not pred_any and not gt_any:
        return "both"
    if not pred_any:
        return "pred"
    if not gt_any:
        return "gt"
    return ""


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice overlap 2|P&G| / (|P| + |G|) as a fraction in [0, 1]; 1.0 when both masks are empty."""
    pred_mask, gt_mask = _as_masks(pred, gt)
    total = np.count_nonzero(pred_mask) + np.count_nonzero(gt_mask)
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(pred_mask & gt_mask) / total


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box (one slice per axis) holding every non-zero voxel of ``mask``; None if empty."""
    if mask.flags.f_contiguous and not mask.flags.c_contiguous:  # nibabel's layout: scan the transpose
        box = bounding_box(mask.T)
        return box[::-1] if box is not None else None
    rows = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))  # contiguous rows: cheap
    if rows.size == 0:
        return None
    first = slice(int(rows[0]), int(rows[-1]) + 1)
    if mask.ndim == 1:
        return (first,)
    rest = bounding_box(mask[first].any(axis=0))
    return (first, *rest) if rest is not None else None


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface of a bool mask: mask XOR binary_erosion(mask) with the connectivity-1 structure.

    Voxels outside the array count as background, as in ``scipy.ndimage.binary_erosion`` (medpy's
    definition), so a mask touching the array border has its border voxels on the surface.
    """
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    core = (slice(1, -1),) * mask.ndim
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shift in (slice(None, -2), slice(2, None)):
            neighbour = list(core)
            neighbour[axis] = shift
            interior &= padded[tuple(neighbour)]
    return mask & ~interior


def _union_box(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of two non-empty masks together."""
    boxes = [bounding_box(pred), bounding_box(gt)]
    return tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(*boxes))


def _directed_distances(source: np.ndarray, target: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) from each ``source`` voxel to the nearest ``target`` voxel (integer ``N x ndim``)."""
    if source.shape[0] == 0:
        return np.zeros(0)
    tree = cKDTree(target * spacing, leafsize=32, balanced_tree=False, compact_nodes=False)
    _, nearest = tree.query(source * spacing, k=1)
    # recompute from integer offsets in scipy's EDT order, so values match medpy to the last bits
    offsets = (target[nearest] - source).astype(np.float64) * spacing
    return np.sqrt(np.add.reduce(offsets * offsets, axis=1))


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Both directed surface-distance sets (mm) of two non-empty bool masks, stacked (medpy's order
    is irrelevant: only the multiset enters the percentile). Works on their joint bounding box; a
    surface voxel shared by both surfaces contributes a zero without a tree query."""
    box = _union_box(pred, gt)
    pred_surface, gt_surface = surface(pred[box]), surface(gt[box])
    pred_points, gt_points = np.argwhere(pred_surface), np.argwhere(gt_surface)
    pred_shared = gt_surface[tuple(pred_points.T)]  # pred surface voxels on the gt surface: distance 0
    gt_shared = pred_surface[tuple(gt_points.T)]
    return np.concatenate(
        (
            np.zeros(np.count_nonzero(pred_shared) + np.count_nonzero(gt_shared)),
            _directed_distances(pred_points[~pred_shared], gt_points, spacing),
            _directed_distances(gt_points[~gt_shared], pred_points, spacing),
        )
    )


def hd95(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | float,
    empty_hd95: float = EMPTY_HD95_MM,
) -> float:
    """95th-percentile symmetric surface distance in mm (medpy's ``hd95``), with the empty-mask rule.

    ``pred``, ``gt``: ``XxYxZ`` masks of one shape; ``spacing``: ``(sx, sy, sz)`` mm (or one value).
    Returns 0.0 when both masks are empty and ``empty_hd95`` when exactly one is.
    """
    pred_mask, gt_mask = _as_masks(pred, gt)
    voxel_mm = _as_spacing(spacing, pred_mask.ndim)
    rule = _empty_rule(bool(pred_mask.any()), bool(gt_mask.any()))
    if rule == "both":
        return 0.0
    if rule:
        return float(empty_hd95)
    return float(np.percentile(surface_distances(pred_mask, gt_mask, voxel_mm), 95))


def score_case(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float] | float,
    empty_hd95: float = EMPTY_HD95_MM,
    empty_prediction: str = "penalty",
) -> CaseScore:
    """Dice (percent) and HD95 (mm) of one case under the empty-mask rule of this module
    (``empty_prediction``: ``penalty``, the suite's, or ``zero``, the public code's; see above)."""
    if empty_prediction not in EMPTY_PREDICTION:
        raise CliscError(f"empty_prediction {empty_prediction!r}: expected one of {', '.join(EMPTY_PREDICTION)}")
    pred_mask, gt_mask = _as_masks(pred, gt)
    rule = _empty_rule(bool(pred_mask.any()), bool(gt_mask.any()))
    if empty_prediction == "zero" and rule in ("both", "pred"):
        _as_spacing(spacing, pred_mask.ndim)
        return CaseScore(dsc=0.0, hd95=0.0, empty=rule)
    return CaseScore(
        dsc=100.0 * dice(pred_mask, gt_mask),
        hd95=hd95(pred_mask, gt_mask, spacing, empty_hd95=empty_hd95),
        empty=rule,
    )
