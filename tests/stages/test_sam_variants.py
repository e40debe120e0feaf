"""The SAM stage's models: input normalisation, tiny random-weight predictions checked against each
model's published inference (MedSAM_Inference.py; sam2's SAM2ImagePredictor), and ``sam.model`` in
every SAM stage key."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clisc.errors import CliscError
from clisc.foundation.sam import SAM_ARCHS, load_sam
from clisc.pipeline.context import RunContext
from clisc.pipeline.settings import resolve_settings
from clisc.stages.prompts import SamPrompt
from clisc.stages.pseudo_labels import SamSegmenter, prepare_slice
from clisc.stages.sam_variants import MedSamSegmenter, Sam2Segmenter, SquareResize, make_segmenter, min_max_unit

HAS_SAM2 = importlib.util.find_spec("sam2") is not None
needs_sam2 = pytest.mark.skipif(not HAS_SAM2, reason="the optional sam2 package is not installed "
                                "(pip install -e .[sam2]; make venv installs it)")


def _slices(n: int = 3, shape: tuple[int, int] = (40, 52)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random(shape).astype(np.float32) for _ in range(n)]


PROMPT = SamPrompt(box=np.array([8.0, 6.0, 40.0, 30.0]), points=np.array([[20.0, 15.0], [30.0, 20.0]]),
                   point_labels=np.array([1, 1]))
BOX_ONLY = SamPrompt(box=np.array([8.0, 6.0, 40.0, 30.0]), points=np.zeros((0, 2)), point_labels=np.zeros(0))


def test_medsam_normalisation_is_min_max_without_mean_std_or_padding():
    pixels = torch.tensor([[10.0, 20.0], [30.0, 50.0]]).expand(1, 3, 2, 2)
    unit = min_max_unit(pixels)
    assert torch.allclose(unit[0, 0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    sam, _ = load_sam("medsam_tiny", "random")
    segmenter = MedSamSegmenter(sam)
    batch = torch.rand(2, 3, 256, 256) * 200 + 20
    out = segmenter._normalise(batch)
    assert out.shape == batch.shape and float(out.amin()) == 0.0 and float(out.amax()) == 1.0
    # SAM's own preprocessing is (x - pixel_mean) / std on 0-255 with zero padding: not this
    assert not torch.allclose(out, sam.preprocess(batch))


def test_square_resize_squashes_and_scales_prompts_per_axis():
    transform = SquareResize(1024)
    image = np.zeros((40, 80, 3), np.uint8)
    assert transform.apply_image(image).shape == (1024, 1024, 3)
    box = transform.apply_boxes(np.array([[8.0, 4.0, 40.0, 20.0]]), (40, 80))
    assert np.allclose(box, [[8 * 1024 / 80, 4 * 1024 / 40, 40 * 1024 / 80, 20 * 1024 / 40]])  # box / [W,H,W,H] * 1024


def _medsam_reference(sam, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """MedSAM_Inference.py's steps on one HxW slice (its skimage resize replaced by the same torch resize)."""
    prepared = prepare_slice(image)
    h, w = image.shape
    size = sam.image_encoder.img_size
    img = SquareResize(size).apply_image(prepared).astype(np.float64)
    img = (img - img.min()) / np.clip(img.max() - img.min(), 1e-8, None)
    tensor = torch.tensor(img).float().permute(2, 0, 1)[None]
    box_1024 = box[None] / np.array([w, h, w, h]) * size
    with torch.no_grad():
        embedding = sam.image_encoder(tensor)
        sparse, dense = sam.prompt_encoder(points=None, boxes=torch.as_tensor(box_1024, dtype=torch.float)[:, None],
                                           masks=None)
        low_res, _ = sam.mask_decoder(image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=False)
        pred = F.interpolate(torch.sigmoid(low_res), size=(h, w), mode="bilinear", align_corners=False)
    return pred[0, 0].numpy() > 0.5


def test_tiny_medsam_box_prediction_matches_its_published_inference():
    torch.manual_seed(0)
    sam, record = load_sam("medsam_tiny", "random")
    assert SAM_ARCHS["medsam"].family == "medsam" and record.sha256 == "random"
    segmenter = make_segmenter("medsam_tiny", sam, 2, False, None, "cpu", "medsam-test")
    assert isinstance(segmenter, MedSamSegmenter)
    slices = _slices()
    masks = segmenter.segment(slices, [BOX_ONLY, None, BOX_ONLY])
    assert masks.shape == (3, 40, 52) and masks.dtype == bool and not masks[1].any()
    for z in (0, 2):
        reference = _medsam_reference(sam, slices[z], BOX_ONLY.box)
        assert (masks[z] != reference).mean() < 1e-3  # identical up to float ties at p = 0.5
    points = segmenter.segment(slices[:1], [PROMPT])  # CLISC's box + points reach MedSAM too
    assert points.shape == (1, 40, 52)


def test_sam_family_keeps_sams_normalisation():
    sam, _ = load_sam("tiny", "random")
    segmenter = make_segmenter("tiny", sam, 2, False, None, "cpu", "sam-test")
    assert type(segmenter) is SamSegmenter
    batch = torch.rand(1, 3, 256, 256) * 255
    expected = (batch - sam.pixel_mean) / sam.pixel_std
    assert torch.allclose(segmenter._normalise(batch), expected)


@needs_sam2
def test_tiny_sam2_normalisation_and_prediction_match_sam2s_image_predictor():
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from clisc.foundation.sam2_models import SAM2_MEAN, SAM2_STD

    torch.manual_seed(0)
    model, record = load_sam("sam2.1_tiny", "random")
    assert record.sha256 == "random" and model.image_size == 128
    segmenter = make_segmenter("sam2.1_tiny", model, 2, False, None, "cpu", "sam2-test")
    assert isinstance(segmenter, Sam2Segmenter)
    transforms = segmenter.predictor._transforms
    assert tuple(transforms.mean) == SAM2_MEAN and tuple(transforms.std) == SAM2_STD
    slices = _slices()
    logits = segmenter.segment_logits(slices, [PROMPT, None, BOX_ONLY])
    assert logits.shape == (3, 40, 52) and np.isneginf(logits[1]).all()
    reference = SAM2ImagePredictor(model)
    reference._bb_feat_sizes = [(32, 32), (16, 16), (8, 8)]  # 128 px: 1/4, 1/8, 1/16
    for z, prompt in ((0, PROMPT), (2, BOX_ONLY)):
        reference.set_image(prepare_slice(slices[z]))
        expected, _, _ = reference.predict(prompt.points if prompt.has_points else None,
                                           prompt.point_labels if prompt.has_points else None, prompt.box,
                                           multimask_output=False, return_logits=True)
        assert np.allclose(logits[z], expected[0], atol=1e-4)


def test_sam2_without_the_package_is_one_line(monkeypatch):
    if HAS_SAM2:
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sam2" else object())
    from clisc.errors import WeightsError

    with pytest.raises(WeightsError, match=r"SAM 2.1 needs the sam2 package: pip install -e .\[sam2\]"):
        load_sam("sam2.1_tiny", "random")


def test_unknown_sam_model_is_a_one_line_setting_error():
    with pytest.raises(CliscError, match="setting sam.model='sam3': model must be one of vit_b, vit_l, vit_h, medsam"):
        resolve_settings("paper", "tiny", {"sam.model": "sam3"})


@pytest.mark.parametrize("model", ["vit_b", "vit_h", "medsam"] + (["sam2.1_hiera_b+"] if HAS_SAM2 else []))
def test_sam_model_and_weights_reach_every_sam_stage_key(model, synthetic_dataset, tmp_path):
    """The tag keying SAM's stages (and its embedding cache) names the setting, the tiny model built for
    it and its weights' sha256; the run's weights tag names the setting too."""
    from clisc.pipeline.steps_seg import _s3f_reads, segmenter

    settings = resolve_settings("paper", "tiny", {"sam.model": model, "foundation.weights": "random"})
    ctx = RunContext(synthetic_dataset, settings, 0, tmp_path, progress=False, echo=lambda _: None)
    sam = segmenter(ctx)
    tiny = SAM_ARCHS[model].tiny
    assert sam.model_tag == f"{model}-{tiny}-" + ("sam_sam2.1_tiny" if tiny == "sam2.1_tiny" else
                                                  f"sam_{tiny}") + "-random"
    assert ctx.weights["sam"].startswith(f"{model}:")
    assert _s3f_reads(ctx, sam)["model"] == sam.model_tag
    other = RunContext(synthetic_dataset, resolve_settings("paper", "tiny", {"foundation.weights": "random",
                       "sam.model": "vit_l"}), 0, tmp_path, progress=False, echo=lambda _: None)
    assert segmenter(other).model_tag != sam.model_tag


@needs_sam2
def test_sam2_checkpoint_file_loads_strictly_and_is_recorded_by_its_sha256(tmp_path):
    from clisc.errors import WeightsError
    from clisc.foundation.weights import sha256_file

    torch.manual_seed(1)
    model, _ = load_sam("sam2.1_tiny", "random")
    path = tmp_path / "sam2_tiny.pt"
    torch.save({"model": model.state_dict()}, path)  # the layout of sam2's checkpoints
    loaded, record = load_sam("sam2.1_tiny", str(path))
    assert record.sha256 == sha256_file(path) and record.name == "sam_sam2.1_tiny:sam2_tiny.pt"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    torch.save({"model": {"nothing": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="bad.pt: not a SAM 2.1 checkpoint for this architecture"):
        load_sam("sam2.1_tiny", str(tmp_path / "bad.pt"))


def test_medsam_checkpoint_file_loads_into_the_sam_architecture(tmp_path):
    from clisc.foundation.weights import sha256_file

    torch.manual_seed(2)
    sam, _ = load_sam("medsam_tiny", "random")
    path = tmp_path / "medsam_tiny.pth"
    torch.save(sam.state_dict(), path)  # MedSAM ships a plain Sam state dict
    loaded, record = load_sam("medsam_tiny", str(path))
    assert record.sha256 == sha256_file(path)
    assert all(torch.equal(a, b) for a, b in zip(sam.state_dict().values(), loaded.state_dict().values()))
