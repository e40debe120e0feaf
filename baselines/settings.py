"""Settings of the Table-1 baselines: one frozen dataclass per method, gathered in ``BaselineSettings``
(the ``baselines`` section of ``clisc.pipeline.settings.Settings``; keys such as
``baselines.amcons.epochs``). Defaults are the published settings (``../shared/docs/METHOD.md``
section 5); the ``demo``/``tiny`` profiles shrink them. Pure dataclasses: importing this module
imports nothing heavy.

Ground truth: a setting whose value is ``"ground_truth"`` (or ``True`` for a ``*_on_gt`` switch) reads
labels; each method lists such settings in its ``gt_switches`` and a run that turns one on is tagged
``label_free=false``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

HEALTHY_SOURCES = ("clip", "ground_truth")


@dataclass(frozen=True)
class FlairThresholdSettings:
    """A sanity floor (Meissen et al. 2021): brain voxels above a fixed percentile of the brain's
    FLAIR intensity, then a light morphological clean-up."""

    percentile: float = 95.0  # of the case's own brain voxels; fixed a priori, never tuned on labels
    opening_radius: int = 1  # binary opening with a ball of this radius (voxels); 0 = none
    min_component_ml: float = 1.0  # connected components smaller than this are dropped


@dataclass(frozen=True)
class ConstrainedVaeSettings:
    """AMCons / GradCAMCons (Silva-Rodriguez et al., MedIA 2022): a VAE trained on healthy slices with
    an attention constraint; the attention map is the anomaly map."""

    input_size: int = 224
    latent_dim: int = 32
    epochs: int = 300
    batch_size: int = 8
    lr: float = 1e-4
    w_kl: float = 10.0
    w_constraint: float = 0.1  # AMCons: w_H on the attention entropy; GradCAMCons: the log-barrier weight
    t_barrier: float = 10.0  # GradCAMCons' log-barrier t
    threshold_percentile: float = 95.0  # label-free threshold rule (see the module of each method)


@dataclass(frozen=True)
class ImplicitFieldSettings:
    """3D IF (Naval Marimont & Tarroni, MICCAI 2021): an auto-decoder MLP over Fourier features of xyz
    with a per-volume latent, trained on healthy volumes quantised to ``n_classes`` intensity classes."""

    hidden: int = 512
    layers: int = 8
    latent_dim: int = 256
    n_classes: int = 10
    epochs: int = 1000
    lr: float = 1e-4
    test_steps: int = 500  # latent optimisation steps for a new volume
    threshold_percentile: float = 95.0


@dataclass(frozen=True)
class Sim2RealSettings:
    """Sim2Real stage 1 (Zhang et al., JBHI 2023): synthetic tumours pasted into FLAIR volumes train a
    3D U-Net (the ``unet`` settings' network) that is applied to real scans."""

    tumour_voxels: tuple[int, int] = (7000, 200000)
    blend: tuple[float, float] = (0.2, 0.8)  # alpha-blending weight U(a, b)
    intensity: tuple[float, float] = (1.0, 3.0)  # mean intensity factor U(a, b)
    epochs: int = 400


@dataclass(frozen=True)
class SalipSettings:
    """SaLIP (Aleem et al., CVPR-W 2024): SAM's automatic masks -> area filter -> CLIP scores each
    masked crop against several prompts -> the best crop's box prompts SAM."""

    points_per_side: int = 32
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    max_area_fraction: float = 0.3  # masks larger than this share of the slice are dropped
    tta_on_gt: bool = False  # the original's test-time adaptation of the generator on ground truth


@dataclass(frozen=True)
class MedClipSamSettings:
    """MedCLIP-SAM (Koleilat et al., MICCAI 2024): BiomedCLIP + gScoreCAM saliency + dense CRF + SAM
    box prompt; the DHN-NCE fine-tuning of CLIP is optional."""

    clip_arch: str = "biomedclip"
    saliency_channels: int = 300  # gScoreCAM: top channels (of 768) by gradient
    crf_iterations: int = 1
    finetune: bool = False  # DHN-NCE fine-tuning (temperature 0.6, beta1 = beta2 = 0.15)


@dataclass(frozen=True)
class BaselineSettings:
    """``healthy_source``: where the anomaly-detection baselines get tumour-free training data:
    ``clip`` (slices CLIP labels normal; label-free, default) or ``ground_truth`` (tumour-free by the
    segmentation, the usual anomaly-detection protocol; a ground-truth use)."""

    healthy_source: str = "clip"
    flair_threshold: FlairThresholdSettings = field(default_factory=FlairThresholdSettings)
    amcons: ConstrainedVaeSettings = field(default_factory=ConstrainedVaeSettings)
    gradcamcons: ConstrainedVaeSettings = field(default_factory=lambda: ConstrainedVaeSettings(
        lr=1e-5, w_kl=1.0, w_constraint=1000.0, t_barrier=10.0))
    implicit_field: ImplicitFieldSettings = field(default_factory=ImplicitFieldSettings)
    sim2real: Sim2RealSettings = field(default_factory=Sim2RealSettings)
    salip: SalipSettings = field(default_factory=SalipSettings)
    medclip_sam: MedClipSamSettings = field(default_factory=MedClipSamSettings)

    def __post_init__(self) -> None:
        if self.healthy_source not in HEALTHY_SOURCES:
            raise ValueError(f"healthy_source must be one of {HEALTHY_SOURCES}, got {self.healthy_source!r}")
