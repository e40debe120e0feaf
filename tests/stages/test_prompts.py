"""Prompt geometry for every variant, in SAM's (x = column, y = row) coordinates."""
from __future__ import annotations

import numpy as np
import pytest

from clisc.stages.prompts import (
    PROMPT_VARIANTS,
    PromptSettings,
    official_foreground_points,
    prompts_from_mask,
    roi_box,
)

H, W = 40, 60  # non-square: rows (volume X) != columns (volume Y)


def asymmetric_mask() -> np.ndarray:
    """ROI rows 5..14, columns 30..49: taller in x (columns) than in y (rows), off-centre."""
    mask = np.zeros((H, W), dtype=bool)
    mask[5:15, 30:50] = True
    return mask


@pytest.mark.parametrize("variant", PROMPT_VARIANTS)
def test_empty_mask_gives_no_prompt(variant: str) -> None:
    image = np.ones((H, W))
    assert prompts_from_mask(np.zeros((H, W), bool), PromptSettings(variant), image=image) is None


def test_box_is_column_row_ordered() -> None:
    prompt = prompts_from_mask(asymmetric_mask(), PromptSettings("box"))
    assert prompt is not None
    np.testing.assert_array_equal(prompt.box, [30, 5, 49, 14])  # x0 = first column, y0 = first row
    assert prompt.points.shape == (0, 2) and prompt.point_labels.shape == (0,)


@pytest.mark.parametrize("variant, has_box", [("box+points", True), ("points", False)])
def test_centre_foreground_and_corner_background(variant: str, has_box: bool) -> None:
    prompt = prompts_from_mask(asymmetric_mask(), PromptSettings(variant))
    assert prompt is not None
    assert (prompt.box is not None) == has_box
    np.testing.assert_array_equal(prompt.points[0], [39.5, 9.5])  # centre [x, y]
    np.testing.assert_array_equal(prompt.points[1:], [[30, 5], [30, 14], [49, 5], [49, 14]])
    np.testing.assert_array_equal(prompt.point_labels, [1, 0, 0, 0, 0])


def test_prompt_point_lands_on_the_mask_pixel_it_names() -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[3, 52] = True  # a single pixel: row 3, column 52
    prompt = prompts_from_mask(mask, PromptSettings("box+points"))
    assert prompt is not None
    x, y = prompt.points[0]
    assert mask[int(y), int(x)]


def test_several_components_share_one_box() -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[2:4, 2:4] = True
    mask[30:33, 40:45] = True
    prompt = prompts_from_mask(mask, PromptSettings("box"))
    assert prompt is not None
    np.testing.assert_array_equal(prompt.box, [2, 2, 44, 32])


@pytest.mark.parametrize(
    "clip_to_size, expected",
    [(False, [25, 0, W - 1, 19]), (True, [25, 0, W, 19])],
)
def test_dilation_is_clipped_to_the_image(clip_to_size: bool, expected: list[int]) -> None:
    mask = np.zeros((H, W), dtype=bool)
    mask[2:15, 30:58] = True
    np.testing.assert_array_equal(roi_box(mask, dilation=5, clip_to_size=clip_to_size), expected)


def test_dilated_box_moves_the_corners() -> None:
    prompt = prompts_from_mask(asymmetric_mask(), PromptSettings("box+points", box_dilation=3))
    assert prompt is not None
    np.testing.assert_array_equal(prompt.box, [27, 2, 52, 17])
    np.testing.assert_array_equal(prompt.points[1:], [[27, 2], [27, 17], [52, 2], [52, 17]])


def test_official_points_follow_the_code_choice() -> None:
    """cam x image reaches 0.6 x max on 10 hand-placed pixels; picks are #0, #9, #5, #3, #6."""
    mask = np.zeros((H, W), dtype=bool)
    mask[10:20, 20:40] = True
    image = np.zeros((H, W))
    image[0, 0] = 1.0  # the min-max range of the slice is [0, 1]
    image[mask] = 0.3
    hot = [(11, 21), (11, 35), (12, 22), (13, 30), (14, 24), (15, 25), (16, 38), (17, 20), (18, 33), (19, 39)]
    cam = mask * 1.0
    for row, col in hot:
        image[row, col] = 0.9
    cam[10, 20] = 0.0  # a zeroed CAM pixel is never a candidate
    image[10, 20] = 1.0
    points = official_foreground_points(mask, cam, image)
    expected_rows_cols = [hot[0], hot[9], hot[5], hot[3], hot[6]]
    np.testing.assert_array_equal(points, [[col, row] for row, col in expected_rows_cols])

    prompt = prompts_from_mask(mask, PromptSettings("official", box_dilation=10), cam=cam, image=image)
    assert prompt is not None
    np.testing.assert_array_equal(prompt.box, [10, 0, 49, 29])
    np.testing.assert_array_equal(prompt.points[:5], points)
    np.testing.assert_array_equal(prompt.points[5:], [[10, 0], [10, 29], [49, 0], [49, 29]])
    np.testing.assert_array_equal(prompt.point_labels, [1] * 5 + [0] * 4)


def test_official_without_cam_uses_the_mask_and_needs_the_image() -> None:
    mask = asymmetric_mask()
    image = np.zeros((H, W))
    image[5, 30] = 2.0  # the only bright ROI pixel: all 5 picks land on it
    prompt = prompts_from_mask(mask, PromptSettings("official"), image=image)
    assert prompt is not None
    np.testing.assert_array_equal(prompt.points[:5], [[30, 5]] * 5)
    with pytest.raises(ValueError, match="needs the image"):
        prompts_from_mask(mask, PromptSettings("official"))


@pytest.mark.parametrize("kwargs", [{"variant": "five points"}, {"box_dilation": -1}])
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PromptSettings(**kwargs)
