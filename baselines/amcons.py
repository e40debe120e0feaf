"""Table 1's AMCons and GradCAMCons rows (Silva-Rodriguez et al., "Constrained unsupervised anomaly
segmentation", MedIA 2022; code jusiro/constrained_anomaly_segmentation @ c5c963c): a VAE trained
on tumour-free FLAIR slices whose encoder attention, constrained to be even over normal tissue, is
the anomaly map of a test slice (network and losses: ``baselines/constrained_vae.py``).

Pipeline, as the code does it where the paper says nothing: each axial slice is the project's 2D
model input (``clisc.stages.slice_input``: background black, per-slice min-max), resized to
``input_size`` (bilinear), its brain intensities histogram-matched to a healthy reference; the brain
mask is the slice's own, resized (nearest) and eroded by a ``brain_erosion`` square (the code: 6x6 at
224 px). Training: the tumour-free brain slices of the training volumes
(``baselines.healthy.healthy_slices``: ``baselines.healthy_source`` decides, a ground-truth switch
when ``ground_truth``), trained once (a cached stage, checkpointed every epoch, resumable). Test: the
anomaly map of every brain slice, upsampled to the slice (bilinear), zero outside the eroded brain,
stacked into a volume and thresholded.

Departures (``docs/DEPARTURES.md``): the code trains and tests on the 10 middle axial slices of each
volume (``adecuate_BRATS.py``); here every tumour-free brain slice trains and every brain slice is
segmented, since Table 1 scores whole volumes. The code's histogram reference is one hand-picked
training slice (``BraTS19_CBICA_AWV_1_77.jpg``); here it is the pooled brain-intensity distribution
of the training slices (``histogram_matching``). The code's brain mask for the entropy is the union
over the batch; here each slice's own. The code picks the binarisation threshold on the test set's
labels (the operating point of its precision-recall curve); here it is label-free: the
``threshold_percentile``-th percentile of the anomaly values inside the brain of the healthy training
slices (the code's own unused ``thresholod_with_percentile`` branch takes the 99th, background
included). No validation-tuned threshold is offered.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from baselines.constrained_vae import ConstrainedVae, anomaly_maps, build_vae, train_vae
from baselines.healthy import healthy_slices
from baselines.settings import ConstrainedVaeSettings
from clisc.data.preprocessing import Volume
from clisc.errors import CliscError
from clisc.pipeline.context import RunContext
from clisc.pipeline.curves import HISTORY_FILE, EpochRecorder, read_history
from clisc.pipeline.steps_cam import brain_slices
from clisc.pipeline.steps_seg import per_case_stage
from clisc.stages.classifier import slices_to_input
from clisc.stages.slice_input import axial_slices, brain_of, volume_from_slices

HISTOGRAM_BINS = 4096  # the reference distribution: a histogram of [0, 1] intensities
REFERENCE_LEVELS = 256  # its quantiles that slices are matched to


# ------------------------------------------------------------------------------- slice preparation
def resize_masks(masks: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of masks ``NxHxW`` to ``NxSxS`` (or ``size`` = (H', W')) bool."""
    size = (size, size) if isinstance(size, int) else size
    x = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[:, None]
    return (F.interpolate(x, size=size, mode="nearest")[:, 0] > 0.5).numpy()


def erode(masks: np.ndarray, side: int) -> np.ndarray:
    """Each mask of ``NxSxS`` eroded by a ``side x side`` square (slice by slice); ``side <= 1``: unchanged."""
    if side <= 1:
        return masks.astype(bool)
    return ndimage.binary_erosion(masks, structure=np.ones((1, side, side), bool))


def resized_inputs(volume: Volume, zs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Slices ``zs`` as ``NxSxS`` float32 in [0, 1] (the 2D model input resized as the classifier's,
    ``slices_to_input``, zero outside the resized brain) and their resized brain masks ``NxSxS`` bool."""
    brain = axial_slices(brain_of(volume), zs)
    images = slices_to_input(axial_slices(volume.image, zs), size, brain)[:, 0]
    masks = resize_masks(brain, size)
    return np.where(masks, images.numpy(), 0.0).astype(np.float32), masks


def reference_quantiles(histogram: np.ndarray) -> np.ndarray:
    """``REFERENCE_LEVELS`` quantiles (0..1) of the intensity distribution given as counts of
    ``HISTOGRAM_BINS`` equal bins over [0, 1] (``histogram`` from :func:`brain_histogram`)."""
    filled = np.flatnonzero(histogram)  # the CDF at filled bins only: strictly increasing
    if filled.size == 0:
        raise ValueError("empty reference histogram")
    cdf = np.cumsum(histogram, dtype=np.float64)[filled]
    centres = (filled + 0.5) / len(histogram)
    return np.interp(np.linspace(0, 1, REFERENCE_LEVELS), cdf / cdf[-1], centres).astype(np.float32)


def brain_histogram(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Counts of the brain intensities of ``images`` ``NxSxS`` (inside ``masks``) in ``HISTOGRAM_BINS`` bins."""
    return np.histogram(images[masks], bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0]


def match_histograms(images: np.ndarray, masks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each slice of ``images`` ``NxSxS`` with its brain intensities (``masks``) mapped to the reference
    quantiles (skimage's ``match_histograms`` rule over the brain only: each distinct value goes to the
    reference quantile at its empirical CDF); the background stays 0."""
    out = np.zeros(images.shape, np.float32)
    levels = np.linspace(0, 1, len(reference))
    for i, (image, mask) in enumerate(zip(images, masks)):
        values = image[mask]
        if values.size == 0:
            continue
        distinct, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        cdf = np.cumsum(counts) / values.size
        out[i][mask] = np.interp(cdf, levels, reference)[inverse.ravel()]
    return out


def prepare(volume: Volume, zs: np.ndarray, settings: ConstrainedVaeSettings,
            reference: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The VAE's inputs of slices ``zs`` (``NxSxS`` float32, histogram-matched to ``reference`` when
    given) and the eroded brain masks the attention is read in (``NxSxS`` bool)."""
    images, masks = resized_inputs(volume, zs, settings.input_size)
    if reference is not None:
        images = match_histograms(images, masks, reference)
    return images, erode(masks, settings.brain_erosion)


# ------------------------------------------------------------------------------------ cached stages
@dataclasses.dataclass
class TrainedVae:
    model: ConstrainedVae
    reference: np.ndarray | None  # histogram reference quantiles, None without histogram matching


def _training_key_settings(settings: ConstrainedVaeSettings) -> ConstrainedVaeSettings:
    """What keys the trained network: the threshold rule does not change it."""
    return dataclasses.replace(settings, threshold_percentile=50.0)


def _healthy_volumes(ctx: RunContext, healthy: Mapping[str, np.ndarray]):
    """Yield ``(volume, zs)``: each training volume with tumour-free slices and their indices ``zs``."""
    for volume in ctx.volumes("train"):
        zs = healthy.get(volume.case_id, np.zeros(0, int))
        if len(zs):
            yield volume, zs


def trained_vae(ctx: RunContext, method: str) -> tuple[str, TrainedVae]:
    """The VAE of ``method`` trained on the healthy training slices (cached; checkpointed every epoch)."""
    settings = getattr(ctx.settings.baselines, method)
    healthy_key, healthy = healthy_slices(ctx)
    key_settings = {"method": method, "vae": _training_key_settings(settings), "seed": ctx.seed}
    if method == "gradcamcons":  # its sigmoid / min-max now precede the upsampling (the code): not older networks
        key_settings["normalised"] = "before_upsampling"
    inputs = [healthy_key, ctx.volumes_key]
    name = f"{method}_vae"

    def compute(out: Path) -> None:
        images, masks, histogram = [], [], np.zeros(HISTOGRAM_BINS, np.int64)
        for volume, zs in _healthy_volumes(ctx, healthy):
            x, m = resized_inputs(volume, zs, settings.input_size)
            histogram += brain_histogram(x, m)
            images.append(x.astype(np.float16))  # half precision keeps BraTS-scale sets in memory
            masks.append(m)
        if not images or histogram.sum() == 0:
            raise CliscError(f"{method}: no tumour-free training slice to train on "
                             f"(baselines.healthy_source={ctx.settings.baselines.healthy_source})")
        x, m = np.concatenate(images), np.concatenate(masks)
        reference = reference_quantiles(histogram) if settings.histogram_matching else None
        if reference is not None:
            x = match_histograms(x, m, reference).astype(np.float16)
        scratch = ctx.scratch(name, ctx.key(name, key_settings, inputs))
        curve = EpochRecorder(scratch / HISTORY_FILE)
        model = train_vae(x, erode(m, settings.brain_erosion), method, settings, seed=ctx.seed, device=ctx.device,
                          progress=ctx.progress, checkpoint=scratch / "checkpoint.pt", on_epoch=curve)
        curve.write(out / HISTORY_FILE)
        torch.save(model.state_dict(), out / "model.pt")
        if reference is not None:
            np.save(out / "reference.npy", reference)
        (out / "training.json").write_text(json.dumps({"slices": int(len(x))}))

    def load(path: Path) -> TrainedVae:
        ctx.histories[name] = read_history(path / HISTORY_FILE)
        model = build_vae(settings)
        model.load_state_dict(torch.load(path / "model.pt", map_location=ctx.device))
        reference = np.load(path / "reference.npy") if (path / "reference.npy").exists() else None
        return TrainedVae(model.to(ctx.device).eval(), reference)

    return ctx.stage(name, key_settings, inputs, compute, load)


def healthy_threshold(values: np.ndarray, percentile: float) -> float:
    """The label-free threshold: the ``percentile``-th percentile of the healthy slices' anomaly
    values inside the brain (``values`` 1D)."""
    if values.size == 0:
        raise ValueError("no healthy anomaly values to set a threshold from")
    return float(np.percentile(values, percentile))


def threshold(ctx: RunContext, method: str) -> tuple[str, float]:
    """The threshold of ``method`` from its healthy training slices (cached; keyed by the percentile)."""
    settings = getattr(ctx.settings.baselines, method)
    model_key, trained = trained_vae(ctx, method)
    healthy_key, healthy = healthy_slices(ctx)

    def compute(out: Path) -> None:
        values = []
        for volume, zs in _healthy_volumes(ctx, healthy):
            x, m = prepare(volume, zs, settings, trained.reference)
            values.append(anomaly_maps(trained.model, x, m, method)[m])
        value = healthy_threshold(np.concatenate(values), settings.threshold_percentile)
        (out / "threshold.json").write_text(json.dumps({"threshold": value,
                                                        "percentile": settings.threshold_percentile}))

    def load(path: Path) -> float:
        return float(json.loads((path / "threshold.json").read_text())["threshold"])

    return ctx.stage(f"{method}_threshold", {"percentile": settings.threshold_percentile}, [model_key, healthy_key],
                     compute, load)


def segment_volume(volume: Volume, trained: TrainedVae, method: str, settings: ConstrainedVaeSettings,
                   cut: float) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly map ``XxYxZ`` float32, mask ``XxYxZ`` bool = map > ``cut``) of every brain slice:
    maps at the input size, upsampled to the slice (bilinear), zero outside the eroded brain."""
    shape = volume.image.shape
    amap = np.zeros(shape, np.float32)
    zs = brain_slices(volume)
    for begin in range(0, len(zs), 32):
        z = zs[begin:begin + 32]
        x, m = prepare(volume, z, settings, trained.reference)
        maps = torch.from_numpy(anomaly_maps(trained.model, x, m, method))[:, None]
        display = shape[1::-1]  # the slice as the model sees it, YxX
        maps = F.interpolate(maps, size=display, mode="bilinear", align_corners=False)[:, 0].numpy()
        inside = resize_masks(m, display) & axial_slices(brain_of(volume), z)
        amap[:, :, z] = volume_from_slices(np.where(inside, maps, 0.0))
    return amap, amap > cut


def _segment(ctx: RunContext, split: str, method: str) -> tuple[str, dict[str, np.ndarray]]:
    settings = getattr(ctx.settings.baselines, method)
    model_key, trained = trained_vae(ctx, method)
    threshold_key, cut = threshold(ctx, method)

    def run(volume: Volume) -> np.ndarray:
        return segment_volume(volume, trained, method, settings, cut)[1]

    return per_case_stage(ctx, method, {"split": split}, [model_key, threshold_key, ctx.volumes_key],
                          ctx.volumes(split), run)


def segment_amcons(ctx: RunContext, split: str) -> tuple[str, dict[str, np.ndarray]]:
    """AMCons' masks of ``split`` (``baselines.amcons.*``): one ``XxYxZ`` uint8 mask per case."""
    return _segment(ctx, split, "amcons")


def segment_gradcamcons(ctx: RunContext, split: str) -> tuple[str, dict[str, np.ndarray]]:
    """GradCAMCons' masks of ``split`` (``baselines.gradcamcons.*``): one ``XxYxZ`` uint8 mask per case."""
    return _segment(ctx, split, "gradcamcons")
