"""FLAIR preprocessing (brain crop, clipping, z-score, optional resampling) and its on-disk cache.

Two modes (docs/METHOD.md section 3):

* ``paper``: crop to the bounding box of the non-zero FLAIR voxels (inclusive bounds), clip at the
  ``clip_percentile`` of the brain voxels, z-score over the brain voxels, background set to 0;
* ``official`` (the public code): the same box with an exclusive upper bound (one slice, row and
  column lost), clip at the percentile of the whole box, z-score over the whole box, background
  included.

``target_spacing`` (mm) resamples the normalised image linearly and the label and brain mask by
nearest neighbour to an isotropic grid; ``None`` keeps the native grid.

Every volume carries its brain mask (the non-zero FLAIR voxels), which the 2D model inputs use to
paint the background black (``clisc.stages.slice_input``), and what it takes to put an output back
into the stored file's grid (``crop``, ``original_shape``, ``axcodes``; ``clisc.data.native``).
Cases are loaded in BraTS orientation (``clisc.data.io``).
"""
from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from clisc.cache import atomic_write_bytes, stable_hash
from clisc.data.discovery import CaseFiles, dataset_fingerprint
from clisc.data.io import BRATS_AXCODES, RawCase, load_case, whole_tumour
from clisc.data.layouts import MODALITIES
from clisc.errors import DataError

log = logging.getLogger(__name__)

MODES = ("paper", "official")
# Bump when the stored arrays change meaning; the pipeline hashes it into every stage's key too.
# 2: brain mask (black 2D model backgrounds), axis codes, BraTS orientation.
CACHE_FORMAT = 2

__all__ = ["MODES", "PreprocessSettings", "Volume", "preprocess", "PreprocessedStore", "load_volumes",
           "dataset_fingerprint"]


@dataclass(frozen=True)
class PreprocessSettings:
    """How a FLAIR volume is turned into network input; hashed into the cache path.

    ``modality``: the image read (``FLAIR``, the paper's; ``T2`` where the layout has it, see
    :mod:`clisc.data.layouts`); it names the dataset's cases (``discover_cases``) and so its fingerprint.
    """

    mode: str = "paper"
    clip_percentile: float = 99.9
    target_spacing: float | None = None
    modality: str = "FLAIR"

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.clip_percentile <= 100:
            raise ValueError(f"clip_percentile must be in (0, 100], got {self.clip_percentile}")
        if self.target_spacing is not None and self.target_spacing <= 0:
            raise ValueError(f"target_spacing must be positive, got {self.target_spacing}")


@dataclass
class Volume:
    """A preprocessed case: image ``XxYxZ`` float32, whole-tumour label ``XxYxZ`` uint8 (or None),
    brain mask ``XxYxZ`` bool (None only for volumes built by hand).

    ``affine`` maps the preprocessed grid to scanner space; ``crop`` is the (start, stop) box per
    axis in voxels of the BraTS-oriented full volume, whose shape is ``original_shape``;
    ``axcodes`` are the axis codes of the file as stored (``clisc.data.io``).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray
    crop: tuple[tuple[int, int], ...]
    original_shape: tuple[int, int, int]
    brain: np.ndarray | None = None
    axcodes: tuple[str, str, str] = BRATS_AXCODES


def brain_box(flair: np.ndarray, inclusive: bool = True) -> tuple[tuple[int, int], ...]:
    """(start, stop) per axis of the non-zero voxels of ``flair`` ``XxYxZ``; stop is exclusive
    Python slicing, so ``inclusive=False`` reproduces the public code's box one voxel short."""
    box = []
    for axis in range(flair.ndim):
        other = tuple(a for a in range(flair.ndim) if a != axis)
        nonzero = np.flatnonzero(np.any(flair != 0, axis=other))
        box.append((int(nonzero[0]), int(nonzero[-1]) + (1 if inclusive else 0)))
    return tuple(box)


def _normalise(box: np.ndarray, mode: str, clip_percentile: float) -> np.ndarray:
    """Clip and z-score a cropped FLAIR ``XxYxZ``; returns float32 of the same shape."""
    values = box.astype(np.float64)
    region = values != 0 if mode == "paper" else np.ones(values.shape, dtype=bool)
    ceiling = np.percentile(values[region], clip_percentile)
    values = np.minimum(values, ceiling)
    mean, std = values[region].mean(), values[region].std()
    if std == 0:
        std = 1.0
    normalised = (values - mean) / std
    if mode == "paper":
        normalised[~region] = 0.0
    return normalised.astype(np.float32)


def _shifted_affine(affine: np.ndarray, start: Sequence[float], step: Sequence[float]) -> np.ndarray:
    """Affine of a grid whose voxel i sits at old voxel ``start + i * step``."""
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(step)
    index_map[:3, 3] = start
    return affine @ index_map


def _resample(volume: Volume, target: float) -> Volume:
    """Resample to isotropic ``target`` mm: image order 1, label and brain order 0; voxel extents
    kept aligned (new voxel i covers old voxels ``[i, i + 1) * step``, see ``clisc.data.native``)."""
    old_shape = np.array(volume.image.shape)
    new_shape = np.maximum(1, np.round(old_shape * np.array(volume.spacing) / target)).astype(int)
    zoom = new_shape / old_shape
    image = ndimage.zoom(volume.image, zoom, order=1, mode="nearest", grid_mode=True)
    label = brain = None
    if volume.label is not None:
        label = ndimage.zoom(volume.label, zoom, order=0, mode="nearest", grid_mode=True)
    if volume.brain is not None:
        brain = ndimage.zoom(volume.brain.astype(np.uint8), zoom, order=0, mode="nearest", grid_mode=True) > 0
    step = old_shape / new_shape  # old voxels per new voxel
    spacing = tuple(float(s * k) for s, k in zip(volume.spacing, step))
    affine = _shifted_affine(volume.affine, 0.5 * step - 0.5, step)
    return Volume(volume.case_id, image.astype(np.float32), label, spacing, affine, volume.crop,
                  volume.original_shape, brain, volume.axcodes)


def preprocess(raw: RawCase, settings: PreprocessSettings = PreprocessSettings()) -> Volume:
    """Crop, clip, z-score (and optionally resample) a loaded case; see the module docstring."""
    crop = brain_box(raw.flair, inclusive=settings.mode == "paper")
    if any(stop <= start for start, stop in crop):
        raise DataError(raw.files.flair, f"brain box {crop} is empty in {settings.mode} mode")
    window = tuple(slice(start, stop) for start, stop in crop)
    image = _normalise(raw.flair[window], settings.mode, settings.clip_percentile)
    label = whole_tumour(raw.seg[window]) if raw.seg is not None else None
    affine = _shifted_affine(raw.affine, [start for start, _ in crop], [1.0, 1.0, 1.0])
    brain = raw.flair[window] != 0
    volume = Volume(raw.case_id, image, label, raw.spacing, affine, crop, tuple(raw.flair.shape), brain,
                    raw.axcodes)
    if settings.target_spacing is not None:
        volume = _resample(volume, settings.target_spacing)
    return volume


def input_fingerprint(files: CaseFiles) -> str:
    """Hash of (resolved path, size, mtime_ns) of a case's input files: changes when they do."""
    stats = []
    for path in (files.flair, files.seg):
        if path is None:
            continue
        try:
            st = path.stat()
        except OSError as err:
            raise DataError(path, f"cannot stat input file ({err.strerror})") from err
        stats.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    return stable_hash(stats, length=12)


def _volume_to_npz(volume: Volume) -> bytes:
    arrays = {"image": volume.image, "spacing": np.array(volume.spacing), "affine": volume.affine,
              "crop": np.array(volume.crop, dtype=np.int64), "original_shape": np.array(volume.original_shape),
              "case_id": np.array(volume.case_id), "axcodes": np.array(volume.axcodes)}
    if volume.brain is not None:
        arrays["brain"] = volume.brain
    if volume.label is not None:
        arrays["label"] = volume.label
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _volume_from_npz(path: Path) -> Volume:
    with np.load(path, allow_pickle=False) as npz:
        return Volume(
            case_id=str(npz["case_id"]),
            image=npz["image"],
            label=npz["label"] if "label" in npz.files else None,
            spacing=tuple(float(s) for s in npz["spacing"]),
            affine=npz["affine"],
            crop=tuple((int(a), int(b)) for a, b in npz["crop"]),
            original_shape=tuple(int(s) for s in npz["original_shape"]),
            brain=npz["brain"] if "brain" in npz.files else None,
            axcodes=tuple(str(c) for c in npz["axcodes"]),
        )


class PreprocessedStore:
    """Preprocessed volumes cached as ``cache_root/preprocessed/<settings hash>/<case>-<inputs>.npz``.

    The file name carries a fingerprint of the input files, so edited inputs are preprocessed
    again; files are published atomically, so an interrupted run leaves no partial entry.
    """

    def __init__(self, cache_root: str | Path, settings: PreprocessSettings = PreprocessSettings()):
        self.settings = settings
        self.settings_key = stable_hash({"format": CACHE_FORMAT, "settings": settings})
        self.directory = Path(cache_root) / "preprocessed" / self.settings_key

    def path(self, files: CaseFiles) -> Path:
        return self.directory / f"{files.case_id}-{input_fingerprint(files)}.npz"

    def load(self, files: CaseFiles) -> Volume:
        """The preprocessed volume of ``files``, from the cache when present, else computed and stored."""
        path = self.path(files)
        if path.is_file():
            try:
                return _volume_from_npz(path)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                log.warning("%s: unreadable cache entry (%s); preprocessing again", path, err)
        volume = preprocess(load_case(files, require_seg=False), self.settings)
        atomic_write_bytes(path, _volume_to_npz(volume))
        return volume


def load_volumes(cases: Sequence[CaseFiles], settings: PreprocessSettings = PreprocessSettings(),
                 cache_root: str | Path | None = None, progress: bool = True) -> list[Volume]:
    """Preprocessed volumes of ``cases`` in order; cached under ``cache_root`` unless it is None."""
    store = PreprocessedStore(cache_root, settings) if cache_root is not None else None
    volumes = []
    for files in tqdm(cases, desc=f"preprocess ({settings.mode})", unit="case", disable=not progress):
        if store is not None:
            volumes.append(store.load(files))
        else:
            volumes.append(preprocess(load_case(files, require_seg=False), settings))
    return volumes
