"""Sim2Real's tumour simulator: size at the run's spacing, inside the brain, blending, intensity, seeds."""
from __future__ import annotations

import numpy as np
import pytest

from baselines.settings import Sim2RealSettings
from baselines.tumour_simulator import blend_tumour, simulate_tumour, sphere_noise, tumour_body, tumour_centre

SETTINGS = Sim2RealSettings()


def _brain_phantom(shape: tuple[int, int, int] = (48, 56, 44)) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoidal brain ``XxYxZ`` (half-axes 0.45 x the shape) of z-scored noise, background 0."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"))
    centre = np.array(shape, float)[:, None, None, None] / 2
    brain = (((grid - centre) / (0.45 * np.array(shape, float)[:, None, None, None])) ** 2).sum(0) <= 1
    image = np.where(brain, np.random.default_rng(0).standard_normal(shape), 0.0).astype(np.float32)
    return image, brain


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (1.0, 1.5, 3.0)])
@pytest.mark.parametrize("volume_mm3", [7000.0, 30000.0])
def test_body_has_the_drawn_volume_at_the_grid_spacing(spacing: tuple[float, float, float], volume_mm3: float) -> None:
    """The drawn size is mm^3 (voxels at 1 mm): at spacing s the body has volume / prod(s) voxels."""
    for seed in range(3):
        body = tumour_body(spacing, volume_mm3, SETTINGS, np.random.default_rng(seed))
        expected = volume_mm3 / np.prod(spacing)
        assert abs(body.sum() - expected) < 0.06 * expected
        assert all(n % 2 == 1 for n in body.shape)


def test_body_is_irregular_not_an_ellipsoid() -> None:
    """The surface noise makes the radius vary along directions far more than the elongation alone."""
    body = tumour_body((1.0, 1.0, 1.0), 30000.0, Sim2RealSettings(elongation=(1.0, 1.0)), np.random.default_rng(3))
    centre = np.array(body.shape) // 2
    surface = np.argwhere(body & ~np.roll(body, 1, axis=0))
    radii = np.linalg.norm(surface - centre, axis=1)
    assert radii.max() / radii.min() > 1.25


def test_sphere_noise_is_bounded_and_smooth() -> None:
    directions = np.random.default_rng(0).standard_normal((2000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    noise = sphere_noise(5, np.random.default_rng(1))
    values = noise(directions)
    assert np.abs(values).max() <= 1.0 and values.std() > 0.05
    nearby = directions + 1e-3
    nearby /= np.linalg.norm(nearby, axis=1, keepdims=True)
    assert np.abs(noise(nearby) - values).max() < 0.05


@pytest.mark.parametrize("seed", range(6))
def test_tumour_lies_in_the_brain_within_the_size_range(seed: int) -> None:
    image, brain = _brain_phantom()
    spacing = (2.0, 2.0, 2.0)
    sim = simulate_tumour(image, brain, spacing, SETTINGS, np.random.default_rng(seed))
    assert sim.mask.any() and not (sim.mask & ~brain).any()
    low, high = (v / 8.0 for v in SETTINGS.tumour_voxels)
    assert low <= sim.volume_mm3 / 8.0 <= high and sim.mask.sum() <= 1.06 * high
    assert SETTINGS.blend[0] <= sim.blend <= SETTINGS.blend[1]
    assert SETTINGS.intensity[0] <= sim.intensity <= SETTINGS.intensity[1]
    assert np.array_equal(sim.image[~brain], image[~brain])  # the background is untouched
    assert np.array_equal(sim.tumour_layer != 0, sim.mask & (sim.image != 0))


def test_centre_is_in_one_hemisphere_of_the_brain() -> None:
    _, brain = _brain_phantom()
    for seed in range(20):
        x, y, z = tumour_centre(brain, np.random.default_rng(seed))
        assert brain[x, y, z] and abs(x - brain.shape[0] / 2) >= 0.05 * brain.shape[0]


def test_same_seed_same_tumour_other_seed_other_tumour() -> None:
    image, brain = _brain_phantom()
    first, again, other = (simulate_tumour(image, brain, (2.0, 2.0, 2.0), SETTINGS, np.random.default_rng(s))
                           for s in (7, 7, 8))
    assert np.array_equal(first.image, again.image) and np.array_equal(first.mask, again.mask)
    assert not np.array_equal(first.mask, other.mask)


@pytest.mark.parametrize("seed", range(4))
def test_tumour_is_brighter_and_the_brain_keeps_its_z_score(seed: int) -> None:
    image, brain = _brain_phantom()
    sim = simulate_tumour(image, brain, (2.0, 2.0, 2.0), SETTINGS, np.random.default_rng(seed))
    assert sim.image[sim.mask].mean() > image[sim.mask].mean() + 0.3
    assert sim.image[sim.mask].mean() > sim.image[brain & ~sim.mask].mean()
    assert abs(sim.image[brain].mean() - image[brain].mean()) < 1e-3
    assert abs(sim.image[brain].std() - image[brain].std()) < 1e-3


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
def test_blending_mixes_texture_and_image_inside_the_mask_only(alpha: float) -> None:
    image = np.full((6, 6, 6), 2.0)
    texture = np.full((6, 6, 6), 10.0)
    mask = np.zeros((6, 6, 6), bool)
    mask[2:4, 2:4, 2:4] = True
    out = blend_tumour(image, texture, mask, alpha)
    assert np.allclose(out[mask], alpha * 10.0 + (1 - alpha) * 2.0) and np.all(out[~mask] == 2.0)


def test_intensity_factor_sets_the_texture_mean_before_blending() -> None:
    """With blend 1 the tumour's mean, above the brain's darkest voxel, is the factor x the brain's mean
    (read back through the affine map that restores the z-score, fitted on the untouched brain voxels)."""
    image, brain = _brain_phantom()
    settings = Sim2RealSettings(blend=(1.0, 1.0), intensity=(2.0, 2.0), texture_blur=(0.0, 0.0))
    sim = simulate_tumour(image, brain, (2.0, 2.0, 2.0), settings, np.random.default_rng(0))
    healthy = brain & ~sim.mask
    slope, offset = np.polyfit(image[healthy], sim.image[healthy], 1)
    mixed = (sim.image[sim.mask] - offset) / slope  # back in the input's intensities
    floor = image[brain].min()
    assert (mixed - floor).mean() == pytest.approx(2.0 * (image[brain] - floor).mean(), rel=1e-3)


def test_an_empty_brain_is_refused() -> None:
    with pytest.raises(ValueError, match="brain mask is empty"):
        simulate_tumour(np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), bool), (1.0, 1.0, 1.0), SETTINGS,
                        np.random.default_rng(0))


@pytest.mark.brats_sample
def test_a_tumour_pasted_into_a_real_case(brats_sample) -> None:
    """On a real FLAIR (1 mm, z-scored brain) the tumour lies in the brain, has the drawn size up to the
    brain's edge, is brighter than the brain around it, and the brain keeps its z-score."""
    from clisc.data.discovery import discover_cases
    from clisc.data.preprocessing import load_volumes
    volume = load_volumes(discover_cases(brats_sample)[:1], progress=False)[0]
    sim = simulate_tumour(volume.image, volume.brain, volume.spacing, SETTINGS, np.random.default_rng(0))
    assert not (sim.mask & ~volume.brain).any()
    assert 0.5 * sim.volume_mm3 <= sim.mask.sum() * np.prod(volume.spacing) <= 1.06 * sim.volume_mm3
    assert sim.image[sim.mask].mean() > volume.image[volume.brain & ~sim.mask].mean()
    assert abs(sim.image[volume.brain].mean()) < 1e-3 and abs(sim.image[volume.brain].std() - 1) < 1e-3
