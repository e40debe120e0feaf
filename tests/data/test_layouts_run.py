"""A ``tiny`` run on the same synthetic cases in each layout gives the same scores."""
from __future__ import annotations

import numpy as np
import pytest

from clisc.data.synth.layouts import synthesize_in_layout
from clisc.pipeline.run import run_method


def _scores(data, cache):
    result = run_method("sam_box_points", data, profile="tiny", cache_root=cache, progress=False, echo=lambda _: None)
    return result.per_case


@pytest.fixture(scope="module")
def reference(synthetic_dataset, tmp_path_factory):
    return _scores(synthetic_dataset, tmp_path_factory.mktemp("cache_ref"))


@pytest.mark.parametrize("layout", ["brats2023", "msd"])
def test_tiny_run_scores_equal_across_layouts(reference, tmp_path, layout):
    root = tmp_path / layout
    synthesize_in_layout(root, 10, seed=0, layout=layout, shape=(96, 96, 64), progress=False)
    other = _scores(root, tmp_path / "cache")
    assert len(other) == len(reference) > 0
    np.testing.assert_allclose(other["dsc"].to_numpy(), reference["dsc"].to_numpy())
    np.testing.assert_allclose(other["hd95"].to_numpy(), reference["hd95"].to_numpy())
