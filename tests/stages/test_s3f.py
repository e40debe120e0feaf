"""S3F: Dice similarity, percentile filter, and one round with an injected fake SAM."""
from __future__ import annotations

import numpy as np
import pytest

from clisc.pipeline.settings import resolve_settings
from clisc.stages.s3f import (S3FSettings, s3f_round, score_predictions, select_by_count, select_by_percentile,
                              select_targets, similarity)

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


@pytest.mark.parametrize("n", [6, 11, 16])
def test_the_code_keeps_int_08_n_where_the_percentile_keeps_one_more(n):
    """n = 1 mod 5: the linear 20th percentile sits on a value (index 0.2 (n - 1), an integer), so
    ``>=`` keeps n - (n - 1) / 5 volumes; the code's ``int(0.8 n)`` keeps one fewer."""
    similarities = {f"case{i:02d}": (7 * i % n) / n for i in range(n)}  # distinct values, shuffled
    percentile, count = select_by_percentile(similarities, 20.0), select_by_count(similarities, 20.0)
    assert len(count) == int(n * 0.8) and len(percentile) == len(count) + 1
    assert set(count) < set(percentile)
    worst = sorted(similarities, key=similarities.get)
    assert set(count) == set(worst[n - int(n * 0.8):]) and count == [c for c in similarities if c in count]
    settings = S3FSettings(keep_rule="count")
    scores = score_predictions([], [], [], FakeSam([]), settings, progress=False)
    scores.similarities.update(similarities)
    assert select_targets(scores, settings)[0] == count


def test_count_rule_breaks_ties_as_the_code_s_sort():
    """The code sorts ``[similarity, path]`` descending: of tied volumes the larger name is kept first."""
    assert select_by_count({"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5, "e": 0.9, "f": 0.1}, 20.0) == ["b", "c", "d", "e"]
    assert select_by_count({}, 20.0) == [] and select_by_count({"a": 0.3}, 0.0) == ["a"]


def test_the_protocols_choose_the_empty_and_keep_rules():
    paper, official = resolve_settings("paper").s3f, resolve_settings("official").s3f
    assert (paper.empty_prediction, paper.keep_rule) == ("zero", "percentile")
    assert (official.empty_prediction, official.keep_rule) == ("drop", "count")


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


@pytest.mark.parametrize("rule", ["zero", "agreement", "drop"])
def test_empty_prediction_is_scored_zero_scored_as_agreement_or_dropped(rule):
    """Five cases, one predicted empty. ``zero`` (paper): it ranks last and beta 20 drops it;
    ``agreement`` (the old behaviour): Dice 1 between two empty masks, it ranks first and is kept with
    an empty round-2 target; ``drop`` (the code): never prompted, never kept."""
    ids, images, predictions = make_cases(5)
    predictions[1] = np.zeros(SHAPE, np.uint8)
    sam = FakeSam([1, 0, 1, 2, 1])  # similarities .75, (empty), .75, .5, .75
    result = s3f_round(ids, images, predictions, sam, S3FSettings(beta=20.0, empty_prediction=rule),
                       progress=False)
    if rule == "drop":
        assert result.empty_predictions == ["case1"] and 1 not in sam.calls
        assert "case1" not in result.similarities and "case1" not in result.kept
        return
    assert result.empty_predictions == [] and 1 in sam.calls
    assert result.similarities["case1"] == {"zero": 0.0, "agreement": 1.0}[rule]
    if rule == "zero":
        assert result.kept == ["case0", "case2", "case3", "case4"]
    else:
        assert result.kept == ["case0", "case1", "case2", "case4"]
        assert not result.targets["case1"].any()  # round 2 would learn "no tumour" from it


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
    assert (settings.largest_component, settings.empty_prediction, settings.keep_rule, settings.round2_targets) == (
        False, "zero", "percentile", "sam")


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


@pytest.mark.parametrize("changes", [{"beta": 120.0}, {"round2_targets": "ground_truth"},
                                     {"empty_prediction": "one"}, {"keep_rule": "top"}])
def test_settings_are_checked(changes):
    with pytest.raises(ValueError):
        S3FSettings(**changes)


def test_a_store_keeps_the_masks_out_of_memory(tmp_path):
    from clisc.data.lazy import MappedSequence, NpzFolder

    shifts = [0, 1, 3, 0, 2]
    ids, images, predictions = make_cases(len(shifts))
    reads: list[int] = []
    lazy_images = MappedSequence(list(range(len(images))), lambda i: reads.append(i) or images[i])
    store = {"sam": NpzFolder(tmp_path / "sam", "mask"), "network": NpzFolder(tmp_path / "network", "mask")}
    settings = S3FSettings(beta=20.0)
    result = s3f_round(ids, lazy_images, predictions, FakeSam(shifts), settings, progress=False, store=store)
    in_memory = s3f_round(ids, images, predictions, FakeSam(shifts), settings, progress=False)
    assert reads == list(range(len(images)))  # one pass, one image at a time
    assert sorted(p.stem for p in (tmp_path / "sam").glob("*.npz")) == ids
    assert result.kept == in_memory.kept and result.similarities == in_memory.similarities
    for case_id in result.kept:
        np.testing.assert_array_equal(result.targets[case_id], in_memory.targets[case_id])
