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


@pytest.mark.parametrize("protocol", ["paper", "official"])
def test_official_round1_leaves_out_cases_without_a_roi(monkeypatch, protocol):
    """The code writes no SAM label for a case whose post-processed CAM is empty and its round-1
    loader skips it; the paper protocol trains on every case (an empty ROI: an empty target)."""
    roi, empty = np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool)
    roi[1:3, 1:3, 1:3] = True
    labels = {"a": roi.astype(np.uint8), "b": empty.astype(np.uint8), "c": roi.astype(np.uint8)}
    rois = {"a": roi, "b": empty, "c": roi}
    settings = resolve_settings(protocol)
    seen = {}
    monkeypatch.setattr(steps_seg, "sam_pseudo_labels", lambda ctx, split: ("labels-key", labels))
    monkeypatch.setattr(steps_seg, "roi_masks", lambda ctx, split, which, post: ("rois-key", rois))

    def train_network(ctx, name, inputs, targets, reads=None):
        seen.update(name=name, inputs=inputs, targets=dict(targets()), reads=reads)
        return "key", None

    monkeypatch.setattr(steps_seg, "train_network", train_network)
    steps_seg.unet_round1(SimpleNamespace(settings=settings))
    skip = protocol == "official"
    assert settings.sam.skip_empty_rois is skip
    assert sorted(seen["targets"]) == (["a", "c"] if skip else ["a", "b", "c"])
    assert seen["reads"] == {"skip_empty_rois": skip}  # in the stage key


def test_round1_with_no_roi_at_all_stops_with_one_line():
    from clisc.errors import CliscError

    empty = np.zeros((2, 2, 2), np.uint8)
    with pytest.raises(CliscError, match="empty ROI"):
        steps_seg.round1_targets({"a": empty}, {"a": empty}, skip_empty_rois=True)
