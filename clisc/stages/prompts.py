"""SAM prompts (box, foreground and background points) from a 2D ROI mask, as in the paper's section 2.2.

COORDINATES. Our 2D slices are ``HxW`` arrays taken as ``volume[:, :, z].T``
(``clisc.stages.slice_input.axial_slices``, as the public code's ``image_3d[z, :, :]``), so a
slice's rows are the volume's Y axis (anterior at the top) and its columns the X axis. SAM works in image (x, y)
coordinates where x is the COLUMN index and y the ROW index. A pixel ``mask[r, c]`` is therefore the
SAM point ``[c, r]``, and a box is ``[x0, y0, x1, y1] = [col_min, row_min, col_max, row_max]``.

Variants (``PROMPT_VARIANTS``):

- "box+points" (paper): the ROI's bounding box (dilated by ``box_dilation`` pixels and clipped to the
  image), its centre as a foreground point and its 4 corners as background points.
- "points": the same 5 points without the box (paper, Table 2 "SAM (5 points)").
- "box": the box alone (paper, Table 2 "SAM (box)").
- "official" (public code, train/step2_sam_inference.py): the box dilated by ``box_dilation`` (the
  code uses 10; its upper corner is clipped at the image size W, H rather than the last pixel);
  5 foreground points chosen among the pixels whose ``cam x image`` value is at least
  ``min + 0.6 x (max - min)`` of that product over the slice (the 7th edge of its 10-bin histogram,
  about 0.6 x max since the product is 0 outside the ROI): the first, last, n/2-th, n/3-th and
  2n/3-th of them in row-major order; plus the 4 corners of the dilated box as background points.
  The code's ``cam`` is its binarised, post-processed CAM (``cam_post``), i.e. the ROI mask itself:
  the pipeline passes no ``cam``, so the points are ranked on ROI x image (a continuous ``cam``
  remains possible for experiments).

Paper ambiguity: the paper prompts with "the bounding box of the ROIs derived from the CAM". When the
ROI mask has several connected components we use ONE box around all of them (as the public code does
with ``np.where`` over the whole slice), not one box per component.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROMPT_VARIANTS = ("box+points", "points", "box", "official")

OFFICIAL_POINT_FRACTION = 0.6  # code: bins[-5] of a 10-bin histogram of cam x image


@dataclass
class SamPrompt:
    """Prompts for one slice in SAM's (x = column, y = row) pixel coordinates.

    ``box``: ``(4,)`` ``[x0, y0, x1, y1]`` or None; ``points``: ``(N, 2)`` ``[x, y]`` (N may be 0);
    ``point_labels``: ``(N,)``, 1 = foreground, 0 = background.
    """

    box: np.ndarray | None
    points: np.ndarray
    point_labels: np.ndarray

    @property
    def has_points(self) -> bool:
        return len(self.points) > 0


@dataclass(frozen=True)
class PromptSettings:
    """Which prompt variant to build and how many pixels to dilate the ROI box by.

    The public code dilates by 10 for the CAM-prompted pass and by 0 in the S3F pass.
    """

    variant: str = "box+points"
    box_dilation: int = 0

    def __post_init__(self) -> None:
        if self.variant not in PROMPT_VARIANTS:
            raise ValueError(f"unknown prompt variant {self.variant!r}; known: {', '.join(PROMPT_VARIANTS)}")
        if self.box_dilation < 0:
            raise ValueError(f"box_dilation must be >= 0, got {self.box_dilation}")


def roi_box(mask: np.ndarray, dilation: int = 0, clip_to_size: bool = False) -> np.ndarray | None:
    """Bounding box ``[x0, y0, x1, y1]`` (x = column) of all True pixels of an ``HxW`` mask, or None.

    The box is dilated by ``dilation`` pixels on every side and clipped to the image: to the last pixel
    ``(W - 1, H - 1)`` by default, to ``(W, H)`` with ``clip_to_size`` (the public code's rule).
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    height, width = mask.shape
    x_max, y_max = (width, height) if clip_to_size else (width - 1, height - 1)
    return np.array(
        [
            max(0, cols.min() - dilation),
            max(0, rows.min() - dilation),
            min(x_max, cols.max() + dilation),
            min(y_max, rows.max() + dilation),
        ],
        dtype=np.float64,
    )


def box_corners(box: np.ndarray) -> np.ndarray:
    """The 4 corners ``(4, 2)`` of box ``[x0, y0, x1, y1]``, in the code's order (x0y0, x0y1, x1y0, x1y1)."""
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x0, y1], [x1, y0], [x1, y1]], dtype=np.float64)


def official_foreground_points(mask: np.ndarray, cam: np.ndarray | None, image: np.ndarray) -> np.ndarray:
    """The public code's 5 foreground points ``(5, 2)`` ``[x, y]`` from ``cam x image`` (both ``HxW``).

    The image is min-max scaled to [0, 1] over the slice; ``cam`` defaults to the mask itself (the code
    reads its binary, post-processed CAM). Candidates are the pixels whose product reaches
    ``min + 0.6 x (max - min)``; when the product is constant (nothing to rank) the mask pixels are.
    """
    image = np.asarray(image, dtype=np.float64)
    span = image.max() - image.min()
    scaled = (image - image.min()) / span if span > 0 else np.zeros_like(image)
    weight = (mask.astype(np.float64) if cam is None else np.asarray(cam, dtype=np.float64)) * scaled
    low, high = weight.min(), weight.max()
    if high > low:
        candidates = weight >= low + OFFICIAL_POINT_FRACTION * (high - low)
    else:
        candidates = mask
    rows, cols = np.nonzero(candidates)
    n = rows.size
    picks = [0, n - 1, int(n / 2), int(n / 3), int(n / 3 * 2)]
    return np.array([[cols[i], rows[i]] for i in picks], dtype=np.float64)


def prompts_from_mask(
    mask: np.ndarray,
    settings: PromptSettings = PromptSettings(),
    cam: np.ndarray | None = None,
    image: np.ndarray | None = None,
) -> SamPrompt | None:
    """SAM prompts for one ``HxW`` ROI mask (see the module docstring), or None when it is empty.

    ``cam`` and ``image`` (``HxW``) are used only by the "official" variant, which needs ``image``.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {mask.shape}")
    official = settings.variant == "official"
    box = roi_box(mask, settings.box_dilation, clip_to_size=official)
    if box is None:
        return None
    corners = box_corners(box)
    if official:
        if image is None:
            raise ValueError("the 'official' prompt variant needs the image slice")
        foreground = official_foreground_points(mask, cam, image)
    else:
        foreground = np.array([[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]], dtype=np.float64)
    points = np.concatenate([foreground, corners])
    labels = np.concatenate([np.ones(len(foreground), np.int64), np.zeros(len(corners), np.int64)])
    if settings.variant == "box":
        return SamPrompt(box=box, points=np.zeros((0, 2)), point_labels=np.zeros(0, np.int64))
    if settings.variant == "points":
        return SamPrompt(box=None, points=points, point_labels=labels)
    return SamPrompt(box=box, points=points, point_labels=labels)
