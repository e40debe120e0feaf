"""3D IF: Fourier features, intensity classes, coordinates, the latent fit, scoring, and end to end."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.implicit_field import anomaly_mask, smooth_scores
from baselines.implicit_field_model import (BACKGROUND, CHECKPOINT_EVERY, ImplicitDecoder, TrainingVolume, VoxelGrid,
                                            fit_class_centres, fit_latent, fourier_features, normalise_brain, quantise,
                                            train_decoder, voxel_cross_entropy)
from baselines.settings import ImplicitFieldSettings
from clisc.errors import CliscError
from clisc.pipeline.run import run_method

SMALL = ImplicitFieldSettings(hidden=64, layers=3, latent_layer=1, latent_dim=8, fourier_frequencies=3, dropout=0.0,
                              n_classes=4, mode_pool=0, epochs=150, scenes_per_batch=4, samples_per_scene=512,
                              lr=3e-3, latent_lr=3e-2, lr_step=1000, code_regularisation=0.0, test_steps=60,
                              test_samples=512, test_refine_steps=0, test_lr=5e-2, batch_voxels=1000)


@pytest.mark.parametrize("frequencies", [1, 4])
def test_fourier_features_are_sines_then_cosines_of_octaves(frequencies: int) -> None:
    xyz = torch.tensor([[0.25, -0.5, 1.0], [0.0, 0.0, 0.0]])
    features = fourier_features(xyz, frequencies)
    assert features.shape == (2, 6 * frequencies)
    angles = xyz[0, 1] * (2 ** (frequencies - 1)) * math.pi  # axis y, highest octave
    assert features[0, 1 * frequencies + frequencies - 1] == pytest.approx(math.sin(angles), abs=1e-6)
    assert features[0, 3 * frequencies + frequencies * 1 + frequencies - 1] == pytest.approx(math.cos(angles), abs=1e-6)
    assert torch.equal(features[1], torch.cat([torch.zeros(3 * frequencies), torch.ones(3 * frequencies)]))


def test_normalise_clips_and_scales_the_brain_only() -> None:
    image = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    brain = np.zeros(image.shape, bool)
    brain[2:8, 2:8, 2:8] = True
    out = normalise_brain(image, brain, clip_percentile=98.0)
    assert out[brain].min() == 0.0 and out[brain].max() == 1.0 and not out[~brain].any()
    assert (out[brain] == 1.0).sum() >= 0.02 * brain.sum() - 1  # the top 2 % saturate


def test_class_centres_find_the_tissue_modes_and_quantise_maps_them() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(m, 0.02, 3000) for m in (0.1, 0.5, 0.9)])
    centres = fit_class_centres(values, 3)
    np.testing.assert_allclose(centres, [0.1, 0.5, 0.9], atol=0.01)
    normalised = np.array([[[0.0, 0.12, 0.48, 0.95]]], np.float32)
    brain = np.array([[[False, True, True, True]]])
    assert quantise(normalised, brain, centres).tolist() == [[[BACKGROUND, 1, 2, 3]]]


def test_mode_pool_removes_an_isolated_voxel_but_keeps_the_background() -> None:
    normalised = np.full((7, 7, 7), 0.1, np.float32)
    normalised[3, 3, 3] = 0.9  # a speckle of the bright class
    brain = np.ones(normalised.shape, bool)
    brain[0] = False
    classes = quantise(normalised, brain, np.array([0.1, 0.9]), mode_pool=3)
    assert classes[3, 3, 3] == 1 and (classes[0] == BACKGROUND).all() and (classes[brain] == 1).all()


def test_grid_coordinates_are_shared_by_a_crop_and_a_resampling_of_one_case() -> None:
    full = VoxelGrid.of((240, 240, 155), ((0, 240), (0, 240), (0, 155)), (240, 240, 155))
    cropped = VoxelGrid.of((40, 40, 30), ((100, 140), (60, 100), (50, 80)), (240, 240, 155))
    half = VoxelGrid.of((20, 20, 15), ((100, 140), (60, 100), (50, 80)), (240, 240, 155))
    np.testing.assert_allclose(cropped.coordinates(np.array([[0, 0, 0]])), full.coordinates(np.array([[100, 60, 50]])))
    # a 2-voxel-wide resampled voxel sits between the two original voxels it covers
    between = (cropped.coordinates(np.array([[0, 0, 0]])) + cropped.coordinates(np.array([[1, 1, 1]]))) / 2
    np.testing.assert_allclose(half.coordinates(np.array([[0, 0, 0]])), between, atol=1e-6)
    ends = full.coordinates(np.array([[0, 0, 0], [239, 239, 154]]))
    assert ends.min() > -1 and ends.max() < 1
    assert np.array_equal(cropped.indices(0, 3), [[0, 0, 0], [0, 0, 1], [0, 0, 2]])


def test_decoder_shapes_and_skip_input() -> None:
    settings = ImplicitFieldSettings(hidden=40, layers=4, latent_layer=2, latent_dim=8, fourier_frequencies=2)
    model = ImplicitDecoder(settings)
    assert model(torch.zeros(5, 8), torch.zeros(5, 3)).shape == (5, settings.n_classes)
    assert model.hidden_layers[1].out_features == 40 - (8 + 12)  # narrowed to leave room for the skip
    with pytest.raises(CliscError, match="no wider"):
        ImplicitDecoder(dataclasses.replace(settings, hidden=16))
    no_skip = ImplicitDecoder(dataclasses.replace(settings, latent_layer=4))
    assert all(layer.out_features == 40 for layer in no_skip.hidden_layers)


def _phantom_classes(shift: int, blob: bool = False) -> np.ndarray:
    """A 16^3 class volume: background 0, a brain ball of class 1 whose upper half in x is class 2,
    shifted by ``shift`` voxels in x; ``blob`` plants a bright sphere of class 3 in the dark half."""
    grid = np.stack(np.meshgrid(*[np.arange(16)] * 3, indexing="ij"))
    brain = ((grid - 7.5) ** 2).sum(0) <= 7 ** 2
    classes = np.where(brain, np.where(grid[0] >= 8 + shift, 2, 1), 0).astype(np.uint8)
    if blob:
        classes[((grid - np.array([4, 6, 8])[:, None, None, None]) ** 2).sum(0) <= 2 ** 2] = 3
    return classes


@pytest.fixture(scope="module")
def trained() -> tuple[ImplicitDecoder, torch.Tensor, VoxelGrid, list[np.ndarray]]:
    grid = VoxelGrid.of((16, 16, 16), ((0, 16),) * 3, (16, 16, 16))
    volumes = [_phantom_classes(shift) for shift in (-3, -1, 1, 3)]
    training = [TrainingVolume(v, grid, np.arange(16)) for v in volumes]
    model, latents = train_decoder(training, SMALL, seed=0, progress=False)
    return model, latents, grid, volumes


def test_a_killed_training_resumes_to_the_same_result(tmp_path: Path) -> None:
    grid = VoxelGrid.of((8, 8, 8), ((0, 8),) * 3, (8, 8, 8))
    training = [TrainingVolume(_phantom_classes(0)[::2, ::2, ::2], grid, np.arange(2, 6)) for _ in range(2)]
    settings = dataclasses.replace(SMALL, epochs=2 * CHECKPOINT_EVERY, dropout=0.2, samples_per_scene=64)
    straight, latents = train_decoder(training, settings, seed=3, progress=False)
    checkpoint = tmp_path / "checkpoint.pt"
    train_decoder(training, dataclasses.replace(settings, epochs=CHECKPOINT_EVERY), 3, progress=False,
                  checkpoint=checkpoint)  # "killed" after the first checkpoint
    state = torch.get_rng_state()
    resumed, resumed_latents = train_decoder(training, settings, seed=3, progress=False, checkpoint=checkpoint)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    assert torch.equal(latents, resumed_latents)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_a_fitted_latent_reconstructs_a_training_volume_better_than_a_random_one(trained) -> None:
    model, latents, grid, volumes = trained
    random_latent = torch.randn(SMALL.latent_dim, generator=torch.Generator().manual_seed(5)) * 0.3
    fitted = fit_latent(model, volumes[0], grid, SMALL, seed=1)
    for latent in (latents[0], fitted):
        error = voxel_cross_entropy(model, latent, volumes[0], grid, SMALL.batch_voxels).mean()
        random_error = voxel_cross_entropy(model, random_latent, volumes[0], grid, SMALL.batch_voxels).mean()
        assert error < 0.7 * random_error


def test_a_planted_bright_blob_scores_higher_than_tissue(trained) -> None:
    model, _, grid, _ = trained
    test = _phantom_classes(0, blob=True)
    latent = fit_latent(model, test, grid, SMALL, seed=2)
    scores = voxel_cross_entropy(model, latent, test, grid, SMALL.batch_voxels)
    blob, tissue = test == 3, (test > 0) & (test < 3)
    assert np.median(scores[blob]) > 5 * np.median(scores[tissue])
    brain = test > 0
    mask = anomaly_mask(scores, brain, percentile=100 * (1 - blob.sum() / brain.sum()))  # as many voxels as the blob
    assert (mask & blob).sum() > 0.5 * blob.sum()


def test_smoothing_spreads_a_region_and_drops_a_single_voxel() -> None:
    scores = np.zeros((15, 15, 15), np.float32)
    scores[7, 7, 7] = 10.0  # one voxel: the min filter removes it
    scores[0:4, 0:4, 0:4] = 1.0  # a region: survives, spread by the mean filter
    smoothed = smooth_scores(scores, (2.0, 2.0, 2.0), dataclasses.replace(SMALL, min_filter=3, mean_filter_mm=6.0))
    assert smoothed[7, 7, 7] == 0.0 and smoothed[1, 1, 1] > 0.5 and smoothed[5, 5, 5] == 0.0


def test_empty_brain_gives_an_empty_mask() -> None:
    assert not anomaly_mask(np.ones((4, 4, 4), np.float32), np.zeros((4, 4, 4), bool), 95.0).any()


@pytest.mark.parametrize("source,label_free", [("clip", "true"), ("ground_truth", "false")])
def test_runs_end_to_end(synthetic_dataset: Path, tmp_path: Path, source: str, label_free: str) -> None:
    result = run_method("3d_if", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache", progress=False,
                        echo=lambda _: None, overrides={"baselines.healthy_source": source})
    assert len(result.per_case) == 2 and result.per_case["dsc"].between(0, 100).all()
    assert result.tags["label_free"] == label_free
    assert result.params["baselines.implicit_field.n_classes"] == 10
    assert "implicit_field" in result.histories and len(result.histories["implicit_field"]) == 3


@pytest.mark.brats_sample
def test_real_tumour_falls_in_the_brightest_classes(brats_sample: Path) -> None:
    """On real FLAIR (centres fitted on the case's tumour-free slices) the hyperintense whole tumour is
    coded mostly as the two brightest brain classes, and every class is used."""
    from baselines.implicit_field import volume_classes
    from clisc.data.discovery import discover_cases
    from clisc.data.preprocessing import load_volumes
    volume = load_volumes(discover_cases(brats_sample)[:1], progress=False)[0]
    brain, tumour = volume.brain, volume.label > 0
    settings = ImplicitFieldSettings()
    healthy = brain & ~tumour.any(axis=(0, 1))[None, None, :]
    centres = fit_class_centres(normalise_brain(volume.image, brain, settings.clip_percentile)[healthy], 9)
    classes = volume_classes(volume, centres, settings)
    assert set(np.unique(classes[brain])) == set(range(1, 10)) and (classes[~brain] == BACKGROUND).all()
    assert (classes[tumour] >= 8).mean() > 0.7
