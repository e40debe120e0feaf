"""MedCLIP-SAM: the per-slice chain (saliency -> CRF -> box -> SAM) and end-to-end tiny runs, with the
fine-tuning and weak-supervision options."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.crf import dense_crf, largest_region_box
from baselines.gscorecam import gscorecam
from baselines.medclip_sam import medclip_volume, saliency_box, text_embedding
from baselines.settings import MedClipSamSettings
from clisc.cli import main
from clisc.pipeline.models import load_clip_cached, load_sam_cached
from clisc.pipeline.run import run_method
from clisc.stages.pseudo_labels import EmbeddingCache, SamSegmenter, prepare_slice
from clisc.stages.slice_input import model_input_volume

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pydensecrf") is None,
                                reason="pydensecrf2 not installed (pip install -e '.[crf]')")
SETTINGS = MedClipSamSettings(saliency_channels=8, saliency_batch_size=8)


def test_volume_chain_boxes_gated_slices_and_stays_in_the_brain() -> None:
    clip = load_clip_cached("tiny", "random", "cpu")
    sam, _ = load_sam_cached("tiny", "random", "cpu")
    segmenter = SamSegmenter(sam, batch_size=4, cache=EmbeddingCache(), model_tag="tiny-test")
    rng = np.random.default_rng(0)
    volume = np.zeros((40, 36, 5), np.float32)
    volume[4:36, 4:32] = rng.normal(1.0, 0.1, (32, 28, 5))
    gate = np.array([True, False, True, True, False])
    text = text_embedding(clip, SETTINGS.text_prompts)
    prepared = prepare_slice(model_input_volume(volume, volume != 0, [0])[:, :, 0])
    box = saliency_box(prepared, clip, text, SETTINGS)
    image = torch.from_numpy(prepared).permute(2, 0, 1)[None].float() / 255
    cam = gscorecam(clip, image, text, channels=8, batch_size=8, out_size=(40, 36)).cam
    expected = largest_region_box(dense_crf(prepared, cam))  # the chain, step by step
    assert (box is None and expected is None) or np.array_equal(box, expected)
    mask = medclip_volume(volume, volume != 0, gate, segmenter, clip, text, SETTINGS)
    assert mask.shape == volume.shape and mask.dtype == bool
    assert not mask[:, :, ~gate].any() and not mask[volume == 0].any()
    assert segmenter.cache.misses <= gate.sum()  # only slices with a box reach SAM's encoder


def test_runs_end_to_end_label_free(synthetic_dataset: Path, tmp_path: Path) -> None:
    result = run_method("medclip_sam", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                        progress=False, echo=lambda _: None)
    assert len(result.per_case) == 2 and result.per_case["dsc"].between(0, 100).all()
    assert result.tags["label_free"] == "true" and result.params["baselines.medclip_sam.finetune"] is False


@pytest.mark.slow
def test_finetuned_and_weakly_supervised_variant(synthetic_dataset: Path, tmp_path: Path) -> None:
    overrides = {"baselines.medclip_sam.finetune": True, "baselines.medclip_sam.weak_supervision": True}
    result = run_method("medclip_sam", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                        progress=False, echo=lambda _: None, overrides=overrides)
    assert {"medclip_finetune", "medclip_sam", "medclip_sam_unet", "predictions"} <= set(result.stage_times)
    assert result.tags["label_free"] == "true" and len(result.per_case) == 2


def test_ground_truth_slices_are_tagged(synthetic_dataset: Path, tmp_path: Path) -> None:
    result = run_method("medclip_sam", synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                        progress=False, echo=lambda _: None,
                        overrides={"baselines.medclip_sam.slices": "ground_truth"})
    assert result.tags["label_free"] == "false"
    assert result.tags["gt_switches"] == "baselines.medclip_sam.slices=ground_truth"


def test_cli_runs_medclip_sam(synthetic_dataset: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "medclip_sam", "--data", str(synthetic_dataset), "--profile", "tiny"]) == 0
    assert "medclip_sam: DSC" in capsys.readouterr().out
