"""How many units of work each pipeline stage does, and which stages each experiment adds.

A *unit* is something timed once by ``paper_scale.py`` (a CLIP slice, a classifier training step,
a SAM encoder pass, a U-Net training step, ...); a stage's cost is the sum of ``count x unit cost``.
Counts follow from the settings (epochs, batch sizes, stride, patch size) and a ``Workload``: the
case counts of the 7:1:2 split and per-case slice counts. The plans list the stages that each
experiment adds on top of those before it, with the stage cache's sharing (a stage whose settings
and inputs are unchanged is reused, and a slice's SAM embedding is computed once: the cache is keyed
by slice content).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from clisc.data.split import make_split
from clisc.pipeline.settings import Settings

Units = dict[str, float]  # unit name -> count

UNITS = {  # name -> what one unit is (printed with the table)
    "preprocess": "NIfTI read + crop/clip/z-score + cache write, per case",
    "volume_read": "preprocessed volume read from the cache, per case and pass",
    "clip": "CLIP image encoding, per slice",
    "cls_step": "classifier training step (Adam), per batch",
    "cls_predict": "classifier forward, per slice",
    "cam": "Layer-CAM (forward + backward to the CAM layer), per slice",
    "sam_encode": "SAM image encoder (1024^2), per slice",
    "sam_decode": "SAM prompt encoder + mask decoder + upsampling, per slice",
    "unet_step": "U-Net training step (SGD), per batch",
    "unet_window": "U-Net sliding-window forward, per window batch",
    "score": "Dice + HD95, per case",
}

# Per-case counts measured on the 12 real BraTS 2018 cases of ../shared/data/brats-sample after the
# paper's preprocessing (crop to the brain box): axial slices in the box (all show brain), slices with
# ground-truth tumour, and the mean cropped shape.
SAMPLE_BRAIN_SLICES = 137.8
SAMPLE_TUMOUR_SLICES = 65.3
SAMPLE_CROP_SHAPE = (139, 164, 138)


@dataclass(frozen=True)
class Workload:
    """Cases and per-case slice counts. ``tumour_slices`` stands for every "tumour" slice count:
    CLIP-tumour (CAMs, AMDA copies), classifier-tumour (test CAMs), ROI-prompted and
    prediction-prompted (SAM), ground-truth-prompted (SAM-GT) slices are all taken to be this many."""

    cases: int = 369
    brain_slices: float = SAMPLE_BRAIN_SLICES
    tumour_slices: float = SAMPLE_TUMOUR_SLICES
    crop_shape: tuple[int, int, int] = SAMPLE_CROP_SHAPE
    split: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.split:
            counts = {k: len(v) for k, v in make_split([f"c{i}" for i in range(self.cases)], 0).items()}
            object.__setattr__(self, "split", counts)


def windows_per_volume(shape: Sequence[int], patch: Sequence[int], overlap: float) -> int:
    """Sliding windows MONAI places over ``shape`` (volumes smaller than the patch are padded)."""
    count = 1
    for size, roi in zip(shape, patch):
        interval = max(int(roi * (1 - overlap)), 1)
        count *= math.ceil((size - roi) / interval) + 1 if size > roi else 1
    return count


def _unet_steps(s: Settings, n_volumes: float) -> float:
    per_epoch = s.unet.iterations_per_epoch or math.ceil(n_volumes / s.unet.batch_size)
    return s.unet.epochs * per_epoch


def _predict(s: Settings, w: Workload, n_volumes: float) -> Units:
    if s.unet.inference == "resize":
        batches = 1.0
    else:
        batches = math.ceil(windows_per_volume(w.crop_shape, s.unet.patch_size, s.unet.sw_overlap) / s.unet.batch_size)
    return {"unet_window": n_volumes * batches, "volume_read": n_volumes}


def stage_units(s: Settings, w: Workload) -> dict[str, Units]:
    """Units of each stage of the CLISC pipeline (and its reference rows) for one seed."""
    train, valid, test = w.split["train"], w.split["valid"], w.split["test"]
    stride = s.slices.stride
    slices_train = train * math.ceil(w.brain_slices / stride)
    tumour_train = train * w.tumour_slices / stride
    cls_steps = s.classifier.epochs * math.ceil(slices_train / s.classifier.batch_size)
    amda_set = slices_train + s.amda.copies * tumour_train
    kept = math.ceil(train * (1 - s.s3f.beta / 100))
    return {
        "preprocess": {"preprocess": w.cases},
        "slice_labels": {"clip": train * w.brain_slices, "volume_read": train},
        "classifier_raw": {"cls_step": cls_steps, "volume_read": train},
        "classifier_amda": {"cam": tumour_train, "volume_read": train,
                            "cls_step": s.classifier.epochs * math.ceil(amda_set / s.classifier.batch_size)},
        "cams train": {"cam": train * w.tumour_slices, "volume_read": 2 * train},
        "cams test": {"cls_predict": test * w.brain_slices, "cam": test * w.tumour_slices, "volume_read": 2 * test},
        "sam_pseudo_labels train": {"sam_encode": train * w.tumour_slices, "sam_decode": train * w.tumour_slices,
                                    "volume_read": train},
        "sam test (encode)": {"sam_encode": test * w.tumour_slices},
        "sam test (decode, per variant)": {"sam_decode": test * w.tumour_slices, "volume_read": test},
        "unet_round1": {"unet_step": _unet_steps(s, train), "volume_read": s.unet.batch_size * _unet_steps(s, train)},
        "predictions train": _predict(s, w, train),
        "predictions test": _predict(s, w, test),
        "predictions valid": _predict(s, w, valid),
        "s3f (decode; embeddings cached)": {"sam_decode": train * w.tumour_slices, "volume_read": train},
        "unet_round2": {"unet_step": _unet_steps(s, kept), "volume_read": s.unet.batch_size * _unet_steps(s, kept)},
        "unet_round2 (beta 0)": {"unet_step": _unet_steps(s, train),
                                 "volume_read": s.unet.batch_size * _unet_steps(s, train)},
        "unet_supervised": {"unet_step": _unet_steps(s, train),
                            "volume_read": s.unet.batch_size * _unet_steps(s, train)},
        "score test": {"score": test, "volume_read": test},
        "score valid": {"score": valid, "volume_read": valid},
    }


def _scaled(units: Units, factor: float) -> Units:
    return {k: v * factor for k, v in units.items()}


def merge(*parts: Units) -> Units:
    """The sum of several stages' units."""
    total: Units = {}
    for units in parts:
        for name, count in units.items():
            total[name] = total.get(name, 0.0) + count
    return total


Plan = list[tuple[str, Units]]


def plans(s: Settings, w: Workload, trials: int = 50, alphas: Sequence[float] = (0, 10, 20, 30),
          betas: Sequence[float] = (0, 10, 20, 30, 40), thresholds: int = 11) -> dict[str, Plan]:
    """Stages each experiment adds, run in this order: Table 1, Table 2, the alpha sweep, the beta
    sweep, a search of ``trials`` trials (validation Dice objective) over alpha x beta x
    ``thresholds`` CAM thresholds. Every experiment one seed."""
    u = stage_units(s, w)
    train = w.split["train"]
    new_alphas = [a for a in alphas if a != s.amda.alpha]
    new_betas = [b for b in betas if b not in (s.s3f.beta, 0)]  # 0 is Table 2's "w/o S3F"
    sam_decode_only = {"sam_decode": u["sam_pseudo_labels train"]["sam_decode"], "volume_read": train}
    s3f = u["s3f (decode; embeddings cached)"]

    def round2(beta: float) -> Units:
        steps = _unet_steps(s, math.ceil(train * (1 - beta / 100)))
        return {"unet_step": steps, "volume_read": s.unet.batch_size * steps}

    after_rois = [sam_decode_only, u["unet_round1"], u["predictions train"], s3f, u["unet_round2"]]
    round1_pairs = min(trials, len(alphas) * thresholds)  # distinct (alpha, threshold): round-1 networks
    return {
        "Table 1 (CLISC, fully supervised, SAM-GT)": [
            (name, u[name]) for name in ["preprocess", "slice_labels", "classifier_raw", "classifier_amda",
                                         "cams train", "sam_pseudo_labels train", "unet_round1",
                                         "predictions train", "s3f (decode; embeddings cached)", "unet_round2",
                                         "predictions test", "unet_supervised"]
        ] + [("predictions test (supervised)", u["predictions test"]),
             ("sam_gt test", merge(u["sam test (encode)"], u["sam test (decode, per variant)"])),
             ("score test x 3", _scaled(u["score test"], 3))],
        "Table 2 (8 ablations, after Table 1)": [
            ("cams test (raw, AMDA)", _scaled(u["cams test"], 2)),
            ("sam test: 3 prompt variants (decode)", _scaled(u["sam test (decode, per variant)"], 3)),
            ("predictions test (round 1)", u["predictions test"]),
            ("w/o S3F: s3f beta 0 + unet_round2 + predictions", merge(s3f, round2(0), u["predictions test"])),
            ("score test x 7", _scaled(u["score test"], 7)),
        ],
        f"sweep alpha ({len(new_alphas)} new values)": [
            (f"alpha {a:g}: AMDA classifier -> CAM ROIs -> round 1 -> S3F -> round 2",
             merge(u["classifier_amda"], u["cams train"], *after_rois, u["predictions test"], u["score test"]))
            for a in new_alphas
        ],
        f"sweep beta ({len(new_betas)} new values)": [
            (f"beta {b:g}: s3f + unet_round2 + predictions", merge(s3f, round2(b), u["predictions test"],
                                                                   u["score test"]))
            for b in new_betas
        ],
        f"search ({trials} trials, validation Dice; after the alpha sweep)": [
            (f"{round1_pairs} trials with a new (alpha, threshold): CAM ROIs -> round 1 -> round 2",
             _scaled(merge(u["cams train"], *after_rois, u["predictions valid"], u["score valid"]), round1_pairs)),
            (f"{trials - round1_pairs} trials with a known (alpha, threshold): s3f -> round 2",
             _scaled(merge(s3f, u["unet_round2"], u["predictions valid"], u["score valid"]), trials - round1_pairs)),
        ],
    }


def cost(units: Units, unit_seconds: dict[str, float]) -> float:
    """Seconds of ``units`` at ``unit_seconds`` (units without a cost count as 0)."""
    return sum(count * unit_seconds.get(name, 0.0) for name, count in units.items())


def embeddings_on_disk_gib(w: Workload, bytes_per_embedding: int = 256 * 64 * 64 * 4) -> float:
    """The SAM embedding cache after all experiments: one entry per prompted slice of train and test."""
    return (w.split["train"] + w.split["test"]) * w.tumour_slices * bytes_per_embedding / 2**30


def classifier_set_gib(s: Settings, w: Workload) -> tuple[float, float]:
    """(training slices, AMDA-stage peak) in GiB of host memory: float16 ``SxS`` slices; the AMDA stage
    holds at once the slices, their CAMs (float16, same size), the stacked masked copies and their
    concatenation with the slices (``clisc.stages.amda.amda_training_set``)."""
    slice_bytes = s.classifier.input_size ** 2 * 2
    n = w.split["train"] * math.ceil(w.brain_slices / s.slices.stride)
    copies = s.amda.copies * w.split["train"] * w.tumour_slices / s.slices.stride
    base = n * slice_bytes / 2**30
    return base, (3 * n + 2 * copies) * slice_bytes / 2**30
