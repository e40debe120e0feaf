"""Settings resolve in layers: defaults (paper) <- protocol <- profile <- method <- user."""
import pytest
import yaml

from clisc.errors import CliscError
from clisc.pipeline.methods import METHODS, PIPELINE_GT_SWITCHES, get_method
from clisc.pipeline.layers import HERE, PROFILES, PROTOCOLS
from clisc.pipeline.settings import apply_overrides, ground_truth_uses, parse_override, resolve_settings, setting

PROFILE_DIR = HERE / "profiles"


def test_paper_protocol_is_label_free_with_paper_defaults():
    s = resolve_settings("paper", "paper")
    assert s.label_free and s.gt.active() == []
    assert s.preprocess.mode == "paper"
    assert s.classifier.epochs == 200 and s.classifier.lr == 1e-4 and s.classifier.batch_size == 8
    assert s.unet.channels == (16, 32, 64, 128, 256) and s.unet.patch_size == (128, 128, 128)
    assert s.unet.lr == 0.01 and s.unet.batch_size == 2 and s.unet.epochs == 400
    assert s.s3f.beta == 20.0 and s.s3f.round2_targets == "sam"
    assert s.prompts.variant == "box+points"


def test_official_protocol_names_every_ground_truth_use():
    s = resolve_settings("official", "paper")
    assert not s.label_free
    assert set(s.gt.active()) == {"gate_cams_with_gt", "tune_cam_threshold_on_gt", "select_checkpoints_on_gt"}
    assert (s.preprocess.mode, s.amda.mode, s.prompts.variant, s.prompts.box_dilation) == (
        "official", "official", "official", 10)
    assert s.classifier.epochs == 400 and s.unet.inference == "resize" and s.s3f.round2_targets == "network"


# the public code's choices the paper's text does not make: (setting, paper protocol, official protocol)
CODE_CHOICES = [
    ("cam.train_gate", "labels", "classifier"),
    ("cam.postprocess", False, True),
    ("cam.postprocess_scored", False, True),
    ("sam.brain_only", False, False),
    ("s3f.largest_component", False, True),
    ("s3f.empty_prediction", "zero", "drop"),
    ("s3f.keep_rule", "percentile", "count"),
    ("evaluation.empty_prediction", "penalty", "zero"),
    ("evaluation.std_ddof", 1, 0),
    ("amda.mode", "paper", "official"),
    ("amda.masking", "region", "region"),
    ("cam.threshold_rule", "fixed", "fixed"),
    ("slices.labels", "clip", "clip"),
]


@pytest.mark.parametrize("key, paper, official", CODE_CHOICES)
def test_code_choices_are_switches_off_in_the_paper_protocol(key, paper, official):
    assert setting(resolve_settings("paper"), key) == paper
    assert setting(resolve_settings("official"), key) == official


def test_the_slice_label_oracle_is_a_ground_truth_use():
    s = resolve_settings(overrides={"slices.labels": "ground_truth"})
    assert "slices.labels" in PIPELINE_GT_SWITCHES and not s.label_free
    assert ground_truth_uses(s, PIPELINE_GT_SWITCHES) == ["slices.labels=ground_truth"]


def test_profile_sizes_apply_on_top_of_the_protocol():
    s = resolve_settings("official", "demo")
    demo = yaml.safe_load((PROFILE_DIR / "demo.yaml").read_text())
    assert s.foundation.size == "tiny" and s.classifier.epochs == demo["classifier.epochs"] != 400  # profile wins
    assert s.prompts.variant == "official"  # protocol choices stay


@pytest.mark.parametrize("text,expected", [
    ("amda.alpha=10", ("amda.alpha", 10)),
    ("unet.channels=[4, 8]", ("unet.channels", [4, 8])),
    ("gt.gate_cams_with_gt=true", ("gt.gate_cams_with_gt", True)),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_overrides_coerce_types_and_reject_unknown_keys():
    s = apply_overrides(resolve_settings(), {"amda.alpha": 10, "unet.channels": [4, 8, 16]})
    assert s.amda.alpha == 10.0 and isinstance(s.amda.alpha, float)
    assert s.unet.channels == (4, 8, 16)
    with pytest.raises(CliscError, match="unknown setting"):
        apply_overrides(s, {"amda.nope": 1})
    with pytest.raises(CliscError, match="unknown setting"):
        apply_overrides(s, {"nosection.x": 1})
    with pytest.raises(CliscError, match="true/false"):
        apply_overrides(s, {"gt.gate_cams_with_gt": "yes"})


def test_unknown_profile_and_protocol_are_one_line_errors():
    with pytest.raises(CliscError, match="unknown profile"):
        resolve_settings("paper", "huge")
    with pytest.raises(CliscError, match="unknown protocol"):
        resolve_settings("mine", "paper")
    assert set(PROFILES) == {"paper", "demo", "tiny", "cpu"} and set(PROTOCOLS) == {"paper", "official"}


def test_flat_settings_are_loggable():
    flat = resolve_settings().flat()
    assert flat["amda.alpha"] == 20.0 and flat["unet.channels"] == [16, 32, 64, 128, 256]
    assert all("." in k or k in {"protocol", "profile", "split_seed"} for k in flat)


def test_ablations_are_declared_differences_from_clisc():
    assert get_method("no_s3f").overrides == {"s3f.beta": 0.0}
    assert get_method("sam_box").overrides == {"prompts.variant": "box"}
    assert get_method("clisc").overrides == {}
    assert {m.name for m in METHODS.values() if not m.label_free} == {"fully_supervised", "sam_gt_prompts"}
    with pytest.raises(CliscError, match="unknown method"):
        get_method("clisc2")
