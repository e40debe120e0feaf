"""``clisc weights``: every model with its source, file, size, sha256 and what is verified here."""
from __future__ import annotations

import hashlib

from clisc.cli import main
from clisc.foundation import catalogue
from clisc.foundation.sam import SAM_ARCHS, SAM_MODELS
from clisc.foundation.weights import WEIGHTS


def test_catalogue_covers_every_choice_and_registry_file():
    assert catalogue.choices("sam.model") == SAM_MODELS
    assert {m.weights for m in catalogue.MODELS if m.weights} == set(WEIGHTS)
    for model in catalogue.MODELS:
        if model.setting == "sam.model":
            assert SAM_ARCHS[model.value].weights_name == model.weights
        assert model.normalisation


def test_listing_says_what_is_verified(tmp_path, capsys):
    (tmp_path / "medsam_vit_b.pth").write_bytes(b"not really medsam")
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"truncated")
    assert main(["weights", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    blocks = {block.split(":", 1)[0]: block for block in out.split("\n") if block and not block.startswith(" ")}
    assert len(blocks) == len(catalogue.MODELS)
    medsam = out.split("MedSAM (ViT-B):", 1)[1].split("\nSAM 2.1", 1)[0]
    digest = hashlib.sha256(b"not really medsam").hexdigest()
    assert "sha256:   not published" in medsam and f"present, sha256 {digest}: no published checksum" in medsam
    vit_b = out.split("SAM ViT-B:", 1)[1].split("\nSAM ViT-L", 1)[0]
    assert "present, FAILS verification: " in vit_b and "9 bytes, expected 375042383" in vit_b
    assert "verified: not present (expected at" in out.split("SAM ViT-L:", 1)[1].split("\n")[6]
    assert "Hugging Face hub timm/vit_base_patch32_clip_224.openai" in out


def test_foundation_models_page_holds_the_generated_table():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "FOUNDATION_MODELS.md").read_text()
    section = page.split("<!-- generated: clisc weights --markdown -->\n", 1)[1].split("<!-- end generated -->", 1)[0]
    assert section == catalogue.markdown_table(), "regenerate with: clisc weights --markdown"
