"""Load one BraTS case (FLAIR + segmentation) and validate it; every problem is a one-line DataError."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from clisc.data.discovery import CaseFiles
from clisc.errors import DataError

VALID_LABELS = (0, 1, 2, 4)
AFFINE_ATOL = 1e-3
_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, ImageFileError, HeaderDataError)


@dataclass
class RawCase:
    """A case as stored: FLAIR ``XxYxZ`` float32, raw labels ``XxYxZ`` uint8 (or None), its grid."""

    case_id: str
    flair: np.ndarray
    seg: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    files: CaseFiles


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read_nifti(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Header and voxel array (as stored, scaling applied) of a 3D NIfTI file ``XxYxZ``."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except _READ_ERRORS as err:
        detail = _one_line(err).replace(f"'{path}'", "it").replace(str(path), "it")
        raise DataError(path, f"unreadable NIfTI file ({type(err).__name__}: {detail})") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"expected a 3D volume, got shape {tuple(data.shape)}")
    return image, data


def _spacing(image: nib.Nifti1Image) -> tuple[float, float, float]:
    zooms = image.header.get_zooms()[:3]
    return (float(zooms[0]), float(zooms[1]), float(zooms[2]))


def whole_tumour(seg: np.ndarray) -> np.ndarray:
    """Whole-tumour mask ``XxYxZ`` uint8 (1 where any tumour label, 0 elsewhere) of a raw BraTS seg."""
    return (seg > 0).astype(np.uint8)


def _validated_labels(path: Path, seg: np.ndarray) -> np.ndarray:
    """Raw labels as uint8 ``XxYxZ``; DataError on NaN or values outside ``VALID_LABELS``."""
    if seg.dtype.kind == "f":
        if not np.isfinite(seg).all():
            raise DataError(path, "segmentation holds NaN or infinite values")
        if not np.array_equal(seg, np.round(seg)):
            raise DataError(path, "segmentation holds non-integer label values")
    low, high = seg.min(), seg.max()
    if low < 0 or high > 255:
        raise DataError(path, f"unknown label value {low if low < 0 else high}; expected {VALID_LABELS}")
    labels = seg.astype(np.uint8)
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    unknown = sorted(set(present.tolist()) - set(VALID_LABELS))
    if unknown:
        raise DataError(path, f"unknown label value(s) {unknown}; expected {VALID_LABELS}")
    return labels


def load_case(files: CaseFiles, require_seg: bool = True) -> RawCase:
    """Read and validate a case. The seg is loaded whenever ``files.seg`` is set.

    Raises DataError (naming the file) for an unreadable or truncated file, a volume that is not
    3D, NaN/inf or all-zero FLAIR, a missing seg (when required), unknown labels, and a FLAIR/seg
    shape or affine mismatch.
    """
    flair_image, flair_raw = _read_nifti(files.flair)
    flair = flair_raw.astype(np.float32, copy=False)
    if not np.isfinite(flair).all():
        raise DataError(files.flair, "image holds NaN or infinite voxels")
    if not flair.any():
        raise DataError(files.flair, "image is all zeros")
    affine = np.asarray(flair_image.affine, dtype=np.float64)
    seg = None
    if files.seg is None:
        if require_seg:
            raise DataError(files.flair.parent, f"no segmentation file {files.case_id}_seg.nii[.gz]")
    else:
        seg_image, seg_raw = _read_nifti(files.seg)
        if seg_raw.shape != flair.shape:
            raise DataError(files.seg, f"shape {seg_raw.shape} differs from the FLAIR's {flair.shape}")
        if not np.allclose(seg_image.affine, affine, atol=AFFINE_ATOL):
            raise DataError(files.seg, "affine differs from the FLAIR's (images not on the same grid)")
        seg = _validated_labels(files.seg, seg_raw)
    return RawCase(files.case_id, flair, seg, affine, _spacing(flair_image), files)
