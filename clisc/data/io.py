"""Load one BraTS case (FLAIR + segmentation) and validate it; every problem is a one-line DataError.

Orientation: the 2D stages slice ``vol[:, :, z]`` and assume BraTS's voxel order, axis codes
``BRATS_AXCODES`` = ("L", "P", "S") (nibabel ``aff2axcodes``: x towards the left, y towards
posterior, z towards superior; every BraTS 2018/2020/2021 file has the affine diag(-1, -1, 1)).
A file stored in any other axis order or direction is reoriented on load (axes permuted and
flipped, no resampling) so that ``[:, :, z]`` is an axial slice; the case keeps its native codes
(``RawCase.axcodes``) so outputs can be written back in the file's own grid
(``clisc.data.native``). An affine without a clear axis per voxel dimension is refused.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform
from nibabel.spatialimages import HeaderDataError

from clisc.data.discovery import CaseFiles
from clisc.data.layouts import LAYOUTS, Layout
from clisc.errors import DataError

BRATS_AXCODES = ("L", "P", "S")
VALID_LABELS = (0, 1, 2, 4)
AFFINE_ATOL = 1e-3
_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, ImageFileError, HeaderDataError)


@dataclass
class RawCase:
    """A case: FLAIR ``XxYxZ`` float32, raw labels ``XxYxZ`` uint8 (or None), their grid.

    Arrays, ``affine`` and ``spacing`` are in BraTS orientation (``BRATS_AXCODES``) unless loaded
    with ``reorient=False``; ``axcodes`` are the axis codes of the file as stored.
    """

    case_id: str
    flair: np.ndarray
    seg: np.ndarray | None
    affine: np.ndarray
    spacing: tuple[float, float, float]
    files: CaseFiles
    axcodes: tuple[str, str, str] = BRATS_AXCODES


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read_nifti(path: Path, channel: int | None = None,
                channels: int | None = None) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Header and voxel array (as stored, scaling applied) of a 3D NIfTI file ``XxYxZ``.

    With ``channel``, the file must be 4D ``XxYxZxC`` with ``C == channels`` and only that channel
    is read: nibabel's ``dataobj[..., c]`` reads one channel's bytes (a seek in an uncompressed
    .nii; in a .nii.gz it decompresses the stream up to the end of channel ``c``, but keeps only
    that channel in memory, in the file's dtype).
    """
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        image = nib.load(path)
        if channel is not None:
            shape = tuple(image.shape)
            if len(shape) != 4 or shape[3] != channels:
                raise DataError(path, f"expected a 4D volume with {channels} channels (dataset.json 'modality'), "
                                      f"got shape {shape}")
            data = np.asanyarray(image.dataobj[..., channel])
        else:
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


MAX_OBLIQUE_DEGREES = 35.0  # a voxel axis further than this from every scanner axis is refused


def axis_codes(path: Path, affine: np.ndarray) -> tuple[str, str, str]:
    """nibabel axis codes of ``affine``; DataError when the voxel axes are degenerate or a voxel
    axis lies more than ``MAX_OBLIQUE_DEGREES`` from every scanner axis (no clear axial slice)."""
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(columns, axis=0)
    if not np.all(norms > 0) or abs(np.linalg.det(columns / norms)) < 1e-3:
        raise DataError(path, "affine has no clear voxel axes (degenerate matrix); cannot tell axial slices")
    cosines = np.abs(columns / norms).max(axis=0)
    worst = float(np.degrees(np.arccos(np.clip(cosines.min(), 0.0, 1.0))))
    codes = nib.aff2axcodes(affine)
    if worst > MAX_OBLIQUE_DEGREES or None in codes or len(set(codes)) != 3:
        raise DataError(path, f"affine has no clear voxel axes (a voxel axis {worst:.0f} degrees oblique); "
                              "cannot tell axial slices")
    return tuple(str(c) for c in codes)  # type: ignore[return-value]


def to_brats_orientation(codes: tuple[str, str, str]) -> np.ndarray:
    """nibabel orientation transform (``3x2``) taking arrays with axis ``codes`` to ``BRATS_AXCODES``."""
    return ornt_transform(axcodes2ornt(codes), axcodes2ornt(BRATS_AXCODES))


def from_brats_orientation(codes: tuple[str, str, str]) -> np.ndarray:
    """The inverse of :func:`to_brats_orientation`: BraTS-ordered arrays back to axis ``codes``."""
    return ornt_transform(axcodes2ornt(BRATS_AXCODES), axcodes2ornt(codes))


def _reoriented(ornt: np.ndarray, affine: np.ndarray, shape: tuple[int, ...],
                spacing: tuple[float, float, float]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Affine and spacing of an ``XxYxZ`` grid of ``shape`` after ``apply_orientation(., ornt)``."""
    new_spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(ornt):
        new_spacing[int(target)] = spacing[axis]
    return affine @ inv_ornt_aff(ornt, shape), tuple(new_spacing)  # type: ignore[return-value]


def whole_tumour(seg: np.ndarray) -> np.ndarray:
    """Whole-tumour mask ``XxYxZ`` uint8 (1 where any tumour label, 0 elsewhere) of a raw BraTS seg."""
    return (seg > 0).astype(np.uint8)


def _validated_labels(path: Path, seg: np.ndarray, layout: Layout = LAYOUTS["brats2020"]) -> np.ndarray:
    """Labels as BraTS uint8 ``XxYxZ`` (values in ``VALID_LABELS``), mapped by ``layout.label_map``;
    DataError on NaN or values outside the layout's map."""
    if seg.dtype.kind == "f":
        if not np.isfinite(seg).all():
            raise DataError(path, "segmentation holds NaN or infinite values")
        if not np.array_equal(seg, np.round(seg)):
            raise DataError(path, "segmentation holds non-integer label values")
    expected = tuple(sorted(layout.label_map))
    low, high = seg.min(), seg.max()
    if low < 0 or high > 255:
        raise DataError(path, f"unknown label value {low if low < 0 else high}; expected {expected} ({layout.name})")
    labels = seg.astype(np.uint8)
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=256))
    unknown = sorted(set(present.tolist()) - set(expected))
    if unknown:
        raise DataError(path, f"unknown label value(s) {unknown}; expected {expected} ({layout.name})")
    if all(k == v for k, v in layout.label_map.items()):
        return labels
    table = np.zeros(256, dtype=np.uint8)
    for raw, brats in layout.label_map.items():
        table[raw] = brats
    return table[labels]


def load_case(files: CaseFiles, require_seg: bool = True, reorient: bool = True) -> RawCase:
    """Read and validate a case. The seg is loaded whenever ``files.seg`` is set.

    Raises DataError (naming the file) for an unreadable or truncated file, a volume that is not
    3D, NaN/inf or all-zero FLAIR, a missing seg (when required), unknown labels, a FLAIR/seg
    shape or affine mismatch, and an affine without clear axes. With ``reorient`` (the default)
    the arrays, affine and spacing are returned in BraTS orientation (module docstring).
    """
    layout = LAYOUTS[files.layout]
    flair_image, flair_raw = _read_nifti(files.flair, files.channel, layout.channels)
    flair = flair_raw.astype(np.float32, copy=False)
    if not np.isfinite(flair).all():
        raise DataError(files.flair, "image holds NaN or infinite voxels")
    if not flair.any():
        raise DataError(files.flair, "image is all zeros")
    affine = np.asarray(flair_image.affine, dtype=np.float64)
    seg = None
    if files.seg is None:
        if require_seg:
            raise DataError(files.flair.parent, f"no segmentation file {missing_seg_path(files).name}")
    else:
        seg_image, seg_raw = _read_nifti(files.seg)
        if seg_raw.shape != flair.shape:
            raise DataError(files.seg, f"shape {seg_raw.shape} differs from the FLAIR's {flair.shape}")
        if not np.allclose(seg_image.affine, affine, atol=AFFINE_ATOL):
            raise DataError(files.seg, "affine differs from the FLAIR's (images not on the same grid)")
        seg = _validated_labels(files.seg, seg_raw, layout)
    codes = axis_codes(files.flair, affine)
    spacing = _spacing(flair_image)
    if reorient and codes != BRATS_AXCODES:
        ornt = to_brats_orientation(codes)
        shape = flair.shape
        flair = np.ascontiguousarray(apply_orientation(flair, ornt))
        seg = None if seg is None else np.ascontiguousarray(apply_orientation(seg, ornt))
        affine, spacing = _reoriented(ornt, affine, shape, spacing)
    return RawCase(files.case_id, flair, seg, affine, spacing, files, codes)


def missing_seg_path(files: CaseFiles) -> Path:
    """A case's segmentation file: ``files.seg``, else the name it was looked for under
    (``<case>_seg`` with the FLAIR's suffix)."""
    if files.seg is not None:
        return files.seg
    layout = LAYOUTS[files.layout]
    suffix = ".nii.gz" if files.flair.name.endswith(".nii.gz") else ".nii"
    name = layout.seg.format(case=files.case_id) + suffix
    if layout.channels is not None:
        return files.flair.parent.parent / "labelsTr" / name
    return files.flair.with_name(name)


def require_segs(cases: Iterable[CaseFiles], why: str) -> None:
    """DataError naming the first case without a segmentation file: ``why`` (e.g. "the fully
    supervised U-Net") needs ground truth that a label-free dataset does not hold."""
    for files in cases:
        if files.seg is None:
            raise DataError(missing_seg_path(files), f"segmentation file missing; {why} needs ground truth")
