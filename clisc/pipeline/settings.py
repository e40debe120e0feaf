"""All settings of one pipeline run, composed from each stage's own settings dataclass.

Settings are resolved in layers, each a mapping of dotted keys (``"amda.alpha": 20``):
defaults (the paper) <- protocol (``protocols/<name>.yaml``: method choices) <- profile
(``profiles/<name>.yaml``: compute sizes) <- method overrides (ablations) <- user overrides.
Protocols and profiles are data, not code; the resolved settings hash into every stage's cache key.
A protocol is CLISC's (its paper's text or its public code): a baseline of Table 1 takes only the
protocol's ``baselines.*`` keys (``Method.protocol_scope``), so it runs the same under every protocol.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import yaml

from baselines.settings import BaselineSettings
from clisc.data.preprocessing import PreprocessSettings
from clisc.errors import CliscError
from clisc.evaluation.evaluate import EvaluationSettings
from clisc.foundation import catalogue
from clisc.pipeline.layers import load_layer
from clisc.pipeline.result import flatten
from clisc.stages.amda import AmdaSettings
from clisc.stages.cam import THRESHOLD_RULES
from clisc.stages.classifier import ClassifierSettings
from clisc.stages.prompts import PromptSettings
from clisc.stages.s3f import S3FSettings
from clisc.stages.slice_labels import SliceLabelSettings
from clisc.stages.unet3d import UNetSettings



GROUND_TRUTH = "ground_truth"  # the value of a multi-choice setting that reads ground-truth labels


def _one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}")


@dataclass(frozen=True)
class FoundationSettings:
    """Which foundation models and weights: ``weights`` is ``pretrained``, ``random`` or a folder.
    ``clip_arch``: the slice-label stage's CLIP (``clisc.foundation.catalogue``; the SAM stage's model
    is ``sam.model``)."""

    clip_arch: str = "ViT-B-32-quickgelu"
    size: str = "base"  # "tiny" swaps every model for a small one of the same family (tests, demo)
    weights: str = "pretrained"
    # with random weights only: hub-only architectures (BiomedCLIP) built from vendored configs of the same
    # shapes (clisc.foundation.clip.OFFLINE_ARCHS), so the paper-size models need no download at all
    offline: bool = False

    def __post_init__(self) -> None:
        _one_of("clip_arch", self.clip_arch, catalogue.choices("foundation.clip_arch"))


@dataclass(frozen=True)
class SliceSelection:
    """Which axial slices enter the 2D stages (every ``stride``-th slice with brain in it) and the
    source of their tumour/normal labels: ``clip`` (the paper) or ``ground_truth`` (an oracle: tumour
    present in the slice's segmentation; a ground-truth use that needs no CLIP weights)."""

    stride: int = 1
    labels: str = "clip"

    def __post_init__(self) -> None:
        _one_of("labels", self.labels, ("clip", GROUND_TRUTH))


@dataclass(frozen=True)
class CamSettings:
    """Layer-CAM target layers, which training slices get a CAM, and the binarisation that turns a
    CAM into a ROI (see ``clisc.stages.cam``).

    ``layers``: ResNet50 modules fused by maximum (paper: "intermediate layers"; ``layer3`` as the
    code). ``threshold_rule``: ``fixed`` (``cam >= threshold``), ``otsu_slice`` or ``otsu_volume``.
    ``train_gate``: training slices with a CAM are those ``labels`` calls tumour (paper, CLIP or the
    oracle) or those the ``classifier`` calls tumour (the code); other splits always use the
    classifier's verdict. ``postprocess``: the code's 3x3x3 opening + components >= 1/3 of the
    largest, on the ROIs that prompt SAM; ``postprocess_scored``: the same on the CAM rows scored as
    segmentations (raw CAM, CAM with AMDA).
    """

    layers: tuple[str, ...] = ("layer3",)
    threshold: float = 0.5
    threshold_rule: str = "fixed"
    train_gate: str = "labels"
    postprocess: bool = False
    postprocess_scored: bool = False

    def __post_init__(self) -> None:
        _one_of("threshold_rule", self.threshold_rule, THRESHOLD_RULES)
        _one_of("train_gate", self.train_gate, ("labels", "classifier"))


@dataclass(frozen=True)
class SamSettings:
    """``model``: the SAM stage's model (``clisc.foundation.catalogue``): SAM ViT-B/L/H, MedSAM or SAM 2.1."""

    model: str = "vit_b"
    batch_size: int = 8
    equalize: bool = False  # the code equalises the slice histogram before SAM
    brain_only: bool = False  # SAM's masks zeroed outside the brain (the code's `image != 0` never does it)
    # a training case whose ROIs are all empty gets no SAM pseudo-label and round 1 leaves it out (the code)
    skip_empty_rois: bool = False
    # image embeddings reused by S3F and later runs: "disk" (ViT-B: 4 MiB per prompted slice),
    # "memory" (this process only) or "off"
    embedding_cache: str = "disk"
    precision: str = "fp32"  # image encoder autocast on CUDA: "fp32" | "bf16" | "fp16"
    # schedule length: at most this many prompted slices per volume go through SAM (evenly spaced; the
    # others stay empty); None = every one (the paper). Only the paper-size smoke run on CPU sets it.
    max_slices: int | None = None

    def __post_init__(self) -> None:
        _one_of("model", self.model, catalogue.choices("sam.model"))
        if self.max_slices is not None and (isinstance(self.max_slices, bool) or self.max_slices < 1):
            raise ValueError(f"max_slices must be a positive integer or null, got {self.max_slices!r}")


@dataclass(frozen=True)
class GroundTruthSwitches:
    """The public code's uses of ground truth; all off in the label-free ``paper`` protocol."""

    gate_cams_with_gt: bool = False  # CAMs only for slices whose GT label is tumour
    tune_cam_threshold_on_gt: bool = False  # CAM threshold chosen by validation GT Dice
    select_checkpoints_on_gt: bool = False  # classifier / U-Net checkpoints chosen on validation GT

    def active(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name)]


@dataclass(frozen=True)
class Settings:
    protocol: str = "paper"
    profile: str = "paper"
    split_seed: int = 0  # the 7:1:2 split is fixed across training seeds
    preprocess: PreprocessSettings = field(default_factory=PreprocessSettings)
    slices: SliceSelection = field(default_factory=SliceSelection)
    foundation: FoundationSettings = field(default_factory=FoundationSettings)
    slice_labels: SliceLabelSettings = field(default_factory=SliceLabelSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    cam: CamSettings = field(default_factory=CamSettings)
    amda: AmdaSettings = field(default_factory=AmdaSettings)
    prompts: PromptSettings = field(default_factory=PromptSettings)
    sam: SamSettings = field(default_factory=SamSettings)
    unet: UNetSettings = field(default_factory=UNetSettings)
    s3f: S3FSettings = field(default_factory=S3FSettings)
    gt: GroundTruthSwitches = field(default_factory=GroundTruthSwitches)
    baselines: BaselineSettings = field(default_factory=BaselineSettings)  # Table 1's other rows
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)  # scoring conventions, no stage

    @property
    def label_free(self) -> bool:
        """No ground-truth switch of the pipeline (``PIPELINE_GT_SWITCHES``) is on."""
        from clisc.pipeline.methods import PIPELINE_GT_SWITCHES

        return not ground_truth_uses(self, PIPELINE_GT_SWITCHES)

    def flat(self) -> dict[str, Any]:
        """``{"section.name": value}`` for logging (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(dataclasses.asdict(self)).items()}


def _coerce(current: Any, value: Any, key: str) -> Any:
    """Match the type of the default (YAML lists -> tuples, ints -> floats)."""
    if isinstance(current, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise CliscError(f"setting {key}: expected true/false, got {value!r}")
    return value


def _replaced(node: Any, path: list[str], value: Any, key: str) -> Any:
    """``node`` (a frozen dataclass) with the field at ``path`` set to ``value``, at any depth."""
    head, rest = path[0], path[1:]
    if not dataclasses.is_dataclass(node) or head not in {f.name for f in dataclasses.fields(node)}:
        raise CliscError(f"unknown setting {key!r}")
    current = getattr(node, head)
    if rest:
        return dataclasses.replace(node, **{head: _replaced(current, rest, value, key)})
    if dataclasses.is_dataclass(current):
        raise CliscError(f"setting {key!r} is a section; set one of its fields, e.g. {key}.<name>")
    try:
        return dataclasses.replace(node, **{head: _coerce(current, value, key)})
    except ValueError as err:  # a settings dataclass refusing the value in __post_init__
        raise CliscError(f"setting {key}={value!r}: {err}") from None


def apply_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """Return a copy with dotted-key overrides applied (``"amda.alpha"``,
    ``"baselines.amcons.epochs"``); unknown keys are an error."""
    for key, value in overrides.items():
        settings = _replaced(settings, key.split("."), value, key)
    return settings


def setting(settings: Settings, key: str) -> Any:
    """The value of a dotted setting, e.g. ``setting(s, "baselines.healthy_source")``."""
    node: Any = settings
    for part in key.split("."):
        if not dataclasses.is_dataclass(node) or not hasattr(node, part):
            raise CliscError(f"unknown setting {key!r}")
        node = getattr(node, part)
    return node


def ground_truth_uses(settings: Settings, switches: Iterable[str], when: Mapping[str, str] | None = None
                      ) -> list[str]:
    """The ground-truth uses among the dotted ``switches`` (a method's ``gt_switches``): a switch is
    active when its value is ``True`` or ``"ground_truth"`` and the condition ``when[switch]`` (a
    method's ``gt_switches_when``), if any, holds: a boolean setting that is on, or ``key=a|b``, a
    setting whose value is one of those listed. Names: the field for ``gt.*`` switches
    (``gate_cams_with_gt``), ``key=value`` otherwise (``baselines.healthy_source=ground_truth``)."""
    uses = []
    for key in switches:
        value = setting(settings, key)
        if when and key in when and not _holds(settings, when[key]):
            continue
        if value is True or value == GROUND_TRUTH:
            uses.append(key.split(".", 1)[1] if key.startswith("gt.") else f"{key}={value}")
    return uses


def _holds(settings: Settings, condition: str) -> bool:
    """``"a.b"``: the boolean setting is on; ``"a.b=x|y"``: the setting's value is x or y."""
    key, sep, values = condition.partition("=")
    if not sep:
        return setting(settings, key) is True
    return str(setting(settings, key)) in values.split("|")


def parse_override(text: str) -> tuple[str, Any]:
    """``"amda.alpha=10"`` -> ``("amda.alpha", 10)`` (value parsed as YAML)."""
    key, sep, value = text.partition("=")
    if not sep:
        raise CliscError(f"override {text!r}: expected KEY=VALUE, e.g. amda.alpha=10")
    return key.strip(), yaml.safe_load(value)


def protocol_layer(protocol: str, scope: tuple[str, ...] | None = None) -> tuple[dict[str, Any], list[str]]:
    """``(applied, left_out)``: the overrides of ``protocol`` whose keys start with one of the
    prefixes ``scope`` (None: all of them), and the keys left out (a method's ``protocol_scope``)."""
    layer = load_layer("protocol", protocol)
    if scope is None:
        return layer, []
    applied = {k: v for k, v in layer.items() if k.startswith(tuple(scope))}
    return applied, [k for k in layer if k not in applied]


def resolve_settings(
    protocol: str = "paper",
    profile: str = "paper",
    overrides: Mapping[str, Any] | None = None,
    protocol_scope: tuple[str, ...] | None = None,
) -> Settings:
    """Defaults <- protocol <- profile <- overrides (see module docstring); ``protocol_scope``: the
    key prefixes of the protocol layer applied (a method's ``protocol_scope``; None: all)."""
    settings = Settings(protocol=protocol, profile=profile)
    settings = apply_overrides(settings, protocol_layer(protocol, protocol_scope)[0])
    settings = apply_overrides(settings, load_layer("profile", profile))
    return apply_overrides(settings, overrides or {})
