"""MedCLIP-SAM's post-processing of a saliency map (HealthX-Lab/MedCLIP-SAM @ 61af7dc: ``crf/densecrf_sal.py``
and ``segment-anything/prompt_sam.py``; read, not copied): a fully connected CRF (Kraehenbuehl &
Koltun 2011, through ``pydensecrf2``) turns the map into a mask, and the largest region's box
prompts SAM.

CRF: two labels; unary energies from the saliency ``s``: background ``-log(1 - s + eps) / (tau x
sigmoid(1 - s))``, foreground ``-log(s + eps) / (tau x sigmoid(s))``; a Gaussian pairwise term
(``sxy`` 3, compat 3) and a bilateral one on the image (``sxy`` 60, ``srgb`` 5, compat 5); one
mean-field iteration; the label of higher probability wins.

Box: the original takes ``cv2.findContours`` of the mask, the contour of largest ``contourArea`` and
its ``boundingRect`` ``(x, y, w, h)`` -> ``[x, y, min(x + w, W - 1), min(y + h, H - 1)]``. Here the
region is the largest 8-connected component by pixel count (OpenCV is not a dependency; the two
differ only between regions of nearly equal size), boxed by the same rule. An empty mask gives no
box (the original prompts SAM with the whole image, which on a volume would mark tumour-free slices).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from clisc.errors import CliscError

INSTALL_HINT = "pip install pydensecrf2 (or pip install -e '.[crf]')"


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise CliscError(f"MedCLIP-SAM's dense CRF needs the pydensecrf2 package: {INSTALL_HINT}") from None
    return dcrf


def crf_unary(saliency: np.ndarray, tau: float = 1.05, epsilon: float = 1e-8) -> np.ndarray:
    """``2x(H*W)`` float32 unary energies (background, foreground) of an ``HxW`` saliency in [0, 1]."""
    s = np.clip(np.asarray(saliency, dtype=np.float64), 0.0, 1.0).ravel()
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    background = -np.log(1.0 - s + epsilon) / (tau * sigmoid(1.0 - s))
    foreground = -np.log(s + epsilon) / (tau * sigmoid(s))
    return np.ascontiguousarray(np.stack([background, foreground]), dtype=np.float32)


def dense_crf(image: np.ndarray, saliency: np.ndarray, iterations: int = 1, gaussian_sxy: float = 3.0,
              bilateral_sxy: float = 60.0, bilateral_srgb: float = 5.0, tau: float = 1.05,
              epsilon: float = 1e-8) -> np.ndarray:
    """``HxW`` bool mask of an ``HxWx3`` uint8 image from its ``HxW`` saliency in [0, 1] (see the
    module docstring for the energies)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != np.shape(saliency):
        raise ValueError(f"expected an HxWx3 image and an HxW saliency, got {image.shape} and {np.shape(saliency)}")
    dcrf = _densecrf()
    height, width = image.shape[:2]
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(crf_unary(saliency, tau, epsilon))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=3)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=image, compat=5)
    q = np.asarray(crf.inference(iterations))
    return (q.argmax(axis=0) == 1).reshape(height, width)


def largest_region_box(mask: np.ndarray) -> np.ndarray | None:
    """SAM box ``[x0, y0, x1, y1]`` (x = column) of the largest 8-connected region of an ``HxW``
    mask by the original's ``boundingRect`` rule, or None for an empty mask."""
    labels, count = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3), bool))
    if count == 0:
        return None
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rows, cols = np.nonzero(labels == largest)
    height, width = labels.shape
    return np.array([cols.min(), rows.min(), min(cols.max() + 1, width - 1), min(rows.max() + 1, height - 1)],
                    dtype=np.float64)
