"""Every read of ground truth is tagged: each registered method runs under each ground-truth switch on
a dataset without a single segmentation file; a configuration whose tags say ``label_free=true`` must
then run, since any read of a label fails there (one-line DataError "... needs ground truth", or a
``None`` label)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clisc.data.discovery import discover_cases
from clisc.errors import DataError
from clisc.pipeline.context import RunContext
from clisc.pipeline.methods import PIPELINE_GT_SWITCHES, all_methods
from clisc.pipeline.run import ground_truth_tags, method_settings, resolve_output
from clisc.pipeline.settings import GROUND_TRUTH, Settings, setting

METHODS = sorted(all_methods())
SWITCHES = sorted(set(PIPELINE_GT_SWITCHES).union(*(m.gt_switches for m in all_methods().values())))
# options that open code paths of their own (and so more ways to read labels) beyond a method's defaults
VARIANTS: dict[str, list[dict]] = {
    "medclip_sam": [{"baselines.medclip_sam.weak_supervision": True, "baselines.medclip_sam.finetune": True}],
    "sim2real": [{"baselines.sim2real.host_slices": hosts} for hosts in ("healthy_strict", "all")],
    "salip": [{"baselines.salip.slices": "clip"}],
}


def _on(key: str):
    """The value that turns switch ``key`` on: True for a boolean, ``ground_truth`` otherwise."""
    return True if isinstance(setting(Settings(), key), bool) else GROUND_TRUTH


def _reads_ground_truth(err: Exception) -> bool:
    if isinstance(err, DataError):
        return "needs ground truth" in str(err)
    return isinstance(err, (AttributeError, TypeError)) and "NoneType" in str(err)


@pytest.fixture(scope="module")
def no_labels(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the synthetic dataset without any segmentation file; a cache shared by the module."""
    root = tmp_path_factory.mktemp("no_labels")
    data = root / "data"
    shutil.copytree(synthetic_dataset, data)
    for case in discover_cases(data):
        case.seg.unlink()
    assert all(c.seg is None for c in discover_cases(data))
    return data, root / "cache"


def test_every_switch_has_an_on_value() -> None:
    assert {"gt.select_checkpoints_on_gt", "baselines.healthy_source", "baselines.salip.tta_on_gt"} <= set(SWITCHES)
    assert [_on(k) for k in ("gt.gate_cams_with_gt", "slices.labels")] == [True, GROUND_TRUTH]


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_a_run_tagged_label_free_reads_no_label(name: str, no_labels: tuple[Path, Path]) -> None:
    data, cache = no_labels
    method = all_methods()[name]
    untagged = []
    for variant in [{}, *VARIANTS.get(name, [])]:
        for switch in [None, *SWITCHES]:
            overrides = {**variant, **({switch: _on(switch)} if switch else {})}
            settings = method_settings(method, "paper", "tiny", overrides)
            if not (method.label_free and not ground_truth_tags(method, settings)):
                continue  # tagged label_free=false: nothing to check
            ctx = RunContext(data, settings, cache_root=cache, progress=False, echo=lambda _: None)
            try:
                resolve_output(method.output)(ctx, "test")
            except Exception as err:  # noqa: BLE001 - only a read of labels is this test's business
                if not _reads_ground_truth(err):
                    raise
                untagged.append(f"{overrides}: {err}")
    assert not untagged, f"{name} read ground truth in runs tagged label_free=true: {untagged}"


@pytest.mark.parametrize("weak, tags", [(False, []), (True, ["select_checkpoints_on_gt"])])
def test_medclip_sam_s_unet_checkpoint_choice_is_tagged_when_the_unet_exists(weak: bool, tags: list[str]) -> None:
    method = all_methods()["medclip_sam"]
    settings = method_settings(method, "paper", "tiny", {"gt.select_checkpoints_on_gt": True,
                                                          "baselines.medclip_sam.weak_supervision": weak})
    assert ground_truth_tags(method, settings) == tags
