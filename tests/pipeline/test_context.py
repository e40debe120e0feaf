"""RunContext: volumes read lazily from the preprocessed cache; half precision refused on a CPU."""
from __future__ import annotations

from pathlib import Path

import pytest

from clisc.data.lazy import LazyVolumes
from clisc.errors import CliscError
from clisc.pipeline.context import RunContext
from clisc.pipeline.run import run_method
from clisc.pipeline.settings import resolve_settings


def test_volumes_are_lazy_and_memoised(tiny_brats_dir: Path, tmp_path: Path) -> None:
    ctx = RunContext(tiny_brats_dir, resolve_settings(profile="tiny"), cache_root=tmp_path, progress=False,
                     echo=lambda _: None)
    train = ctx.volumes("train")
    assert isinstance(train, LazyVolumes) and ctx.volumes("train") is train
    assert train.case_ids == ctx.split["train"]
    assert [v.case_id for v in train] == ctx.split["train"] and len(train._recent) <= train.keep


@pytest.mark.parametrize("setting", ["sam.precision", "unet.precision", "classifier.precision",
                                     "slice_labels.precision"])
def test_half_precision_on_cpu_stops_the_run_before_any_stage(setting: str, tiny_brats_dir: Path,
                                                              tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(CliscError, match=f"{setting}=bf16 needs a CUDA device"):
        run_method("clisc", tiny_brats_dir, profile="tiny", overrides={setting: "bf16"}, cache_root=tmp_path,
                   progress=False, echo=lines.append)
    assert lines == [] and not (tmp_path / "preprocessed").exists()


def test_the_slice_orientation_is_part_of_every_stage_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries computed when the 2D models saw another view of a slice are never served."""
    import clisc.pipeline.context as context

    before = RunContext.key("cams", {"a": 1}, ["input"])
    monkeypatch.setattr(context, "SLICE_ORIENTATION", "rows=x,cols=y")
    assert RunContext.key("cams", {"a": 1}, ["input"]) != before
