"""S3F: SAM-Seg similarity filtering of pseudo-labels between the two self-training rounds.

Paper (section 2.3): the round-1 network predicts every training volume; prompts are made from the
prediction as in section 2.2 and SAM segments again; the similarity is the Dice between SAM's output
and the prediction; volumes below the beta-th percentile of the similarities are dropped and the
network is retrained (round 2) on the others. Which labels round 2 learns is lost in the text we
hold (``round2_targets``): SAM's masks of S3F (``sam``, the default), the volumes' original SAM
pseudo-labels of round 1 (``pseudo_labels``: "low-quality pseudo-labels are filtered out"), or the
network's own predictions (``network``, the public code). Public code (step3-3_S3F.py): the
prediction keeps its largest 3D component before prompting, box dilation 0, volumes with an empty
prediction are skipped, and the top ``int(0.8 n)`` of the ``n`` scored volumes are kept.

The paper is silent on empty predictions (``empty_prediction``): an empty prediction gets no prompt,
SAM answers empty, and two empty masks have Dice 1. The paper default scores it 0 (``zero``): agreement
on nothing is no sign of quality (the paper's premise), and the suite's label-free search criterion
scores it so too; ``agreement`` keeps the Dice of 1 (it then ranks first and round 2 learns an empty
target), ``drop`` skips it as the code does. How many volumes pass (``keep_rule``): ``percentile``
keeps those at or above the linear ``beta``-th percentile (the paper's words), ``count`` the top
``int(n (100 - beta) / 100)`` (the code's rule: one fewer whenever n = 1 mod 5 at beta = 20).

Two steps: :func:`score_predictions` (prompts + SAM + Dice; what S3F reads of the network) and
:func:`select_targets` (the beta filter and the round-2 labels), so that a beta sweep reuses SAM.
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
from clisc.stages.unet_recipe import keep_largest_component

log = logging.getLogger(__name__)

SegmentVolume = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``segment_volume(image XxYxZ float32, prediction XxYxZ uint8) -> XxYxZ bool``: prompts + SAM per slice."""


ROUND2_TARGETS = ("sam", "pseudo_labels", "network")
EMPTY_PREDICTION = {"zero": 0.0, "agreement": 1.0, "drop": None}  # similarity of an empty prediction
KEEP_RULES = ("percentile", "count")


@dataclass(frozen=True)
class S3FSettings:
    """S3F choices; defaults follow the paper, the public code's choices are named switches."""

    beta: float = 20.0  # percent: drop volumes whose similarity is below this percentile
    round2_targets: str = "sam"  # see ROUND2_TARGETS and the module docstring
    largest_component: bool = False  # code: keep the largest 3D component of round-1 predictions
    box_dilation: int = 0  # pixels added to the prompt box; read by the pipeline's segment_volume
    empty_prediction: str = "zero"  # similarity of an empty prediction: see EMPTY_PREDICTION (code: drop)
    keep_rule: str = "percentile"  # see KEEP_RULES (code: count)

    def __post_init__(self) -> None:
        if self.round2_targets not in ROUND2_TARGETS:
            raise ValueError(f"unknown round2_targets {self.round2_targets!r}; expected one of "
                             f"{', '.join(ROUND2_TARGETS)}")
        if not 0.0 <= self.beta <= 100.0:
            raise ValueError(f"beta must be a percentage in [0, 100], got {self.beta}")
        if self.empty_prediction not in EMPTY_PREDICTION:
            raise ValueError(f"unknown empty_prediction {self.empty_prediction!r}; expected one of "
                             f"{', '.join(EMPTY_PREDICTION)}")
        if self.keep_rule not in KEEP_RULES:
            raise ValueError(f"unknown keep_rule {self.keep_rule!r}; expected one of {', '.join(KEEP_RULES)}")


@dataclass
class S3FScores:
    """What S3F measures, keyed by case id: ``similarities`` Dice(SAM, prediction) of every scored
    case; ``sam_masks`` SAM's ``XxYxZ`` bool volumes and ``network_masks`` the (reduced) predictions
    ``XxYxZ`` uint8 of the scored cases; ``empty_predictions`` the cases dropped unscored."""

    similarities: dict[str, float]
    sam_masks: Mapping[str, np.ndarray]
    network_masks: Mapping[str, np.ndarray]
    empty_predictions: list[str]


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

    Two empty masks agree perfectly and score 1.0; S3F scores an empty prediction by
    ``S3FSettings.empty_prediction`` instead (:func:`score_predictions`).
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


def select_by_count(similarities: Mapping[str, float], beta: float) -> list[str]:
    """The public code's rule: the ``int(n * (100 - beta) / 100)`` ids of highest similarity, in input
    order (``save_top_ratios``: ``int(len(all_score) * 0.8)`` at beta = 20). Ties are broken as the
    code's descending sort of ``[similarity, path]`` breaks them: the larger case id first."""
    if not 0.0 <= beta <= 100.0:
        raise ValueError(f"beta must be a percentage in [0, 100], got {beta}")
    if any(np.isnan(float(v)) for v in similarities.values()):
        raise ValueError("similarities contain NaN")
    count = int(len(similarities) * ((100.0 - beta) / 100.0))
    ranked = sorted(similarities, key=lambda case_id: (float(similarities[case_id]), case_id), reverse=True)
    top = set(ranked[:count])
    return [case_id for case_id in similarities if case_id in top]


def select_kept(similarities: Mapping[str, float], settings: S3FSettings) -> list[str]:
    """The ids that pass the beta filter under ``settings.keep_rule``, in input order."""
    rule = select_by_count if settings.keep_rule == "count" else select_by_percentile
    return rule(similarities, settings.beta)


def prepare_prediction(prediction: np.ndarray, settings: S3FSettings) -> np.ndarray:
    """A round-1 prediction as S3F reads it: ``XxYxZ`` uint8, reduced to its largest 26-connected
    component with ``settings.largest_component``."""
    mask = (np.asarray(prediction) > 0).astype(np.uint8)
    return keep_largest_component(mask) if settings.largest_component else mask


def score_predictions(case_ids: Sequence[str], images: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                      segment_volume: SegmentVolume, settings: S3FSettings, progress: bool = True,
                      store: Mapping[str, MutableMapping[str, np.ndarray]] | None = None) -> S3FScores:
    """Prompt SAM from each prediction and score the agreement (``beta`` and ``round2_targets`` are
    not read). ``images[i]`` (``XxYxZ`` float32) and ``predictions[i]`` (``XxYxZ`` 0/1) belong to
    ``case_ids[i]``; the prediction is prepared by :func:`prepare_prediction` before it is handed to
    ``segment_volume`` and compared with SAM's output. One case is read at a time; its masks go to
    dicts, or with ``store`` to ``store["sam"]`` and ``store["network"]`` (e.g. folders on disk, so
    that memory does not grow with the number of cases). An empty prediction is scored by
    ``settings.empty_prediction``: 0, 1 or (``drop``) not prompted, listed in ``empty_predictions``."""
    if not len(case_ids) == len(images) == len(predictions):
        raise ValueError(f"{len(case_ids)} case ids, {len(images)} images, {len(predictions)} predictions")
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be unique")
    scores = S3FScores({}, store["sam"] if store is not None else {},
                       store["network"] if store is not None else {}, [])
    for case_id, image, prediction in tqdm(zip(case_ids, images, predictions), total=len(case_ids), desc="S3F",
                                           disable=not progress):
        mask = prepare_prediction(prediction, settings)
        empty = not mask.any()
        if empty and settings.empty_prediction == "drop":
            scores.empty_predictions.append(case_id)
            continue
        sam_mask = np.asarray(segment_volume(image, mask)).astype(bool)
        scores.similarities[case_id] = (EMPTY_PREDICTION[settings.empty_prediction] if empty
                                        else similarity(sam_mask, mask))
        scores.sam_masks[case_id] = sam_mask
        scores.network_masks[case_id] = mask
    return scores


def select_targets(scores: S3FScores, settings: S3FSettings,
                   pseudo_labels: Mapping[str, np.ndarray] | None = None
                   ) -> tuple[list[str], Mapping[str, np.ndarray]]:
    """``(kept, targets)``: the cases that pass the beta filter (:func:`select_kept`, in input order)
    and their round-2 labels (``XxYxZ`` uint8, read from the source on access) by
    ``settings.round2_targets``; ``pseudo_labels`` (case id -> round-1 SAM pseudo-label) is needed
    for "pseudo_labels"."""
    kept = select_kept(scores.similarities, settings)
    if settings.round2_targets == "pseudo_labels":
        if pseudo_labels is None:
            raise ValueError("round2_targets 'pseudo_labels' needs the round-1 pseudo-labels")
        source = pseudo_labels
    else:
        source = scores.sam_masks if settings.round2_targets == "sam" else scores.network_masks
    log.info("S3F: %d scored, %d empty predictions dropped, %d kept (beta %.1f, %s)",
             len(scores.similarities), len(scores.empty_predictions), len(kept), settings.beta, settings.keep_rule)
    return kept, LazyMapping(kept, lambda case_id: (np.asarray(source[case_id]) > 0).astype(np.uint8))


def s3f_round(case_ids: Sequence[str], images: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
              segment_volume: SegmentVolume, settings: S3FSettings, progress: bool = True,
              pseudo_labels: Mapping[str, np.ndarray] | None = None,
              store: Mapping[str, MutableMapping[str, np.ndarray]] | None = None) -> S3FResult:
    """Score round-1 predictions against SAM, filter by percentile, and pick round-2 targets
    (:func:`score_predictions`, with ``store``, then :func:`select_targets`)."""
    scores = score_predictions(case_ids, images, predictions, segment_volume, settings, progress, store)
    kept, targets = select_targets(scores, settings, pseudo_labels)
    return S3FResult(similarities=scores.similarities, kept=kept, sam_masks=scores.sam_masks, targets=targets,
                     empty_predictions=scores.empty_predictions)
