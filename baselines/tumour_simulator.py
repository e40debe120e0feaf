"""Sim2Real's tumour simulator (Zhang et al., JBHI 2023; public code xiaoman-zhang/Layer-Decomposition,
``BT_CODE/dataload/dataload.py`` and ``utils/prelin_sphere.py``): a synthetic tumour pasted into a FLAIR
volume, with its mask and its "tumour layer" (the targets of the layer decomposition).

What the public code does, and what this module does:

* **shape**: a geodesic polyhedron (unit sphere mesh) whose vertices move along their normals by
  ``0.5 x`` simplex noise (4-7 octaves, random offset), scaled to radii ``(r ratio, r / ratio, r)``
  with ``ratio ~ U(0.8, 1)`` and ``4/3 pi r^3 ~ U(7000, 200000)`` voxels (1 mm grid), rotated by three
  angles ``U(0, 180)`` degrees and voxelised (VTK). Here the same star-shaped body is voxelised
  directly: a voxel is inside when its distance from the centre, in the rotated ellipsoid's unit frame,
  is at most ``1 + noise_scale x n(direction)``, with ``n`` a sum of ``octaves`` random Fourier
  octaves on the unit sphere (frequency doubling, amplitude halving, in [-1, 1]). No VTK / ``noise``
  dependency. The radii are corrected by the noise's mean cubed radius so that the drawn volume is
  the body's volume, not only that of the sphere it was made from (the code's bodies are a little
  larger or smaller than drawn). **Spacing**: the drawn size is a volume in mm^3 (= voxels at 1 mm),
  so at 2 mm a tumour of 7000-200000 mm^3 has 875-25000 voxels.
* **position**: the centre at a fraction of the brain's bounding box: left-right U(0.24, 0.44) or
  U(0.56, 0.76) (one hemisphere, off the midline), anterior-posterior U(0.2, 0.7), inferior-superior
  U(0.3, 0.8) (the code's ``ratio_z / ratio_y / ratio_x`` mapped through its SimpleITK z-y-x arrays
  onto the physical axes); redrawn until the centre is a brain voxel. The mask is cut to the brain
  (the code: ``mask_crop[normal_crop == 0] = 0``).
* **texture**: the code elastically deforms (TorchIO, 7 control points, 7.5 mm) and blurs (std
  U(0, 2) mm) a random BraTS or OASIS FLAIR and keeps it inside the mask. Here the host volume itself
  is deformed (a smooth random displacement of at most ``elastic_mm``, over the tumour's box) and
  blurred (std U(``texture_blur``) mm): one volume per sample, no second read.
* **intensity and blending** (as the code): the texture is scaled so that its mean inside the mask is
  ``U(intensity)`` x the brain's mean intensity, then ``image = a x texture + (1 - a) x image`` in the
  mask with ``a ~ U(blend)``. The code works on raw FLAIR (background 0); the pipeline's volumes are
  z-scored, so intensities are measured from the brain's minimum (the raw scale up to its offset) and
  the brain's mean and standard deviation are restored after pasting (the code re-z-scores the mixed
  volume too).

Volumes are ``XxYxZ`` (BraTS order: x left, y posterior, z superior); spacing ``(sx, sy, sz)`` mm.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from baselines.settings import Sim2RealSettings
from clisc.evaluation.metrics import bounding_box

# Centre of the tumour as fractions of the brain's bounding box per axis (x: either hemisphere).
CENTRE_X = ((0.24, 0.44), (0.56, 0.76))
CENTRE_Y = (0.2, 0.7)
CENTRE_Z = (0.3, 0.8)
_FOURIER_TERMS = 6  # random plane waves per noise octave


@dataclass(frozen=True)
class SimulatedTumour:
    """A volume with a pasted tumour: ``image`` ``XxYxZ`` float32 (the network input), ``mask``
    ``XxYxZ`` bool (inside the brain), ``tumour_layer`` ``XxYxZ`` float32 (``image`` in the mask, 0
    elsewhere); the draws: ``volume_mm3`` (drawn size), ``blend`` (a), ``intensity`` (mean factor)."""

    image: np.ndarray
    mask: np.ndarray
    tumour_layer: np.ndarray
    volume_mm3: float
    blend: float
    intensity: float


def sphere_noise(octaves: int, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth random function on the unit sphere with values in [-1, 1], drawn once: it maps ``Nx3``
    unit vectors to ``N`` values.

    Octave ``k`` sums random plane waves ``sin(w . u + phase)`` with ``|w| = pi 2^k`` (base period 2:
    about the unit lattice of simplex noise over the unit sphere) scaled to a standard deviation of
    about 0.35 (simplex noise's), weighted ``0.5^k`` (persistence 0.5, as the code's ``snoise3``); the
    weights sum to 1 and the sum is clipped to [-1, 1].
    """
    weights = 0.5 ** np.arange(octaves)
    waves = rng.standard_normal((octaves, _FOURIER_TERMS, 3))
    waves *= (np.pi * 2.0 ** np.arange(octaves))[:, None, None] / np.linalg.norm(waves, axis=2, keepdims=True)
    phases = rng.uniform(0, 2 * np.pi, (octaves, _FOURIER_TERMS))

    def noise(directions: np.ndarray) -> np.ndarray:
        total = np.zeros(len(directions))
        for weight, wave, phase in zip(weights, waves, phases):
            total += weight * np.sin(directions @ wave.T + phase).sum(axis=1) / (2.0 * np.sqrt(_FOURIER_TERMS))
        return np.clip(total / weights.sum(), -1.0, 1.0)

    return noise


def _unit_directions(n: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((n, 3))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def tumour_body(spacing: tuple[float, float, float], volume_mm3: float, settings: Sim2RealSettings,
                rng: np.random.Generator) -> np.ndarray:
    """A noisy deformed ellipsoid of ``volume_mm3`` as a bool box ``AxBxC`` (odd sides, the centre at
    the middle voxel) on a grid of ``spacing`` mm."""
    noise = sphere_noise(int(rng.integers(settings.noise_octaves[0], settings.noise_octaves[1] + 1)), rng)

    def radial(directions: np.ndarray) -> np.ndarray:
        return 1.0 + settings.noise_scale * noise(directions)

    mean_cube = float(np.mean(radial(_unit_directions(4096, np.random.default_rng(0))) ** 3))
    sphere_radius = (3.0 * volume_mm3 / (4.0 * np.pi * mean_cube)) ** (1.0 / 3.0)
    ratio = rng.uniform(*settings.elongation)
    radii = np.array([sphere_radius * ratio, sphere_radius / ratio, sphere_radius])
    rotation = Rotation.from_euler("xyz", rng.uniform(0, 180, size=3), degrees=True)
    extent = radii.max() * (1.0 + settings.noise_scale)  # mm: the body lies within this ball
    half = np.ceil(extent / np.asarray(spacing, float)).astype(int)
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing)]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)  # mm from the centre
    unit = rotation.inv().apply(offsets) / radii  # the ellipsoid's unit frame
    distance = np.linalg.norm(unit, axis=1)
    directions = unit / np.maximum(distance, 1e-12)[:, None]
    inside = np.zeros(len(unit), bool)
    near = distance <= 1.0 + settings.noise_scale
    inside[near] = distance[near] <= radial(directions[near])
    return inside.reshape(tuple(2 * half + 1))


def tumour_centre(brain: np.ndarray, rng: np.random.Generator, tries: int = 50) -> tuple[int, int, int]:
    """A brain voxel at the code's fractions of the brain's bounding box (one hemisphere in x); a random
    brain voxel when ``tries`` draws all miss the brain."""
    box = bounding_box(brain)
    for _ in range(tries):
        fractions = (rng.uniform(*CENTRE_X[int(rng.integers(2))]), rng.uniform(*CENTRE_Y), rng.uniform(*CENTRE_Z))
        centre = tuple(int(b.start + f * (b.stop - 1 - b.start)) for b, f in zip(box, fractions))
        if brain[centre]:
            return centre
    voxels = np.argwhere(brain)
    return tuple(int(v) for v in voxels[rng.integers(len(voxels))])


def deformed_texture(image: np.ndarray, box: tuple[slice, ...], spacing: tuple[float, float, float],
                     settings: Sim2RealSettings, rng: np.random.Generator) -> np.ndarray:
    """The ``box`` of ``image`` ``XxYxZ`` resampled through a smooth random displacement (at most
    ``settings.elastic_mm`` per axis; 4^3 control points, cubic) and blurred by a Gaussian of std
    ``U(settings.texture_blur)`` mm; same shape as ``image[box]``."""
    shape = tuple(s.stop - s.start for s in box)
    grid = np.meshgrid(*[np.arange(s.start, s.stop, dtype=float) for s in box], indexing="ij")
    coordinates = []
    for axis in range(3):
        control = rng.uniform(-1, 1, size=(4, 4, 4)) * settings.elastic_mm / spacing[axis]
        field = ndimage.zoom(control, [n / 4 for n in shape], order=3, mode="nearest")[:shape[0], :shape[1], :shape[2]]
        coordinates.append(grid[axis] + np.pad(field, [(0, n - f) for n, f in zip(shape, field.shape)], mode="edge"))
    texture = ndimage.map_coordinates(image, coordinates, order=1, mode="nearest")
    sigma_mm = rng.uniform(*settings.texture_blur)
    return ndimage.gaussian_filter(texture, [sigma_mm / s for s in spacing]) if sigma_mm > 0 else texture


def blend_tumour(image: np.ndarray, texture: np.ndarray, mask: np.ndarray, alpha: float) -> np.ndarray:
    """``alpha x texture + (1 - alpha) x image`` inside ``mask``, ``image`` elsewhere (all ``XxYxZ``)."""
    return np.where(mask, alpha * texture + (1.0 - alpha) * image, image)


def simulate_tumour(image: np.ndarray, brain: np.ndarray, spacing: tuple[float, float, float],
                    settings: Sim2RealSettings, rng: np.random.Generator) -> SimulatedTumour:
    """Paste one synthetic tumour into ``image`` ``XxYxZ`` (z-scored FLAIR) inside ``brain`` ``XxYxZ``."""
    brain = np.asarray(brain, bool)
    if not brain.any():
        raise ValueError("simulate_tumour: the brain mask is empty")
    volume_mm3 = float(rng.uniform(*settings.tumour_voxels))  # voxels at 1 mm = mm^3
    body = tumour_body(spacing, volume_mm3, settings, rng)
    centre = tumour_centre(brain, rng)
    # place the body's box around the centre, clipped to the volume
    target, source = [], []
    for c, n, size in zip(centre, image.shape, body.shape):
        start = c - size // 2
        lo, hi = max(start, 0), min(start + size, n)
        target.append(slice(lo, hi))
        source.append(slice(lo - start, hi - start))
    target, source = tuple(target), tuple(source)
    mask = np.zeros(image.shape, bool)
    mask[target] = body[source]
    mask &= brain

    floor = float(image[brain].min())  # intensities measured from the brain's darkest voxel (raw scale)
    raised = image.astype(np.float64) - floor
    brain_mean, brain_std = float(raised[brain].mean()), float(raised[brain].std())
    texture = np.zeros_like(raised)
    texture[target] = np.maximum(deformed_texture(raised, target, spacing, settings, rng), 0.0)
    factor = float(rng.uniform(*settings.intensity))
    texture_mean = float(texture[mask].mean()) if mask.any() else 0.0
    if texture_mean > 1e-6:
        texture *= brain_mean * factor / texture_mean
    else:  # a flat brain: the texture is its mean
        texture[:] = brain_mean * factor
    alpha = float(rng.uniform(*settings.blend))
    mixed = blend_tumour(raised, texture, mask, alpha)
    # restore the brain's mean and std (the pipeline's z-score) as the code re-normalises the mixed volume
    std = float(mixed[brain].std())
    scale = brain_std / std if std > 0 else 1.0
    restored = (mixed - float(mixed[brain].mean())) * scale + brain_mean + floor
    out = np.where(brain, restored, image).astype(np.float32)
    return SimulatedTumour(out, mask, np.where(mask, out, 0.0).astype(np.float32), volume_mm3, alpha, factor)
