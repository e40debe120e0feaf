"""SamSegmenter on the tiny SAM: equal to SamPredictor, batched encoder, embedding cache, volumes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from clisc.errors import CliscError
from clisc.foundation.sam import load_sam
from clisc.stages.slice_input import axial_slices
from clisc.stages.prompts import PROMPT_VARIANTS, PromptSettings, SamPrompt, prompts_from_mask
from clisc.stages.pseudo_labels import (
    EmbeddingCache,
    SamSegmenter,
    equalize_hist,
    prepare_slice,
    segment_volume,
)

H, W = 48, 36  # non-square slices


@pytest.fixture(scope="module")
def tiny_sam():
    torch.manual_seed(0)
    sam, _ = load_sam("tiny", "random")
    return sam


@pytest.fixture
def encoder_batches(tiny_sam):
    """Batch sizes of every image_encoder forward while the test runs (a forward hook)."""
    sizes: list[int] = []
    handle = tiny_sam.image_encoder.register_forward_hook(lambda _m, args, _o: sizes.append(args[0].shape[0]))
    yield sizes
    handle.remove()


def slices_and_masks(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` noisy ``HxW`` slices with a bright rectangle each, and that rectangle as the ROI."""
    rng = np.random.default_rng(seed)
    slices, masks = [], []
    for _ in range(n):
        r0, c0 = rng.integers(2, H // 2), rng.integers(2, W // 2)
        mask = np.zeros((H, W), dtype=bool)
        mask[r0 : r0 + rng.integers(4, H // 2), c0 : c0 + rng.integers(4, W // 2)] = True
        slices.append((rng.normal(size=(H, W)) + 3 * mask).astype(np.float32))
        masks.append(mask)
    return slices, masks


def test_equalize_hist_matches_opencv_rule() -> None:
    image = np.array([[0, 0, 10], [10, 10, 20]], dtype=np.uint8)
    # lowest level -> 0; others round(cdf above lowest x 255 / (6 - 2)): 3 x 63.75 -> 191, 4 x 63.75 -> 255
    np.testing.assert_array_equal(equalize_hist(image), [[0, 0, 191], [191, 191, 255]])
    np.testing.assert_array_equal(equalize_hist(np.full((3, 3), 7, np.uint8)), np.full((3, 3), 7))


@pytest.mark.parametrize("equalize", [False, True])
def test_prepare_slice_is_min_max_uint8_on_three_channels(equalize: bool) -> None:
    image = np.array([[-1.0, 0.0], [1.0, 3.0]])
    prepared = prepare_slice(image, equalize)
    assert prepared.dtype == np.uint8 and prepared.shape == (2, 2, 3)
    assert (prepared == prepared[:, :, :1]).all()
    expected = [[0, 85], [170, 255]] if equalize else [[0, 63], [127, 255]]
    np.testing.assert_array_equal(prepared[:, :, 0], expected)
    assert not prepare_slice(np.full((4, 5), 2.5), equalize).any()


@pytest.mark.parametrize("variant", PROMPT_VARIANTS)
@pytest.mark.parametrize("equalize", [False, True])
def test_segmenter_equals_sam_predictor(tiny_sam, variant: str, equalize: bool) -> None:
    slices, masks = slices_and_masks(5, seed=1)
    settings = PromptSettings(variant, box_dilation=2)
    prompts = [prompts_from_mask(m, settings, image=s) for m, s in zip(masks, slices)]
    logits = SamSegmenter(tiny_sam, batch_size=3, equalize=equalize).segment_logits(slices, prompts)
    predictor = SamPredictor(tiny_sam)
    for image_slice, prompt, ours in zip(slices, prompts, logits):
        assert prompt is not None
        predictor.set_image(prepare_slice(image_slice, equalize))
        reference, _, _ = predictor.predict(
            point_coords=prompt.points if prompt.has_points else None,
            point_labels=prompt.point_labels if prompt.has_points else None,
            box=prompt.box,
            multimask_output=False,
            return_logits=True,
        )
        np.testing.assert_allclose(ours, reference[0], atol=1e-4)
        np.testing.assert_array_equal(ours > tiny_sam.mask_threshold, reference[0] > tiny_sam.mask_threshold)


def test_none_prompts_are_empty_and_never_encoded(tiny_sam, encoder_batches: list[int]) -> None:
    slices, masks = slices_and_masks(5, seed=2)
    prompts: list[SamPrompt | None] = [prompts_from_mask(m, PromptSettings()) for m in masks]
    prompts[1] = prompts[3] = None
    result = SamSegmenter(tiny_sam, batch_size=2).segment(slices, prompts)
    assert result.shape == (5, H, W) and result.dtype == bool
    assert not result[1].any() and not result[3].any()
    assert encoder_batches == [2, 1]  # 3 prompted slices, one forward per batch of 2
    assert SamSegmenter(tiny_sam).segment(slices, [None] * 5).sum() == 0
    assert encoder_batches == [2, 1]


def test_second_pass_reuses_cached_embeddings(tiny_sam, encoder_batches: list[int], tmp_path: Path) -> None:
    slices, masks = slices_and_masks(4, seed=3)
    cache = EmbeddingCache(tmp_path / "emb")
    segmenter = SamSegmenter(tiny_sam, batch_size=4, cache=cache)
    first = segmenter.segment(slices, [prompts_from_mask(m, PromptSettings()) for m in masks])
    assert encoder_batches == [4] and (cache.hits, cache.misses) == (0, 4)

    s3f_prompts = [prompts_from_mask(m, PromptSettings("box")) for m in masks]  # new prompts, same slices
    second = segmenter.segment(slices, s3f_prompts)
    assert encoder_batches == [4] and (cache.hits, cache.misses) == (4, 4)
    uncached = SamSegmenter(tiny_sam, batch_size=4).segment(slices, s3f_prompts)
    np.testing.assert_array_equal(second, uncached)
    assert len(list((tmp_path / "emb").glob("*/*.npy"))) == 4

    fresh_cache = EmbeddingCache(tmp_path / "emb")  # a later run: memory empty, disk kept
    again = SamSegmenter(tiny_sam, batch_size=4, cache=fresh_cache).segment(
        slices, [prompts_from_mask(m, PromptSettings()) for m in masks]
    )
    assert encoder_batches == [4, 4] and fresh_cache.hits == 4
    np.testing.assert_array_equal(again, first)


def test_cache_keys_separate_models_and_images(tiny_sam) -> None:
    prepared = prepare_slice(np.arange(12.0).reshape(3, 4))
    assert EmbeddingCache.key("a", prepared) != EmbeddingCache.key("b", prepared)
    assert EmbeddingCache.key("a", prepared) != EmbeddingCache.key("a", prepared.reshape(4, 3, 3))
    torch.manual_seed(1)
    other, _ = load_sam("tiny", "random")
    assert SamSegmenter(other).model_tag != SamSegmenter(tiny_sam).model_tag


def test_memory_cache_keeps_the_most_recent_entries() -> None:
    cache = EmbeddingCache(max_in_memory=2)
    for name in "abc":
        cache.put(("m", name), np.zeros((1, 2, 2)))
    assert len(cache) == 2 and cache.get(("m", "a")) is None and cache.get(("m", "c")) is not None


def test_segment_volume_prompts_each_axial_slice(tiny_sam, encoder_batches: list[int]) -> None:
    slices, masks = slices_and_masks(3, seed=4)
    image = np.zeros((W, H, 5), dtype=np.float32)  # XxYxZ: SAM sees each slice transposed, HxW = YxX
    rois = np.zeros((W, H, 5), dtype=bool)
    for z, (image_slice, mask) in zip((0, 2, 3), zip(slices, masks)):
        image[:, :, z], rois[:, :, z] = image_slice.T, mask.T
    image[:, :, 4] = 1.0  # an image slice without ROI
    segmenter = SamSegmenter(tiny_sam, batch_size=8)
    volume = segment_volume(image, rois, PromptSettings(), segmenter)
    assert volume.shape == (W, H, 5) and volume.dtype == bool
    assert not volume[:, :, 1].any() and not volume[:, :, 4].any()
    expected = segmenter.segment(slices, [prompts_from_mask(m, PromptSettings()) for m in masks])
    np.testing.assert_array_equal(axial_slices(volume, [0, 2, 3]), expected)
    assert encoder_batches == [3, 3]


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _predictor_logits(sam, image_slice: np.ndarray, prompt: SamPrompt) -> np.ndarray:
    predictor = SamPredictor(sam)
    predictor.set_image(prepare_slice(image_slice))
    logits, _, _ = predictor.predict(point_coords=prompt.points if prompt.has_points else None,
                                     point_labels=prompt.point_labels if prompt.has_points else None,
                                     box=prompt.box, multimask_output=False, return_logits=True)
    return logits[0]


def test_one_batch_mixing_prompt_layouts_equals_sam_predictor(tiny_sam, encoder_batches: list[int]) -> None:
    slices, masks = slices_and_masks(6, seed=5)
    variants = ["box", "points", "box+points", "box", "points", "box+points"]
    prompts = [prompts_from_mask(m, PromptSettings(v)) for m, v in zip(masks, variants)]
    logits = SamSegmenter(tiny_sam, batch_size=6).segment_logits(slices, prompts)
    assert encoder_batches == [6]
    for image_slice, prompt, ours in zip(slices, prompts, logits):
        np.testing.assert_allclose(ours, _predictor_logits(tiny_sam, image_slice, prompt), atol=1e-4)


def test_every_prompt_variant_shares_one_encoder_pass_per_slice(tiny_sam, encoder_batches: list[int]) -> None:
    """Table 2's SAM rows, S3F and SAM-with-ground-truth prompts: one encoding per slice in all."""
    slices, masks = slices_and_masks(4, seed=6)
    segmenter = SamSegmenter(tiny_sam, batch_size=4, cache=EmbeddingCache(max_in_memory=64))
    for variant in ("box+points", "points", "box", "official"):
        segmenter.segment(slices, [prompts_from_mask(m, PromptSettings(variant), image=s)
                                   for m, s in zip(masks, slices)])
    segmenter.segment(slices, [prompts_from_mask(m, PromptSettings("box+points", box_dilation=3)) for m in masks])
    assert encoder_batches == [4]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_is_refused_on_cpu(tiny_sam, precision: str) -> None:
    with pytest.raises(CliscError, match=f"sam.precision={precision} needs a CUDA device"):
        SamSegmenter(tiny_sam, precision=precision)


def test_model_tag_names_the_precision(tiny_sam) -> None:
    assert SamSegmenter(tiny_sam, model_tag="vit_b-abc").model_tag == "vit_b-abc"
    segmenter = SamSegmenter(tiny_sam, model_tag="vit_b-abc")
    segmenter.precision = "bf16"  # as built on CUDA; embeddings of another precision are cached apart
    assert segmenter.model_tag == "vit_b-abc-bf16"


@CUDA
def test_cuda_segmenter_with_prefetch_equals_the_cpu_one(tiny_sam, tmp_path: Path) -> None:
    slices, masks = slices_and_masks(9, seed=7)
    prompts = [prompts_from_mask(m, PromptSettings()) for m in masks]
    on_cpu = SamSegmenter(tiny_sam, batch_size=2).segment_logits(slices, prompts)
    cuda_sam = load_sam("tiny", "random")[0]
    cuda_sam.load_state_dict(tiny_sam.state_dict())
    segmenter = SamSegmenter(cuda_sam, batch_size=2, device="cuda", cache=EmbeddingCache(tmp_path))
    on_cuda = segmenter.segment_logits(slices, prompts)  # 5 batches: the prefetch thread runs ahead
    np.testing.assert_allclose(on_cuda, on_cpu, atol=1e-3)
    again = segmenter.segment_logits(slices, prompts)  # from the memory cache, tensors on the GPU
    np.testing.assert_array_equal(again, on_cuda)


@CUDA
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_half_precision_encoder_stores_float16_embeddings(tiny_sam, precision: str, tmp_path: Path) -> None:
    slices, masks = slices_and_masks(4, seed=8)
    prompts = [prompts_from_mask(m, PromptSettings()) for m in masks]
    cuda_sam = load_sam("tiny", "random")[0]
    cuda_sam.load_state_dict(tiny_sam.state_dict())
    reference = SamSegmenter(cuda_sam, device="cuda").segment_logits(slices, prompts)
    half = SamSegmenter(cuda_sam, device="cuda", precision=precision, cache=EmbeddingCache(tmp_path))
    logits = half.segment_logits(slices, prompts)
    files = list(tmp_path.glob(f"*-{precision}/*.npy"))
    assert len(files) == 4 and all(np.load(f).dtype == np.float16 for f in files)
    agree = ((logits > 0) == (reference > 0)).mean()
    assert agree > 0.95, agree
    later = SamSegmenter(cuda_sam, device="cuda", precision=precision, cache=EmbeddingCache(tmp_path))
    np.testing.assert_array_equal(later.segment_logits(slices, prompts), logits)


@CUDA
@pytest.mark.brats_sample
def test_half_precision_vit_b_masks_on_real_slices_stay_close_to_fp32(brats_sample: Path) -> None:
    """benchmarks/sam_precision.py on 6 real slices (random ViT-B weights here; the script takes the
    pretrained ones): half-precision masks differ from fp32 in few pixels."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "sam_precision.py"
    spec = importlib.util.spec_from_file_location("sam_precision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    sam, _ = load_sam("vit_b", "random", device="cuda")
    slices, masks = module.real_tumour_slices(brats_sample, 6)
    for precision in ("bf16", "fp16"):
        result = module.mask_disagreement(sam, slices, masks, precision)
        print(precision, result)
        assert result["slices"] == 6 and result["fraction"] < 0.05


def test_disk_writes_in_the_background_are_never_missed(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, max_in_memory=1)
    for name in "abcd":
        cache.put(("m", name), torch.full((2, 3, 3), float(ord(name))))
    found = cache.get(("m", "a"))  # evicted from memory; its write may still be queued
    assert found is not None and float(found[0, 0, 0]) == ord("a")
    cache.flush()
    assert sorted(p.stem for p in (tmp_path / "m").glob("*.npy")) == list("abcd")


class _RecordingSegmenter:
    """Stands in for SAM: keeps the slices and prompts it is given, returns each prompt's box as a mask."""

    def __init__(self) -> None:
        self.slices: list[np.ndarray] = []
        self.prompts: list = []

    def segment(self, slices, prompts) -> np.ndarray:
        self.slices, self.prompts = list(slices), list(prompts)
        out = np.zeros((len(slices),) + slices[0].shape, bool)
        for i, prompt in enumerate(prompts):
            if prompt is not None:
                x0, y0, x1, y1 = prompt.box.astype(int)
                out[i, y0:y1 + 1, x0:x1 + 1] = True  # SAM's box: x = column, y = row
        return out


def test_official_points_are_the_public_codes_on_its_yx_slice() -> None:
    """On an asymmetric ROI, the 5 official points equal the public code's ``np.where`` picks on its
    SimpleITK slice ``image_3d[z]`` (rows = y, columns = x) as ``[column, row]``; the box mask SAM
    returns lands back on the ROI's voxels in the ``XxYxZ`` volume."""
    from clisc.stages.pseudo_labels import segment_volume

    rng = np.random.default_rng(3)
    image = rng.random((30, 44, 2)).astype(np.float32)  # XxYxZ
    roi = np.zeros(image.shape, bool)
    roi[4:9, 10:30, 1] = True  # narrow in x, long in y
    roi[9:20, 25:28, 1] = True  # an L: not symmetric under transposition
    seg = _RecordingSegmenter()
    settings = PromptSettings("official", box_dilation=0)
    out = segment_volume(image, roi, settings, seg)
    assert seg.slices[1].shape == (44, 30)  # what SAM sees: rows = y, columns = x

    zyx_image, zyx_cam = image.transpose(2, 1, 0), roi.transpose(2, 1, 0).astype(np.float64)  # sitk arrays
    img = zyx_image[1].astype(np.float64)
    masked = zyx_cam[1] * (img - img.min()) / (img.max() - img.min())
    threshold = np.histogram(masked, bins=10, range=[masked.min(), masked.max()])[1][-5]
    rows, cols = np.where(masked >= threshold)
    n = len(rows)
    code_points = [[cols[i], rows[i]] for i in (0, n - 1, int(n / 2), int(n / 3), int(n / 3 * 2))]
    np.testing.assert_array_equal(seg.prompts[1].points[:5], code_points)
    ys, xs = np.nonzero(zyx_cam[1])
    np.testing.assert_array_equal(seg.prompts[1].box, [xs.min(), ys.min(), xs.max(), ys.max()])
    assert out.shape == image.shape and not out[:, :, 0].any()
    box = np.zeros(image.shape[:2], bool)
    box[4:20, 10:30] = True  # the ROI's bounding box in x, y
    np.testing.assert_array_equal(out[:, :, 1], box)
