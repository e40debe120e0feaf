"""S3F: Dice similarity, percentile filter, and one round with an injected fake SAM."""
from __future__ import annotations

import numpy as np
import pytest

from clisc.stages.s3f import (S3FSettings, s3f_round, score_predictions, select_by_percentile, select_targets,
                              similarity)

SHAPE = (12, 12, 12)


def cube(x0: int, size: int = 4) -> np.ndarray:
    """A ``size``^3 cube of ones at x offset ``x0`` in a ``SHAPE`` uint8 volume."""
    mask = np.zeros(SHAPE, np.uint8)
    mask[x0:x0 + size, 2:2 + size, 2:2 + size] = 1
    return mask


@pytest.mark.parametrize(("first", "second", "expected"), [
    (cube(0), cube(0), 1.0),
    (cube(0), cube(6), 0.0),
    (np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, bool), 1.0),
    (cube(0), np.zeros(SHAPE, np.uint8), 0.0),
    (cube(0), cube(2), 0.5),  # 32 shared voxels of 64 + 64
])
def test_similarity_is_dice_with_both_empty_scoring_one(first, second, expected):
    assert similarity(first, second) == pytest.approx(expected)


def test_similarity_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        similarity(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))


def test_beta_20_drops_exactly_the_two_lowest_of_ten_in_input_order():
    values = [0.7, 0.1, 0.9, 0.3, 0.5, 0.2, 1.0, 0.4, 0.8, 0.6]
    similarities = {f"case{i}": v for i, v in enumerate(values)}
    kept = select_by_percentile(similarities, beta=20)
    assert kept == [f"case{i}" for i, v in enumerate(values) if v not in (0.1, 0.2)]


@pytest.mark.parametrize(("values", "beta", "expected_kept"), [
    ([0.3, 0.1, 0.2], 0.0, ["a", "b", "c"]),  # beta 0 keeps all
    ([0.5, 0.5, 0.5, 0.5, 0.9], 20.0, ["a", "b", "c", "d", "e"]),  # ties at the threshold stay
    ([0.2, 0.2, 0.8, 0.8], 50.0, ["c", "d"]),  # threshold 0.5 (linear) between the tied pairs
    ([0.1, 0.4, 0.7], 100.0, ["c"]),  # only the maximum reaches the 100th percentile
])
def test_percentile_filter_edge_cases(values, beta, expected_kept):
    similarities = dict(zip("abcde", values))
    assert select_by_percentile(similarities, beta) == expected_kept


@pytest.mark.parametrize("beta", [-1.0, 100.5])
def test_percentile_filter_rejects_beta_outside_percent_range(beta):
    with pytest.raises(ValueError, match="beta"):
        select_by_percentile({"a": 0.5}, beta)


def test_percentile_filter_of_nothing_is_nothing():
    assert select_by_percentile({}, 20.0) == []


class FakeSam:
    """Stands in for prompts + SAM: records what it was given, answers the prediction shifted in x.

    The case index is stored in ``image[0, 0, 0]``; a shift of s voxels of a 4-wide cube gives
    Dice (4 - s) / 4 with the prediction.
    """

    def __init__(self, shifts: list[int]):
        self.shifts = shifts
        self.calls: dict[int, np.ndarray] = {}

    def __call__(self, image: np.ndarray, prediction: np.ndarray) -> np.ndarray:
        index = int(image[0, 0, 0])
        self.calls[index] = prediction.copy()
        return np.roll(prediction, self.shifts[index], axis=0).astype(bool)


def make_cases(n: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """``n`` cases: a 4-voxel cube plus a stray voxel far away in each prediction."""
    ids, images, predictions = [], [], []
    for i in range(n):
        image = np.zeros(SHAPE, np.float32)
        image[0, 0, 0] = i
        prediction = cube(2)
        prediction[11, 11, 11] = 1
        ids.append(f"case{i}")
        images.append(image)
        predictions.append(prediction)
    return ids, images, predictions


@pytest.mark.parametrize("targets", ["sam", "network", "pseudo_labels"])
def test_round_filters_the_least_similar_and_picks_targets(targets):
    shifts = [0, 1, 3, 0, 2]  # similarities 1, .75, .25, 1, .5: beta 20 drops case2 only
    ids, images, predictions = make_cases(len(shifts))
    sam = FakeSam(shifts)
    pseudo = {case_id: cube(6) for case_id in ids}  # round 1's SAM pseudo-labels
    settings = S3FSettings(beta=20.0, round2_targets=targets, largest_component=True)
    result = s3f_round(ids, images, predictions, sam, settings, progress=False, pseudo_labels=pseudo)
    assert result.similarities == pytest.approx({"case0": 1.0, "case1": 0.75, "case2": 0.25,
                                                 "case3": 1.0, "case4": 0.5})
    assert result.kept == ["case0", "case1", "case3", "case4"]
    assert set(result.targets) == set(result.kept)
    for case_id in result.kept:
        target = result.targets[case_id]
        assert target.dtype == np.uint8
        expected = {"sam": result.sam_masks[case_id], "network": cube(2), "pseudo_labels": cube(6)}[targets]
        np.testing.assert_array_equal(target, expected.astype(np.uint8))
    # SAM's answer differs from the prediction for shifted cases, so the switch matters
    assert not np.array_equal(result.sam_masks["case1"], cube(2).astype(bool))


@pytest.mark.parametrize("largest_component", [True, False])
def test_largest_component_is_taken_before_prompting(largest_component):
    ids, images, predictions = make_cases(2)
    sam = FakeSam([0, 0])
    settings = S3FSettings(beta=0.0, largest_component=largest_component, round2_targets="network")
    result = s3f_round(ids, images, predictions, sam, settings, progress=False)
    expected = cube(2) if largest_component else predictions[0]
    np.testing.assert_array_equal(sam.calls[0], expected)
    np.testing.assert_array_equal(result.targets["case0"], expected)


@pytest.mark.parametrize("drop_empty", [True, False])
def test_empty_prediction_is_dropped_unprompted_or_scored_as_agreement(drop_empty):
    ids, images, predictions = make_cases(3)
    predictions[1] = np.zeros(SHAPE, np.uint8)
    sam = FakeSam([0, 0, 0])
    result = s3f_round(ids, images, predictions, sam, S3FSettings(beta=0.0, drop_empty_predictions=drop_empty),
                       progress=False)
    if drop_empty:
        assert result.empty_predictions == ["case1"]
        assert 1 not in sam.calls and "case1" not in result.similarities
        assert result.kept == ["case0", "case2"]
    else:
        assert result.empty_predictions == []
        assert result.similarities["case1"] == 1.0
        assert result.kept == ["case0", "case1", "case2"]


def test_round_rejects_misaligned_inputs_and_unknown_targets():
    ids, images, predictions = make_cases(2)
    with pytest.raises(ValueError, match="case ids"):
        s3f_round(ids, images[:1], predictions, FakeSam([0, 0]), S3FSettings(), progress=False)
    with pytest.raises(ValueError, match="round2_targets"):
        s3f_round(ids, images, predictions, FakeSam([0, 0]), S3FSettings(round2_targets="gt"), progress=False)


def test_defaults_are_the_papers_plain_reading():
    """The paper prompts from the prediction as it is and scores every volume; the code's largest
    component and its skipping of empty predictions are switches (the official protocol's)."""
    settings = S3FSettings()
    assert (settings.largest_component, settings.drop_empty_predictions, settings.round2_targets) == (
        False, False, "sam")


def test_beta_and_targets_are_applied_after_scoring():
    """One SAM pass serves every beta (the pipeline's S3F stage does not read beta)."""
    shifts = [0, 1, 3, 0, 2]
    ids, images, predictions = make_cases(len(shifts))
    sam = FakeSam(shifts)
    scores = score_predictions(ids, images, predictions, sam, S3FSettings(largest_component=True), progress=False)
    assert len(sam.calls) == 5
    kept = {beta: select_targets(scores, S3FSettings(beta=beta))[0] for beta in (0.0, 20.0, 50.0)}
    assert kept[0.0] == ids and kept[20.0] == ["case0", "case1", "case3", "case4"]
    assert kept[50.0] == ["case0", "case1", "case3"] and len(sam.calls) == 5
    with pytest.raises(ValueError, match="pseudo-labels"):
        select_targets(scores, S3FSettings(round2_targets="pseudo_labels"))


@pytest.mark.parametrize("changes", [{"beta": 120.0}, {"round2_targets": "ground_truth"}])
def test_settings_are_checked(changes):
    with pytest.raises(ValueError):
        S3FSettings(**changes)
