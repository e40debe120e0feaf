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
class ZeroShotSettings:
    """The zero-shot slice labelling the baselines share with CLISC's stage 1 (its two prompts, the
    argmax of their probabilities; ``clisc.stages.slice_labels.label_volume``): the gate of SaLIP and
    MedCLIP-SAM (``slices=clip``) and the healthy slices of the anomaly-detection rows
    (``healthy_source=clip``). The baselines' own, so CLISC's ``official`` protocol (the public
    code's confidence filter, z-smoothing and PIL truncation) does not reach them; the defaults are
    the paper's stage 1. Compute (``slice_labels.batch_size``, ``.precision``) stays CLISC's."""

    min_confidence: float | None = None  # drop slices whose winning probability is below this
    z_smoothing: bool = False  # majority of the kept neighbours along z
    pil_truncation: bool = False  # the z-scored slice handed to PIL (negatives -> 0), as CLISC's code


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
    an attention constraint; the attention map is the anomaly map (``baselines/amcons.py``). Defaults:
    the README commands of jusiro/constrained_anomaly_segmentation (AMCons here; GradCAMCons in
    ``BaselineSettings.gradcamcons``)."""

    input_size: int = 224  # slices resized to SxS; a multiple of 16 (four stride-2 stages before the dense latent)
    latent_dim: int = 32
    epochs: int = 300
    iterations_per_epoch: int | None = None  # schedule length: batches per epoch (None: one pass, the code)
    batch_size: int = 8
    lr: float = 1e-4
    w_kl: float = 10.0
    w_constraint: float = 0.1  # AMCons: w_H on the attention entropy; GradCAMCons: the log-barrier weight
    t_barrier: float = 10.0  # GradCAMCons' log-barrier t
    p_activation: float = 0.01  # GradCAMCons: the constraint 1 - mean(attention) <= p (the code's p_activation_cam)
    attention_block: int = 1  # encoder block (1..4) whose channel mean is the attention (the code's level -4 of 4)
    warmup_epochs: int = 1  # epochs before the constraint term is added (the code: ``i_epoch > 0``)
    brain_erosion: int = 6  # side of the square eroding the brain mask at the input size (the code: 6x6 at 224)
    histogram_matching: bool = True  # each slice's brain intensities matched to the healthy training slices'
    threshold_percentile: float = 95.0  # label-free threshold rule (see the module of each method)

    def __post_init__(self) -> None:
        if self.input_size < 16 or self.input_size % 16:
            raise ValueError(f"input_size must be a positive multiple of 16, got {self.input_size}")
        if self.attention_block not in (1, 2, 3, 4):
            raise ValueError(f"attention_block must be 1..4, got {self.attention_block}")
        if not 0 < self.threshold_percentile < 100:
            raise ValueError(f"threshold_percentile must be in (0, 100), got {self.threshold_percentile}")


@dataclass(frozen=True)
class ImplicitFieldSettings:
    """3D IF (Naval Marimont & Tarroni, MICCAI 2021): an auto-decoder MLP over Fourier features of xyz
    with a per-volume latent, trained on healthy volumes quantised to ``n_classes`` intensity classes.
    Defaults: the public code's ``hcp_*_k10_mp2/specs.json`` and evaluation notebook (see
    ``baselines/implicit_field.py``)."""

    hidden: int = 512
    layers: int = 8
    latent_dim: int = 256
    latent_layer: int = 4  # [latent, xyz] concatenated again before this layer (DeepSDF skip); 0 or >= layers: none
    fourier_frequencies: int = 10  # L: sin/cos of 2^k pi xyz, k < L
    dropout: float = 0.2
    n_classes: int = 10  # background + n_classes - 1 brain intensity classes
    clip_percentile: float = 98.0  # brain intensities clipped to [100 - p, p] percentiles, then min-max
    mode_pool: int = 3  # mode filter of the class volume (voxels); 0 = none
    epochs: int = 2001
    scenes_per_batch: int = 6
    samples_per_scene: int = 16384
    lr: float = 5e-4  # network
    latent_lr: float = 1e-3
    lr_step: int = 500  # both rates multiplied by lr_factor every lr_step epochs
    lr_factor: float = 0.5
    code_bound: float = 1.0  # latents' maximal norm
    code_regularisation: float = 1e-4  # weight of the latents' norm in the loss
    test_steps: int = 500  # latent optimisation steps for a new volume
    test_samples: int = 10000
    test_refine_steps: int = 100  # then more steps with more voxels each
    test_refine_samples: int = 50000
    test_lr: float = 1e-3
    batch_voxels: int = 65536  # voxels per forward pass when scoring a whole volume
    min_filter: int = 3  # score post-processing: a min filter of this size (voxels), then
    mean_filter_mm: float = 22.5  # a mean filter of this width (15 voxels of the code's 1.5 mm grid)
    threshold_percentile: float = 95.0  # of each volume's smoothed brain scores (label-free)

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ValueError(f"implicit_field.n_classes must be >= 2 (background + brain), got {self.n_classes}")


HOST_SLICES = ("healthy", "healthy_strict", "ground_truth", "all")
SIM2REAL_OPTIMIZERS = ("sgd", "adam")
SIM2REAL_AUGMENTATIONS = ("flips", "intensity")


@dataclass(frozen=True)
class Sim2RealSettings:
    """Sim2Real stage 1 (Zhang et al., JBHI 2023; code xiaoman-zhang/Layer-Decomposition): synthetic
    tumours (``baselines/tumour_simulator.py``) pasted into the training FLAIR volumes train a 3D U-Net
    (the ``unet`` settings' network, patch, batch and SGD schedule) that is applied to real scans.

    ``host_slices``: ``healthy`` counts the voxels outside the synthetic tumour in the loss only on the
    slices ``baselines.healthy_source`` calls tumour-free (the paper pastes into healthy brains);
    ``healthy_strict`` counts those slices only, the synthetic tumour on the others left out too
    (``healthy`` keeps every tumour voxel but drops the background of the other slices, which raises
    the tumour's share of the loss); ``ground_truth`` counts every voxel except the segmentation's
    tumour grown by ``host_margin_mm`` (a ground-truth use: all of the host's normal tissue, the
    tumour slices' included, is taught as background); ``all`` pastes into the volumes as they are
    (their real tumours are taught as background).
    """

    tumour_voxels: tuple[float, float] = (7000, 200000)  # mm^3 (= voxels at 1 mm), scaled to the run's spacing
    blend: tuple[float, float] = (0.2, 0.8)  # alpha-blending weight U(a, b)
    intensity: tuple[float, float] = (1.0, 3.0)  # mean intensity factor U(a, b) x the brain's mean
    elongation: tuple[float, float] = (0.8, 1.0)  # radii (r x ratio, r / ratio, r), ratio U(a, b)
    noise_octaves: tuple[int, int] = (4, 7)  # octaves of the surface noise, uniform integer (inclusive)
    noise_scale: float = 0.5  # radial displacement x noise in [-1, 1] (the code's scale)
    elastic_mm: float = 7.5  # texture: largest displacement of the smooth deformation (TorchIO's default)
    texture_blur: tuple[float, float] = (0.0, 2.0)  # texture: Gaussian std U(a, b) mm (TorchIO's RandomBlur)
    epochs: int = 400
    iterations_per_epoch: int | None = None  # None: one pass over the training volumes per epoch
    tumour_crop: float = 0.5  # share of training patches centred on a synthetic-tumour voxel (others: random)
    # the patch (and sliding window) of Sim2Real's network; () is the ``unet`` settings' (CLISC's U-Net). The code
    # resizes the whole brain to 128^3, so its network always has the whole brain in view
    patch_size: tuple[int, ...] = ()
    # flips: the code's axial rot90 / flips of the patch; intensity: + nnU-Net's noise, blur, brightness,
    # contrast and gamma on the input patch (clisc.stages.unet_recipe.intensity_transforms; layer targets clean)
    augment: str = "flips"
    # sgd: the ``unet`` settings' SGD (lr, momentum, weight decay); adam: the code's Adam at ``unet.lr``
    # (1e-2 there and here); both with the ``unet`` poly decay (the code: ReduceLROnPlateau)
    optimizer: str = "sgd"
    layer_decomposition: bool = True  # also predict the normal and tumour layers (L1 losses), as the code
    host_slices: str = "healthy"  # healthy | healthy_strict (by baselines.healthy_source) | ground_truth | all
    host_margin_mm: float = 5.0  # host_slices=ground_truth: the real tumour grown by this much is out of the loss
    # sliding window on the preprocessed grid | resize (the brain to the patch size and back, as the
    # code's 128^3); the window overlap is ``unet.sw_overlap``
    inference: str = "sliding"
    # the tumour probability above which a voxel is tumour (0.5: the argmax, the code's), and the test-time
    # mirroring of the sliding window ("flips": the softmax averaged over X/Y flips, as unet.test_time)
    threshold: float = 0.5
    test_time: str = "none"

    def __post_init__(self) -> None:
        if self.inference not in ("sliding", "resize"):
            raise ValueError(f"sim2real.inference must be 'sliding' or 'resize', got {self.inference!r}")
        if self.host_slices not in HOST_SLICES:
            raise ValueError(f"sim2real.host_slices must be one of {HOST_SLICES}, got {self.host_slices!r}")
        for name in ("tumour_voxels", "blend", "intensity", "elongation", "noise_octaves", "texture_blur"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"sim2real.{name} must be a range 0 <= low <= high, got {(low, high)}")
        if self.blend[1] > 1 or self.tumour_voxels[0] <= 0:
            raise ValueError("sim2real.blend must lie in [0, 1] and tumour_voxels be positive")
        if self.host_margin_mm < 0:
            raise ValueError(f"sim2real.host_margin_mm must be >= 0, got {self.host_margin_mm}")
        if self.patch_size and (len(self.patch_size) != 3 or min(self.patch_size) < 1):
            raise ValueError(f"sim2real.patch_size must be () or three positive sizes, got {self.patch_size}")
        if not 0 <= self.tumour_crop <= 1:
            raise ValueError(f"sim2real.tumour_crop must be in [0, 1], got {self.tumour_crop}")
        if self.optimizer not in SIM2REAL_OPTIMIZERS:
            raise ValueError(f"sim2real.optimizer must be one of {SIM2REAL_OPTIMIZERS}, got {self.optimizer!r}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"sim2real.threshold must be in (0, 1), got {self.threshold}")
        if self.test_time not in ("none", "flips"):
            raise ValueError(f"sim2real.test_time must be 'none' or 'flips', got {self.test_time!r}")
        if self.augment not in SIM2REAL_AUGMENTATIONS:
            raise ValueError(f"sim2real.augment must be one of {SIM2REAL_AUGMENTATIONS}, got {self.augment!r}")


SLICE_GATES = ("clip", "all", "ground_truth")


def _check_gate(method: str, gate: str) -> None:
    if gate not in SLICE_GATES:
        raise ValueError(f"{method}.slices must be one of {SLICE_GATES}, got {gate!r}")


# SaLIP's CLIP prompts: its repository ships prompts for brain extraction (clip_prompts/brain_seg.json),
# none for tumours; these four follow their style (describe, define, prefer, de-prioritise).
SALIP_PROMPTS = (
    "Identify and describe images containing a brain tumor.",
    "A brain tumor on FLAIR MRI is a bright, hyperintense region with irregular borders within the brain.",
    "Assign higher relevance to images prominently featuring a hyperintense tumor or edema over normal "
    "brain tissue, skull or background.",
    "Prioritize images showcasing an abnormal bright mass, while minimizing relevance to healthy brain "
    "structures.",
)


@dataclass(frozen=True)
class SalipSettings:
    """SaLIP (Aleem et al., CVPR-W 2024; its 3D path, ``sam_clip_3d.py``): SAM's automatic masks of each
    slice -> area filter -> CLIP scores each masked crop against the mean of ``prompts`` -> the best
    crop's box prompts SAM. Generator settings are fixed a priori (see ``baselines/salip.py``);
    ``tta_on_gt`` is the original's test-time adaptation, a random search scored on ground truth."""

    clip_arch: str = "ViT-B-32-quickgelu"  # the 3D path's CLIP ViT-B/32 (its 2D path: ViT-L/14)
    slices: str = "clip"  # which slices get a mask: clip (zero-shot labels) | all | ground_truth (GT)
    equalize: bool = False  # histogram-equalise SAM's and CLIP's 8-bit slice (CLISC's code does; SaLIP's does not)
    prompts: tuple[str, ...] = SALIP_PROMPTS
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.5
    stability_score_thresh: float = 0.5
    box_nms_thresh: float = 0.9  # SaLIP's copy of segment_anything changes SAM's 0.7 to 0.9
    crop_nms_thresh: float = 0.9
    crop_n_layers: int = 1
    crop_n_points_downscale_factor: int = 2
    min_mask_region_area: int = 200  # pixels: small islands and holes of each mask are cleaned
    max_area_fraction: float = 0.3  # masks larger than this share of the slice are dropped
    tta_on_gt: bool = False  # the original's test-time adaptation of the generator on ground truth
    tta_iterations: int = 5
    tta_volumes: int = 2
    tta_slices: int = 5

    def __post_init__(self) -> None:
        _check_gate("salip", self.slices)
        if not 0 < self.max_area_fraction <= 1:
            raise ValueError(f"max_area_fraction must be in (0, 1], got {self.max_area_fraction}")


# The text of MedCLIP-SAM's saliency: its v1 code asks the user for one prompt; this is the first of
# the brain-tumour prompts of the authors' follow-up code (MedCLIP-SAMv2, saliency_maps/text_prompts.py).
MEDCLIP_PROMPT = ("A medical brain MRI scan revealing a suspicious, irregularly shaped mass suggestive of a "
                  "brain tumor.")


@dataclass(frozen=True)
class MedClipSamSettings:
    """MedCLIP-SAM (Koleilat et al., MICCAI 2024): BiomedCLIP + gScoreCAM saliency + dense CRF + SAM
    box prompt from the largest region; the DHN-NCE fine-tuning of CLIP and the weakly supervised
    network are options. Defaults: the public code and its fine-tuning script."""

    clip_arch: str = "biomedclip"
    slices: str = "clip"  # which slices get a mask: clip (zero-shot labels) | all | ground_truth (GT)
    equalize: bool = False  # histogram-equalise the 8-bit slice (CLISC's code does; MedCLIP-SAM's does not)
    text_prompts: tuple[str, ...] = (MEDCLIP_PROMPT,)  # several: their mean embedding
    saliency_channels: int = 300  # gScoreCAM: top channels (of 768) by gradient
    saliency_batch_size: int = 128  # channel-masked images per CLIP forward
    crf_iterations: int = 1
    crf_gaussian_sxy: float = 3.0
    crf_bilateral_sxy: float = 60.0
    crf_bilateral_srgb: float = 5.0
    crf_tau: float = 1.05
    crf_epsilon: float = 1e-8
    finetune: bool = False  # DHN-NCE fine-tuning of CLIP on the training slices (captions: CLIP pseudo-labels)
    finetune_epochs: int = 32
    finetune_batch_size: int = 16
    finetune_lr: float = 1e-3
    finetune_weight_decay: float = 0.1
    finetune_warmup_steps: int = 1000
    dhn_temperature: float = 0.6
    dhn_beta1: float = 0.15
    dhn_beta2: float = 0.15
    weak_supervision: bool = False  # train the 3D U-Net on the training volumes' MedCLIP-SAM masks

    def __post_init__(self) -> None:
        _check_gate("medclip_sam", self.slices)
        if self.saliency_channels < 1:
            raise ValueError(f"saliency_channels must be >= 1, got {self.saliency_channels}")


@dataclass(frozen=True)
class BaselineSettings:
    """``healthy_source``: where the anomaly-detection baselines get tumour-free training data:
    ``clip`` (slices CLIP labels normal; label-free, default) or ``ground_truth`` (tumour-free by the
    segmentation, the usual anomaly-detection protocol; a ground-truth use); ``healthy_clip_arch``:
    the CLIP of ``clip`` (CLISC's, so the labels are CLISC's stage-1 cache entry under the ``paper``
    protocol); ``zero_shot``: the labelling rule of every baseline's zero-shot labels."""

    healthy_source: str = "clip"
    healthy_clip_arch: str = "ViT-B-32-quickgelu"
    zero_shot: ZeroShotSettings = field(default_factory=ZeroShotSettings)
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
