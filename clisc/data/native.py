"""Outputs in the stored file's own grid ("native space") and the ground truth they are scored on.

A mask predicted on a preprocessed grid (``Volume``: cropped, maybe resampled, BraTS-oriented) is
put back by :func:`to_native`: resampled to the crop box by nearest neighbour (the inverse of the
grid-aligned zoom in ``clisc.data.preprocessing``), placed into the full volume, and reoriented to
the file's axis codes. :func:`save_native_mask` writes it as uint8 NIfTI with the FLAIR's affine
and header, so it opens on the image in ITK-SNAP and any tool scores it. Runs score these native
masks against :func:`native_ground_truth` (the whole tumour of the stored seg, never resampled),
exactly what ``clisc eval`` reads.
"""
from __future__ import annotations

import gzip
import io
import logging
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation
from scipy import ndimage

from clisc.cache import atomic_write_bytes
from clisc.data.discovery import CaseFiles
from clisc.data.io import BRATS_AXCODES, from_brats_orientation, load_case, whole_tumour
from clisc.data.preprocessing import Volume, input_fingerprint
from clisc.errors import DataError

log = logging.getLogger(__name__)

GROUND_TRUTH_FORMAT = 1  # bump when the cached ground truth changes meaning


def to_native(volume: Volume, mask: np.ndarray) -> np.ndarray:
    """``mask`` on ``volume``'s grid (``XxYxZ`` as ``volume.image``) -> uint8 0/1 mask in the stored
    file's voxel grid (``original_shape`` in the file's axis order): resampling, crop and
    reorientation undone."""
    mask = np.asarray(mask)
    if mask.shape != volume.image.shape:
        raise ValueError(f"{volume.case_id}: mask shape {mask.shape} differs from the volume's {volume.image.shape}")
    box = tuple(stop - start for start, stop in volume.crop)
    binary = (mask > 0).astype(np.uint8)
    if binary.shape != box:
        zoom = np.array(box) / np.array(binary.shape)
        binary = ndimage.zoom(binary, zoom, order=0, mode="nearest", grid_mode=True)
        if binary.shape != box:  # zoom rounds the output shape; it is exact for shapes from _resample
            raise ValueError(f"{volume.case_id}: cannot resample {mask.shape} back to the crop box {box}")
    full = np.zeros(volume.original_shape, dtype=np.uint8)
    full[tuple(slice(start, stop) for start, stop in volume.crop)] = binary
    if tuple(volume.axcodes) != BRATS_AXCODES:
        full = np.ascontiguousarray(apply_orientation(full, from_brats_orientation(tuple(volume.axcodes))))
    return full.astype(np.uint8, copy=False)


def save_native_mask(path: str | Path, mask: np.ndarray, files: CaseFiles, description: str = "clisc") -> Path:
    """Write a native-grid mask (from :func:`to_native`) as uint8 NIfTI with the FLAIR's affine and
    header (``description`` in its descrip field); written atomically."""
    path = Path(path)
    reference = nib.load(files.flair)
    mask = np.asarray(mask, dtype=np.uint8)
    if mask.shape != reference.shape[:3]:
        raise ValueError(f"{files.case_id}: mask shape {mask.shape} differs from {files.flair.name}'s {reference.shape}")
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(mask, reference.affine, header)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"], image.header["cal_max"] = 0, 1
    image.header["descrip"] = description[:79].encode()
    data = image.to_bytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
    return path


def _ground_truth_path(cache_root: Path, files: CaseFiles) -> Path:
    return Path(cache_root) / "ground_truth" / f"v{GROUND_TRUTH_FORMAT}" / f"{files.case_id}-{input_fingerprint(files)}.npz"


def native_ground_truth(files: CaseFiles, cache_root: str | Path | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """Whole-tumour mask ``XxYxZ`` bool in the stored file's grid and its spacing (mm), as ``clisc
    eval`` reads them; DataError naming the file when the case has no (valid) segmentation.

    With ``cache_root`` the mask is kept (bit-packed) under ``cache_root/ground_truth/``, keyed by
    the input files' path, size and mtime, so repeated scoring reads no NIfTI.
    """
    path = None if cache_root is None or files.seg is None else _ground_truth_path(Path(cache_root), files)
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as npz:
                shape = tuple(int(n) for n in npz["shape"])
                mask = np.unpackbits(npz["bits"], count=int(np.prod(shape))).reshape(shape).astype(bool)
                return mask, tuple(float(s) for s in npz["spacing"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("%s: unreadable cached ground truth (%s); reading the seg again", path, err)
    raw = load_case(files, require_seg=True, reorient=False)
    if raw.seg is None:  # pragma: no cover - load_case raises first
        raise DataError(files.flair.parent, "no segmentation file")
    mask = whole_tumour(raw.seg).astype(bool)
    if path is not None:
        buffer = io.BytesIO()
        np.savez(buffer, bits=np.packbits(mask.ravel()), shape=np.array(mask.shape), spacing=np.array(raw.spacing))
        atomic_write_bytes(path, buffer.getvalue())
    return mask, raw.spacing
