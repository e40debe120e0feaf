"""S3F: SAM-Seg similarity filtering of pseudo-labels between the two self-training rounds.

Paper (section 2.3): the round-1 network predicts every training volume; prompts are made from the
prediction as in section 2.2 and SAM segments again; the similarity is the Dice between SAM's output
and the prediction; volumes below the beta-th percentile of the similarities are dropped and the
network is retrained (round 2) on SAM's masks of the others. Public code (step3-3_S3F.py): the
prediction keeps its largest 3D component before prompting, box dilation 0, volumes with an empty
prediction are skipped, and round 2 trains on the network's own (post-processed) predictions.

Volumes are ``XxYxZ`` numpy arrays; masks ``bool`` or ``uint8`` (0/1).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from clisc.data.lazy import LazyMapping
from clisc.evaluation.metrics import dice
from clisc.stages.unet3d import keep_largest_component

log = logging.getLogger(__name__)

SegmentVolume = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``segment_volume(image XxYxZ float32, prediction XxYxZ uint8) -> XxYxZ bool``: prompts + SAM per slice."""


@dataclass(frozen=True)
class S3FSettings:
    """S3F choices; defaults follow the paper, the public code's choices are named switches."""

    beta: float = 20.0  # percent: drop volumes whose similarity is below this percentile
    round2_targets: str = "sam"  # "sam" (paper: SAM's masks) | "network" (code: round-1 predictions)
    largest_component: bool = True  # code: keep the largest 3D component of round-1 predictions
    box_dilation: int = 0  # pixels added to the prompt box; read by the pipeline's segment_volume
    drop_empty_predictions: bool = True  # code: a volume predicted empty gets no prompts and is dropped


@dataclass
class S3FResult:
    """Outcome of one S3F round, keyed by case id.

    ``similarities``: Dice(SAM, prediction) of every scored case; ``kept``: the cases that pass the
    filter, in input order; ``sam_masks``: SAM's ``XxYxZ`` bool volumes of the scored cases;
    ``targets``: round-2 training labels (``XxYxZ`` uint8) of the kept cases; ``empty_predictions``:
    cases dropped before scoring because their prediction was empty.
    """

    similarities: dict[str, float]
    kept: list[str]
    sam_masks: Mapping[str, np.ndarray]
    targets: Mapping[str, np.ndarray]
    empty_predictions: list[str]


def similarity(sam_mask: np.ndarray, prediction: np.ndarray) -> float:
    """Dice in [0, 1] between SAM's ``XxYxZ`` mask and the network's ``XxYxZ`` prediction.

    Two empty masks agree perfectly and score 1.0 (the public code never scores them: it skips empty
    predictions, see ``S3FSettings.drop_empty_predictions``).
    """
    if np.shape(sam_mask) != np.shape(prediction):
        raise ValueError(f"SAM mask {np.shape(sam_mask)} and prediction {np.shape(prediction)} differ in shape")
    return dice(sam_mask, prediction)


def select_by_percentile(similarities: Mapping[str, float], beta: float) -> list[str]:
    """Ids whose similarity is at least the ``beta``-th percentile (numpy, linear), in input order.

    ``beta = 0`` keeps every id; values equal to the threshold are kept, so ties are never split.
    """
    if not 0.0 <= beta <= 100.0:
        raise ValueError(f"beta must be a percentage in [0, 100], got {beta}")
    if not similarities:
        return []
    values = np.array([float(v) for v in similarities.values()], dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("similarities contain NaN")
    threshold = float(np.percentile(values, beta, method="linear"))
    return [case_id for case_id, value in similarities.items() if float(value) >= threshold]


def s3f_round(case_ids: Sequence[str], images: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
              segment_volume: SegmentVolume, settings: S3FSettings, progress: bool = True,
              store: Mapping[str, MutableMapping[str, np.ndarray]] | None = None) -> S3FResult:
    """Score round-1 predictions against SAM, filter by percentile, and pick round-2 targets.

    ``images[i]`` (``XxYxZ`` float32) and ``predictions[i]`` (``XxYxZ`` 0/1) belong to
    ``case_ids[i]``. With ``settings.largest_component`` each prediction is reduced to its largest
    26-connected component *before* it is handed to ``segment_volume`` (so the prompts come from it)
    and before it is compared with SAM's output; the reduced prediction is also the "network"
    target.

    Per-case masks are kept in dicts, or with ``store`` in ``store["sam"]`` and ``store["network"]``
    (e.g. folders on disk, so that memory does not grow with the number of cases); ``targets`` is
    a view of the kept cases' masks as uint8, read on access.
    """
    if settings.round2_targets not in ("sam", "network"):
        raise ValueError(f"unknown round2_targets {settings.round2_targets!r}; expected 'sam' or 'network'")
    if not len(case_ids) == len(images) == len(predictions):
        raise ValueError(f"{len(case_ids)} case ids, {len(images)} images, {len(predictions)} predictions")
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be unique")
    similarities: dict[str, float] = {}
    sam_masks: MutableMapping[str, np.ndarray] = store["sam"] if store is not None else {}
    network_masks: MutableMapping[str, np.ndarray] = store["network"] if store is not None else {}
    empty: list[str] = []
    for case_id, image, prediction in tqdm(zip(case_ids, images, predictions), total=len(case_ids), desc="S3F",
                                           disable=not progress):  # one case in memory at a time
        mask = (np.asarray(prediction) > 0).astype(np.uint8)
        if settings.largest_component:
            mask = keep_largest_component(mask)
        if settings.drop_empty_predictions and not mask.any():
            empty.append(case_id)
            continue
        sam_mask = np.asarray(segment_volume(image, mask)).astype(bool)
        similarities[case_id] = similarity(sam_mask, mask)
        sam_masks[case_id] = sam_mask
        network_masks[case_id] = mask
    kept = select_by_percentile(similarities, settings.beta)
    source = sam_masks if settings.round2_targets == "sam" else network_masks
    targets = LazyMapping(kept, lambda case_id: np.asarray(source[case_id]).astype(np.uint8))
    log.info("S3F: %d scored, %d empty predictions dropped, %d kept (beta %.1f)",
             len(similarities), len(empty), len(kept), settings.beta)
    return S3FResult(similarities=similarities, kept=kept, sam_masks=sam_masks, targets=targets,
                     empty_predictions=empty)
