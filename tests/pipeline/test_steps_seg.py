"""The SAM half of the pipeline (tiny profile): what SAM is prompted from, the brain restriction,
and S3F's beta / round-2 targets applied after its cached SAM pass."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import clisc.pipeline.steps_seg as steps_seg
import clisc.stages.pseudo_labels as pseudo_labels
from clisc.pipeline.run import run_method
from clisc.pipeline.settings import resolve_settings
from clisc.stages.prompts import PromptSettings


def _run(method: str, data: Path, cache: Path, lines: list[str] | None = None, protocol: str = "paper", **overrides):
    echo = lines.append if lines is not None else (lambda _: None)
    return run_method(method, data, protocol=protocol, profile="tiny", cache_root=cache, progress=False, echo=echo,
                      overrides=overrides)


@pytest.mark.parametrize("brain_only", [False, True])
def test_sam_masks_are_restricted_to_the_brain_only_by_the_switch(monkeypatch, brain_only):
    image = np.zeros((8, 8, 3), np.float32)
    image[2:6, 2:6, :] = 1.0
    volume = SimpleNamespace(image=image, brain=image > 0)
    monkeypatch.setattr(steps_seg, "segment_volume", lambda image, roi, prompts, sam: np.ones(image.shape, bool))
    out = steps_seg.sam_volume(volume, np.ones(image.shape, bool), PromptSettings(), None, brain_only)
    assert np.array_equal(out, volume.brain) if brain_only else out.all()
    # the code's `img_array != 0` on whole-box z-scored images (background -mean/std) keeps everything
    assert not resolve_settings().sam.brain_only and not resolve_settings("official").sam.brain_only


@pytest.mark.slow
def test_official_points_are_ranked_on_the_binary_roi(synthetic_dataset, tmp_path, monkeypatch):
    """The code ranks its 5 foreground points on its binarised, post-processed CAM x image: every
    prompt is built from a binary ROI and no continuous CAM."""
    seen = []
    real = pseudo_labels.prompts_from_mask

    def spy(mask, settings, cam=None, image=None):
        seen.append((np.unique(mask).tolist(), cam, settings.variant))
        return real(mask, settings, cam, image)

    monkeypatch.setattr(pseudo_labels, "prompts_from_mask", spy)
    _run("sam_box_points", synthetic_dataset, tmp_path, protocol="official", **{"prompts.variant": "official"})
    assert seen and all(cam is None and variant == "official" and set(values) <= {False, True}
                        for values, cam, variant in seen)


@pytest.fixture(scope="module")
def clisc_cache(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    _run("clisc", synthetic_dataset, cache)
    return cache


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{"s3f.beta": 60.0}, {"s3f.round2_targets": "pseudo_labels"},
                                       {"s3f.round2_targets": "network"}, {"s3f.keep_rule": "count"}])
def test_beta_and_round2_targets_reuse_the_s3f_stage(synthetic_dataset, clisc_cache, overrides):
    lines: list[str] = []
    _run("clisc", synthetic_dataset, clisc_cache, lines, **overrides)
    assert {line.split()[1] for line in lines if "computed" in line} == {"unet_round2", "predictions"}


@pytest.mark.brats_sample
def test_the_codes_nonzero_mask_keeps_every_voxel_of_an_official_image(brats_sample: Path) -> None:
    """Why ``official`` leaves ``sam.brain_only`` off: the code's ``img_array != 0`` on its whole-box
    z-scored image (background -mean/std) is true everywhere, so it never restricts SAM."""
    from clisc.data.discovery import discover_cases
    from clisc.data.io import load_case
    from clisc.data.preprocessing import PreprocessSettings, preprocess

    volume = preprocess(load_case(discover_cases(brats_sample)[0]), PreprocessSettings(mode="official"))
    assert (volume.image != 0).all() and volume.brain.mean() < 0.8
