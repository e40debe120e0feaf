"""SaLIP: region clean-up and area filter, masked crops, CLIP crop scoring, SAM embedding reuse, the
slice gate, and end-to-end tiny runs (label-free by default, tagged when ground truth is used)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from baselines.salip import (
    CachedPredictor,
    area_filter,
    best_box,
    clean_regions,
    crop_scores,
    mask_generator,
    masked_crops,
    prompt_embedding,
    salip_volume,
    tta_grid,
)
from baselines.settings import SalipSettings
from clisc.cli import main
from clisc.pipeline.models import load_clip_cached, load_sam_cached
from clisc.pipeline.run import run_method
from clisc.stages.pseudo_labels import EmbeddingCache, SamSegmenter

TINY_GENERATOR = SalipSettings(points_per_side=4, crop_n_layers=0, pred_iou_thresh=0.0,
                               stability_score_thresh=0.0, min_mask_region_area=4)


@pytest.fixture(scope="module")
def clip():
    return load_clip_cached("tiny", "random", "cpu")


@pytest.fixture
def sam_segmenter() -> SamSegmenter:
    sam, _ = load_sam_cached("tiny", "random", "cpu")
    return SamSegmenter(sam, batch_size=4, cache=EmbeddingCache(), model_tag="tiny-test")


def _record(mask: np.ndarray) -> dict:
    rows, cols = np.nonzero(mask)
    x, y = int(cols.min()), int(rows.min())
    return {"segmentation": mask, "bbox": [x, y, int(cols.max()) - x, int(rows.max()) - y], "area": int(mask.sum())}


def test_area_filter_drops_regions_above_the_share_of_the_slice() -> None:
    small, large = np.zeros((10, 10), bool), np.ones((10, 10), bool)
    small[2:4, 2:4] = True
    kept = area_filter([_record(small), _record(large)], (10, 10), max_fraction=0.3)
    assert [r["area"] for r in kept] == [4]
    assert area_filter([_record(small)], (10, 10), max_fraction=0.04) == []  # strictly below the limit


def test_clean_regions_fills_small_holes_and_removes_small_islands() -> None:
    mask = np.zeros((20, 20), bool)
    mask[2:12, 2:12] = True
    mask[6, 6] = False  # a 1-pixel hole
    mask[17, 17] = True  # a 1-pixel island
    (cleaned,) = clean_regions([_record(mask)], min_area=4)
    assert cleaned["segmentation"][6, 6] and not cleaned["segmentation"][17, 17]
    assert cleaned["bbox"] == [2, 2, 9, 9] and cleaned["area"] == 100
    tiny = np.zeros((20, 20), bool)
    tiny[0, 0] = tiny[5, 5] = True
    (kept,) = clean_regions([_record(tiny)], min_area=4)  # all islands small: the largest stays
    assert kept["area"] == 1


def test_masked_crops_keep_the_region_and_zero_the_rest() -> None:
    image = np.full((12, 16, 3), 200, np.uint8)
    region = np.zeros((12, 16), bool)
    region[3:7, 5:11] = True
    region[3, 5] = False
    line = np.zeros((12, 16), bool)
    line[9, 2:8] = True  # a one-row region: a degenerate box, skipped as in the original
    crops, boxes = masked_crops(image, [_record(region), _record(line)])
    assert len(crops) == 1 and crops[0].shape == (3, 5, 3)  # image[y:y+h, x:x+w]
    assert crops[0][0, 0].sum() == 0 and (crops[0][1:, :] == 200).all()
    np.testing.assert_array_equal(boxes[0], [5, 3, 10, 6])


def test_the_crop_matching_the_prompt_embedding_wins(clip) -> None:
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (20 + 3 * i, 24, 3), dtype=np.uint8) for i in range(4)]
    for target in range(4):
        with torch.no_grad():
            batch = clip.normalise_images(torch.from_numpy(crops[target]).permute(2, 0, 1)[None].float() / 255)
            text = clip.model.encode_image(batch, normalize=True)[0]
        scores = crop_scores(clip, crops, text)
        assert int(np.argmax(scores)) == target and scores[target] == pytest.approx(100.0, abs=1e-3)


def test_prompt_embedding_is_the_normalised_mean_of_raw_text_features(clip) -> None:
    prompts = ["a brain tumor", "a bright mass"]
    embedding = prompt_embedding(clip, prompts)
    with torch.no_grad():
        raw = clip.model.encode_text(clip.tokenizer(prompts))
    expected = raw.mean(0) / raw.mean(0).norm()
    torch.testing.assert_close(embedding, expected)
    assert crop_scores(clip, [], embedding).shape == (0,)


def test_cached_predictor_gives_the_predictor_s_embedding_from_the_segmenter(sam_segmenter) -> None:
    image = np.random.default_rng(1).integers(0, 256, (40, 32, 3), dtype=np.uint8)
    plain = SamPredictor(sam_segmenter.sam)
    plain.set_image(image)
    cached = CachedPredictor(sam_segmenter)
    cached.full_shape = image.shape[:2]
    cached.set_image(image)
    torch.testing.assert_close(cached.features, plain.features, rtol=1e-4, atol=1e-5)
    assert cached.input_size == plain.input_size and cached.original_size == plain.original_size
    assert sam_segmenter.cache.misses == 1 and len(sam_segmenter.cache) == 1


def test_salip_encodes_each_slice_once_and_leaves_ungated_slices_empty(sam_segmenter, clip) -> None:
    rng = np.random.default_rng(2)
    volume = np.zeros((40, 36, 6), np.float32)
    volume[4:36, 4:32] = rng.normal(1.0, 0.1, (32, 28, 6))
    volume[12:20, 10:18] += 2.0
    gate = np.array([False, True, True, False, True, False])
    generator = mask_generator(sam_segmenter, TINY_GENERATOR)
    text = prompt_embedding(clip, TINY_GENERATOR.prompts)
    mask = salip_volume(volume, volume != 0, gate, sam_segmenter, generator, clip, text, TINY_GENERATOR)
    assert mask.shape == volume.shape and mask.dtype == bool
    assert not mask[:, :, ~gate].any() and not mask[volume == 0].any()
    # the generator's pass encodes each gated slice; the box pass finds every one in the cache
    assert sam_segmenter.cache.misses == gate.sum() and sam_segmenter.cache.hits >= 1
    box = best_box(np.zeros((40, 36, 3), np.uint8), generator, clip, text,
                   SalipSettings(max_area_fraction=1e-6))  # every region filtered out: no box
    assert box is None


def test_runs_end_to_end_label_free(synthetic_dataset: Path, tmp_path: Path) -> None:
    result = run_method("salip", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                        progress=False, echo=lambda _: None)
    assert len(result.per_case) == 2 and result.per_case["dsc"].between(0, 100).all()
    assert result.tags["label_free"] == "true" and result.tags["gt_switches"] == "none"
    assert result.params["baselines.salip.slices"] == "all" and "clip:tiny" in result.tags["weights"]


def test_the_adaptation_grid_is_the_original_s_at_the_default_density() -> None:
    assert tta_grid(SalipSettings())["points_per_side"] == (16, 32, 64)
    assert tta_grid(SalipSettings(points_per_side=4))["points_per_side"] == (2, 4, 8)
    assert tta_grid(SalipSettings())["stability_score_thresh"] == (0.2, 0.5, 0.8, 0.95)


@pytest.mark.slow
def test_ground_truth_uses_are_tagged(synthetic_dataset: Path, tmp_path: Path) -> None:
    result = run_method("salip", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                        progress=False, echo=lambda _: None,
                        overrides={"baselines.salip.tta_on_gt": True, "baselines.salip.slices": "ground_truth"})
    assert result.tags["label_free"] == "false"
    assert result.tags["gt_switches"] == "baselines.salip.slices=ground_truth,baselines.salip.tta_on_gt=True"
    assert "salip_tta" in result.stage_times


def test_cli_runs_salip(synthetic_dataset: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "salip", "--data", str(synthetic_dataset), "--profile", "tiny"]) == 0
    assert "salip: DSC" in capsys.readouterr().out


def test_bad_gate_is_a_one_line_error(synthetic_dataset: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "salip", "--data", str(synthetic_dataset), "--profile", "tiny",
                 "--set", "baselines.salip.slices=oracle"]) == 2
    err = capsys.readouterr().err.strip()
    assert "salip.slices must be one of" in err and "\n" not in err


def test_no_region_in_any_crop_gives_no_box_instead_of_an_index_error(sam_segmenter, clip) -> None:
    """The published generator has a crop layer (paper profile only; the tiny profile has none): when no
    crop keeps a mask, segment_anything's own generator fails in box_area; ours gives no region."""
    settings = SalipSettings(points_per_side=4, crop_n_layers=1, pred_iou_thresh=0.99, stability_score_thresh=0.99)
    image = (np.random.default_rng(0).random((60, 50, 3)) * 255).astype(np.uint8)
    generator = mask_generator(sam_segmenter, settings)
    assert generator.generate(image) == []
    assert best_box(image, generator, clip, prompt_embedding(clip, settings.prompts), settings) is None
