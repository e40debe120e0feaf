"""A skull-stripped FLAIR-like brain built on the MNI ICBM152 2009 template shipped inside nilearn.

The template's grey/white-matter probability maps give a FLAIR contrast (CSF dark, grey matter brighter
than white matter, background 0), expressed in white-matter units (WM = 1). Each case samples it through
a random small affine (scale, rotation, shift) plus a smooth displacement field into the BraTS grid:
240x240x155 voxels of 1 mm, LPS voxel order (BraTS's affine diag(-1, -1, 1)). A reduced output shape
covers the same field of view with fewer voxels. Bias field and Rician noise are applied separately.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from clisc.errors import DataError

FULL_SHAPE = (240, 240, 155)
BRAIN_CENTRE_FULL = np.array([118.0, 130.0, 73.0])  # brain bounding-box centre in BraTS voxels (sample)
GM_LEVEL, WM_LEVEL, CSF_LEVEL = 1.22, 1.0, 0.18  # FLAIR signal per tissue, white matter = 1
BRAIN_THRESHOLD = 0.5 * CSF_LEVEL  # warped contrast above this is brain


@dataclass(frozen=True)
class Template:
    """MNI152 2009 FLAIR-like contrast ``XxYxZ`` float32 (LPS voxel order), brain box centre and half size."""

    flair: np.ndarray
    centre: np.ndarray
    half_extent: np.ndarray


def template_files() -> tuple[Path, Path, Path]:
    """Paths of the MNI152 2009 T1, GM and WM maps inside the installed nilearn (1 mm, uint8).

    Found without importing nilearn (whose import takes seconds); DataError when they are missing.
    """
    spec = importlib.util.find_spec("nilearn")
    folder = Path(spec.origin).parent / "datasets" / "data" if spec and spec.origin else Path("nilearn")
    paths = tuple(folder / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz" for kind in ("t1", "gm", "wm"))
    for path in paths:
        if not path.is_file():
            raise DataError(path, "MNI152 template not found: install nilearn>=0.10 (it ships the template)")
    return paths  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """The template's FLAIR-like contrast, loaded once per process from nilearn's package data."""

    def read(path: Path) -> np.ndarray:
        data = np.asanyarray(nib.load(path).dataobj).astype(np.float32)
        return data[::-1, ::-1, :] / data.max()  # RAS -> LPS, probabilities in [0, 1]

    t1, gm, wm = (read(path) for path in template_files())
    brain = t1 > 0  # the template is skull-stripped
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    flair = (GM_LEVEL * gm + WM_LEVEL * wm + CSF_LEVEL * csf) * brain
    voxels = np.argwhere(brain)
    centre = (voxels.min(0) + voxels.max(0)) / 2.0
    half_extent = (voxels.max(0) - voxels.min(0)) / 2.0 + 1.0
    return Template(flair=np.ascontiguousarray(flair, dtype=np.float32), centre=centre, half_extent=half_extent)


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], n_ctrl: tuple[int, ...],
                 std: float = 1.0) -> np.ndarray:
    """Smooth random field of ``shape`` (float32): Gaussian-weighted blend of ``n_ctrl`` random control values.

    Separable tensor product, so it costs a few BLAS calls however large the output; the field's
    standard deviation is about ``std``.
    """
    field = rng.standard_normal(n_ctrl).astype(np.float32) * std
    for axis, (size, n) in enumerate(zip(shape, n_ctrl)):
        pos = np.linspace(0.0, n - 1.0, size, dtype=np.float32)[:, None]
        weights = np.exp(-0.5 * ((pos - np.arange(n, dtype=np.float32)) / 0.6) ** 2)
        weights /= np.sqrt((weights ** 2).sum(1, keepdims=True))  # keep the std along the axis
        field = np.moveaxis(np.tensordot(weights, np.moveaxis(field, axis, 0), axes=1), 0, axis)
    return field.astype(np.float32)


def _rotation(angles: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix from angles (radians) about x, y, z."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Anatomy:
    """A warped healthy brain: contrast ``XxYxZ`` float32 in WM units (0 outside), brain mask bool, centre."""

    flair: np.ndarray
    brain: np.ndarray
    centre: np.ndarray  # brain centre in output voxels
    half_extent: np.ndarray  # approximate brain half size along each axis, output voxels


def warp_brain(rng: np.random.Generator, shape: tuple[int, int, int] = FULL_SHAPE) -> Anatomy:
    """Sample the template through a random affine + smooth displacement into an output grid ``shape``.

    ``shape`` smaller than 240x240x155 scales the whole field of view down (same anatomy, coarser voxels).
    """
    tpl = load_template()
    zoom = np.array(shape, float) / np.array(FULL_SHAPE, float)  # output voxels per full-grid voxel
    scale = rng.uniform(0.87, 0.94) * rng.uniform(0.97, 1.03, size=3)  # brain size relative to MNI
    rotation = _rotation(np.deg2rad(rng.uniform(-4.0, 4.0, size=3)))
    centre_full = BRAIN_CENTRE_FULL + rng.uniform(-3.0, 3.0, size=3)
    # full-grid mm -> template voxels: q = tpl.centre + A (u - centre_full) + displacement
    matrix = rotation / scale[None, :]
    margin = 8.0  # > the displacement field's largest excursion, in template voxels
    half_full = np.abs(np.linalg.inv(matrix)) @ (tpl.half_extent + margin)  # brain box in the full grid
    lo = np.clip(np.floor((centre_full - half_full) * zoom), 0, None).astype(int)
    hi = np.minimum(np.ceil((centre_full + half_full) * zoom) + 1, shape).astype(int)
    box = tuple(int(h - l) for l, h in zip(lo, hi))
    axes = [(np.arange(l, h, dtype=np.float32) + 0.5) / z - 0.5 - c
            for l, h, z, c in zip(lo, hi, zoom, centre_full)]
    n_ctrl = tuple(max(3, int(round(b / z / 28.0))) for b, z in zip(box, zoom))
    coords = np.empty((3,) + box, dtype=np.float32)
    for i in range(3):
        coords[i] = tpl.centre[i] + smooth_field(rng, box, n_ctrl, std=2.0)
        for j in range(3):
            coords[i] += (matrix[i, j] * axes[j]).reshape([-1 if k == j else 1 for k in range(3)])
    flair = np.zeros(shape, dtype=np.float32)
    window = tuple(slice(l, h) for l, h in zip(lo, hi))
    flair[window] = ndi.map_coordinates(tpl.flair, coords, order=1, output=np.float32, cval=0.0)
    brain = flair > BRAIN_THRESHOLD
    flair[~brain] = 0.0
    voxels_half = np.array([70.0, 85.0, 70.0]) * scale / 0.9 * zoom
    return Anatomy(flair=flair, brain=brain, centre=centre_full * zoom, half_extent=voxels_half)


def bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float = 0.12) -> np.ndarray:
    """Smooth multiplicative bias field ``XxYxZ`` float32 around 1 (log-std about ``strength``)."""
    return np.exp(smooth_field(rng, shape, (3, 3, 3), std=strength)).astype(np.float32)


def add_rician_noise(image: np.ndarray, mask: np.ndarray, sigma: float, rng: np.random.Generator) -> None:
    """Replace ``image`` (``XxYxZ``, in place) inside ``mask`` by a Rician sample of noise level ``sigma``."""
    signal = image[mask]
    real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * sigma
    imag = rng.standard_normal(signal.shape, dtype=np.float32) * sigma
    image[mask] = np.sqrt(real * real + imag * imag)
