"""Irregular gliomas painted into a warped brain: oedema (label 2) around a core of enhancing rim (4)
and necrosis (1), hyperintense on FLAIR, with whole-tumour volumes spread log-uniformly over 5k-250k voxels.

Shapes are level sets of merged ellipsoidal blobs plus smooth noise; the threshold is chosen so the
whole tumour has exactly its target volume inside the brain mask.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from clisc.data.synth.anatomy import FULL_SHAPE, Anatomy, smooth_field

VOLUME_RANGE = (5_000.0, 250_000.0)  # whole-tumour voxels on the full 240x240x155 grid
VOLUME_SKEW = 0.75  # < 1 leans towards large tumours: median about 50k voxels, as in BraTS
GOLDEN_FRACTION = 0.6180339887498949  # any 10 consecutive cases cover every fifth of the log range
LABEL_NECROSIS, LABEL_OEDEMA, LABEL_ENHANCING = 1, 2, 4


def target_volume(case_index: int, seed: int) -> float:
    """Whole-tumour voxels (full grid) of case ``case_index``: golden-ratio sweep of the log range, jittered.

    The sweep position depends only on (seed, case_index); any 10 consecutive cases fall in every fifth.
    """
    offset = np.random.default_rng([seed, 0x0FF5E7]).random()
    jitter = np.random.default_rng([seed, 0x717E, case_index]).uniform(-0.02, 0.02)
    position = float(np.clip((offset + case_index * GOLDEN_FRACTION) % 1.0 + jitter, 0.0, 1.0))
    low, high = np.log(VOLUME_RANGE[0]), np.log(VOLUME_RANGE[1])
    return float(np.exp(low + position ** VOLUME_SKEW * (high - low)))


def _pick_centre(anatomy: Anatomy, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A tumour centre (output voxels) in white-matter-like tissue of one hemisphere, away from the edge."""
    half = anatomy.half_extent
    room = np.clip(1.0 - 0.9 * radius / half, 0.3, 1.0)  # large tumours sit nearer the middle in y, z
    side = rng.choice([-1.0, 1.0])
    best = np.round(anatomy.centre).astype(int)
    for _ in range(60):
        offset = np.array([side * rng.uniform(0.3, 0.6), rng.uniform(-0.55, 0.5) * room[1],
                           rng.uniform(-0.2, 0.45) * room[2]])
        point = np.round(anatomy.centre + offset * half).astype(int)
        point = np.clip(point, 0, np.array(anatomy.flair.shape) - 1)
        value = anatomy.flair[tuple(point)]
        if anatomy.brain[tuple(point)]:
            best = point
            if 0.85 < value < 1.15:
                break
    return best.astype(float)


def _level_set(box_shape: tuple[int, ...], origin: np.ndarray, blobs: list[tuple[np.ndarray, np.ndarray]],
               radius: float, rng: np.random.Generator) -> np.ndarray:
    """Normalised distance ``box_shape`` float32 to the nearest blob (1 on its surface) plus smooth noise."""
    grids = [np.arange(n, dtype=np.float32) + o for n, o in zip(box_shape, origin)]
    level = np.full(box_shape, np.inf, dtype=np.float32)
    for centre, radii in blobs:
        parts = [((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)]
        dist = np.sqrt(parts[0][:, None, None] + parts[1][None, :, None] + parts[2][None, None, :])
        np.minimum(level, dist, out=level)
    coarse = tuple(max(3, int(round(n / max(radius, 1.0) * 1.5))) for n in box_shape)
    fine = tuple(max(4, int(round(n / max(radius, 1.0) * 4.0))) for n in box_shape)
    level += smooth_field(rng, box_shape, coarse, std=0.3)
    level += smooth_field(rng, box_shape, fine, std=0.1)
    return level


def _select(level: np.ndarray, allowed: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    """The ``count`` allowed voxels of lowest ``level`` (bool, same shape) and the threshold used."""
    values = level[allowed]
    if count >= values.size:
        return allowed.copy(), float(values.max()) if values.size else 0.0
    threshold = float(np.partition(values, count - 1)[count - 1])
    return allowed & (level <= threshold), threshold


def add_tumour(anatomy: Anatomy, volume_full: float, rng: np.random.Generator) -> np.ndarray:
    """Paint a tumour of ``volume_full`` full-grid voxels into ``anatomy.flair`` (in place, WM units).

    Returns the BraTS labels ``XxYxZ`` uint8 in {0, 1, 2, 4}; the whole tumour lies inside the brain.
    """
    shape = anatomy.flair.shape
    zoom = np.array(shape, float) / np.array(FULL_SHAPE, float)
    count = max(8, int(round(volume_full * float(np.prod(zoom)))))
    radius = (3.0 * count / (4.0 * np.pi)) ** (1.0 / 3.0)
    centre = _pick_centre(anatomy, radius, rng)
    blobs = [(centre, radius * rng.uniform(0.8, 1.2, size=3))]
    for _ in range(rng.integers(0, 3)):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        blobs.append((centre + direction * radius * rng.uniform(0.4, 0.8), radius * rng.uniform(0.45, 0.75, 3)))
    lo = np.clip(np.floor(centre - 2.0 * radius - 2), 0, None).astype(int)
    hi = np.minimum(np.ceil(centre + 2.0 * radius + 3), shape).astype(int)
    window = tuple(slice(a, b) for a, b in zip(lo, hi))
    box_shape = tuple(int(b - a) for a, b in zip(lo, hi))
    brain = anatomy.brain[window]

    level = _level_set(box_shape, lo.astype(np.float32), blobs, radius, rng)
    level += 0.6 * np.clip(np.abs(anatomy.flair[window] - 1.0), 0.0, 0.3)  # oedema prefers white matter
    whole, threshold = _select(level, brain, count)
    core_centre = [(centre + rng.uniform(-0.25, 0.25, 3) * radius, radius * rng.uniform(0.5, 0.8, 3))]
    core_level = _level_set(box_shape, lo.astype(np.float32), core_centre, 0.6 * radius, rng)
    core_count = int(round(whole.sum() * rng.uniform(0.15, 0.5)))
    core, core_threshold = _select(core_level, whole, core_count)

    labels = np.where(whole, LABEL_OEDEMA, 0).astype(np.uint8)
    rim_voxels = max(1, int(round(rng.uniform(1.5, 3.5) * zoom.mean())))
    inner = ndi.binary_erosion(core, iterations=rim_voxels) if core.any() else core
    labels[core] = LABEL_ENHANCING
    labels[inner] = LABEL_NECROSIS

    # FLAIR signal (WM units): oedema fading outwards, rim bright, necrosis variable; soft edges
    width = 1.2 / radius
    edge = np.clip((threshold - level) / width + 0.5, 0.0, 1.0) * brain
    fade = np.clip(level / max(threshold, 1e-3), 0.0, 1.0)  # 0 at the centre, 1 on the border
    texture = 1.0 + smooth_field(rng, box_shape, tuple(max(4, n // 6) for n in box_shape), std=0.08)
    signal = rng.uniform(1.45, 2.9) * (1.0 - 0.2 * fade) * texture
    core_edge = np.clip((core_threshold - core_level) / (1.5 / radius) + 0.5, 0.0, 1.0) * whole
    core_signal = np.where(inner, rng.uniform(0.8, 1.9), rng.uniform(1.3, 2.1)) * texture
    signal = signal * (1.0 - core_edge) + core_signal * core_edge
    region = anatomy.flair[window]
    region[...] = region * (1.0 - edge) + signal * edge
    seg = np.zeros(shape, dtype=np.uint8)
    seg[window] = labels
    return seg
