"""The baselines are registered as data in CLISC's method registry, with their ground-truth switches."""
from __future__ import annotations

import pytest

from clisc.errors import CliscError
from clisc.pipeline.methods import all_methods, get_method
from clisc.pipeline.run import resolve_output
from clisc.pipeline.settings import GROUND_TRUTH, ground_truth_uses, resolve_settings


def test_baselines_are_in_the_registry_and_resolve_to_functions() -> None:
    methods = all_methods()
    assert "flair_threshold" in methods
    for method in methods.values():
        assert callable(resolve_output(method.output)), method.name


def test_nested_baseline_settings_override_and_validate() -> None:
    settings = resolve_settings("paper", "tiny", {"baselines.amcons.epochs": 3})
    assert settings.baselines.amcons.epochs == 3 and settings.baselines.gradcamcons.lr == 1e-5
    assert settings.flat()["baselines.amcons.epochs"] == 3
    with pytest.raises(CliscError, match="unknown setting"):
        resolve_settings("paper", "tiny", {"baselines.amcons.nope": 1})
    with pytest.raises(CliscError, match="is a section"):
        resolve_settings("paper", "tiny", {"baselines.amcons": 1})
    with pytest.raises(CliscError, match="healthy_source"):
        resolve_settings("paper", "tiny", {"baselines.healthy_source": "oracle"})


@pytest.mark.parametrize("overrides,uses", [
    ({}, []),
    ({"baselines.healthy_source": GROUND_TRUTH}, ["baselines.healthy_source=ground_truth"]),
    ({"gt.gate_cams_with_gt": True}, ["gate_cams_with_gt"]),
])
def test_ground_truth_uses_name_each_active_switch(overrides: dict, uses: list[str]) -> None:
    settings = resolve_settings("paper", "tiny", overrides)
    switches = ("gt.gate_cams_with_gt", "baselines.healthy_source")
    assert ground_truth_uses(settings, switches) == uses


@pytest.mark.parametrize("hosts,uses", [
    ("healthy", ["baselines.healthy_source=ground_truth"]),
    ("healthy_strict", ["baselines.healthy_source=ground_truth"]),
    ("ground_truth", ["baselines.sim2real.host_slices=ground_truth"]),  # healthy slices not read then
    ("all", []),
])
def test_sim2real_names_the_healthy_source_only_when_its_hosts_read_it(hosts: str, uses: list[str]) -> None:
    method = get_method("sim2real")
    settings = resolve_settings("paper", "tiny", {"baselines.healthy_source": GROUND_TRUTH,
                                                  "baselines.sim2real.host_slices": hosts})
    assert ground_truth_uses(settings, method.gt_switches, method.gt_switches_when) == uses


def test_a_method_only_answers_for_its_own_switches() -> None:
    """CLISC does not read the baselines' healthy source, so setting it leaves CLISC label-free."""
    settings = resolve_settings("paper", "tiny", {"baselines.healthy_source": GROUND_TRUTH})
    assert ground_truth_uses(settings, get_method("clisc").gt_switches) == []
