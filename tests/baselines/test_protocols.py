"""The `paper` and `official` protocols are CLISC's (its paper, its public code): a baseline runs its
own settings under both, and its stage keys do not move with the CLISC choices it does not use."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from clisc.pipeline.context import RunContext
from clisc.pipeline.layers import load_layer
from clisc.pipeline.methods import all_methods
from clisc.pipeline.run import method_settings, resolve_output, run_method

BASELINES = sorted(name for name, m in all_methods().items() if m.output.startswith("baselines."))
# the official protocol's keys a baseline does read: every baseline reads the preprocessed volumes, and
# Sim2Real trains CLISC's U-Net (by design: the rows differ by their training data)
USED = {name: {"preprocess.mode"} for name in BASELINES} | {"sim2real": {"preprocess.mode", "unet.network"}}


def test_every_baseline_is_listed() -> None:
    assert set(BASELINES) == {"salip", "flair_threshold", "medclip_sam", "amcons", "gradcamcons", "3d_if", "sim2real"}


@pytest.mark.parametrize("profile", ["tiny", "paper"])
@pytest.mark.parametrize("name", BASELINES)
def test_effective_settings_are_the_same_under_both_protocols(name: str, profile: str) -> None:
    method = all_methods()[name]
    paper = method_settings(method, "paper", profile, {})
    official = method_settings(method, "official", profile, {})
    assert official.protocol == "official"
    assert dataclasses.replace(official, protocol="paper", evaluation=paper.evaluation) == paper
    # the scoring conventions are the table's: every row of an official table is scored the code's way
    clisc = method_settings(all_methods()["clisc"], "official", profile, {})
    assert official.evaluation == clisc.evaluation


def test_clisc_still_takes_the_whole_protocol() -> None:
    official = method_settings(all_methods()["clisc"], "official", "tiny", {})
    assert official.sam.equalize and official.slice_labels.z_smoothing and official.unet.inference == "resize"


def _output_key(name: str, data: Path, cache: Path, protocol: str, overrides: dict) -> str:
    method = all_methods()[name]
    ctx = RunContext(data, method_settings(method, protocol, "tiny", overrides), cache_root=cache, progress=False,
                     echo=lambda _: None)
    return resolve_output(method.output)(ctx, "test")[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_stage_keys_ignore_the_protocol_and_the_clisc_choices_a_baseline_does_not_use(
        name: str, synthetic_dataset: Path, tmp_path: Path) -> None:
    """Paper, official, and paper with every official choice the baseline does not read set by hand
    (``sam.equalize``, ``slice_labels.*``, ``unet.inference``, the GT switches, ...): one output key.
    The gates run on CLIP's labels (not the tiny profile's ``all``) so that the labelling rule is read."""
    own = {f"baselines.{m}.slices": "clip" for m in ("salip", "medclip_sam")}
    cache = tmp_path / "cache"
    paper = _output_key(name, synthetic_dataset, cache, "paper", own)
    assert _output_key(name, synthetic_dataset, cache, "official", own) == paper
    clisc_choices = {k: v for k, v in load_layer("protocol", "official").items() if k not in USED[name]}
    assert {"sam.equalize", "slice_labels.z_smoothing", "unet.inference"} <= set(clisc_choices)
    assert _output_key(name, synthetic_dataset, cache, "paper", {**clisc_choices, **own}) == paper


def test_the_run_logs_which_protocol_keys_it_left_out(synthetic_dataset: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_method("flair_threshold", synthetic_dataset, protocol="official", profile="tiny",
                        cache_root=tmp_path / "cache", progress=False, echo=lines.append)
    assert "sam.equalize" in result.tags["protocol_left_out"] and result.tags["protocol"] == "official"
    assert any("keeps its own settings" in line and "slice_labels.z_smoothing" in line for line in lines)
    assert result.params["slice_labels.z_smoothing"] is False and result.params["preprocess.mode"] == "paper"


def test_healthy_slices_share_clisc_s_stage_1_under_paper_and_not_its_official_rule(
        synthetic_dataset: Path, tmp_path: Path) -> None:
    from baselines.healthy import healthy_slices
    from clisc.pipeline.steps_cam import clip_labels

    def keys(protocol: str) -> tuple[str, str]:
        ctx = RunContext(synthetic_dataset, method_settings(all_methods()["clisc"], protocol, "tiny", {}),
                         cache_root=tmp_path / "cache", progress=False, echo=lambda _: None)
        return healthy_slices(ctx)[0], clip_labels(ctx)[0]

    (healthy, clisc), (healthy_official, clisc_official) = keys("paper"), keys("official")
    assert healthy == f"healthy-clip-{clisc}"
    assert clisc_official != clisc and not healthy_official.endswith(clisc_official)
