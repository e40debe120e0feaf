"""Input identity: an in-place edit of one input file at the same size re-runs every stage."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import clisc.data.identity as identity
from clisc.data.discovery import dataset_fingerprint, discover_cases
from clisc.data.identity import dataset_content_key, file_digest
from clisc.pipeline.context import RunContext
from clisc.pipeline.run import run_method
from clisc.pipeline.settings import resolve_settings


def edit_in_place(path: Path, value: int | None = None) -> None:
    """Change one in-brain voxel of an uncompressed NIfTI without changing its size; the mtime moves on."""
    image = nib.load(path)
    data = np.asanyarray(image.dataobj)
    index = tuple(np.argwhere(data > 0)[0]) if value is None else tuple(np.argwhere(data == 0)[0])
    offset = int(image.header["vox_offset"])
    itemsize = data.dtype.itemsize
    flat = int(np.ravel_multi_index(index, data.shape, order="F"))
    new = np.array([data[index] + 57 if value is None else value], dtype=image.header.get_data_dtype())
    stat = path.stat()
    with path.open("r+b") as handle:
        handle.seek(offset + flat * itemsize)
        handle.write(new.tobytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert path.stat().st_size == stat.st_size


@pytest.fixture
def nii_dataset(brats_case_writer, tmp_path: Path) -> Path:
    root = tmp_path / "brats"
    for index in range(1, 4):
        brats_case_writer(root, f"BraTS20_Training_{index:03d}", seed=index, suffix=".nii")
    return root


def test_digest_is_cached_by_stat_and_changes_with_content(nii_dataset: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    flair = discover_cases(nii_dataset)[0].flair
    first = file_digest(flair, tmp_path / "cache")
    reads = {"n": 0}
    real_open = Path.open

    def counting_open(self, *args, **kwargs):
        reads["n"] += self == flair
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    assert file_digest(flair, tmp_path / "cache") == first and reads["n"] == 0  # cached: not read again
    monkeypatch.undo()
    edit_in_place(flair)
    assert file_digest(flair, tmp_path / "cache") != first


@pytest.mark.parametrize("which", ["flair", "seg"])
def test_same_size_edit_changes_the_volumes_key_but_not_the_dataset_name(which: str, nii_dataset: Path,
                                                                       tmp_path: Path) -> None:
    settings = resolve_settings(profile="tiny")
    before = RunContext(nii_dataset, settings, cache_root=tmp_path / "c", progress=False, echo=lambda _: None)
    case = discover_cases(nii_dataset)[1]
    edit_in_place(case.flair if which == "flair" else case.seg, None if which == "flair" else 2)
    after = RunContext(nii_dataset, settings, cache_root=tmp_path / "c", progress=False, echo=lambda _: None)
    assert after.fingerprint == before.fingerprint  # ids + sizes: the split file is the same one
    assert after.content_key != before.content_key and after.volumes_key != before.volumes_key


def test_a_copied_dataset_keeps_its_key(nii_dataset: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(nii_dataset, copy)  # new paths and mtimes, same bytes
    assert dataset_content_key(discover_cases(copy), tmp_path / "c") == dataset_content_key(
        discover_cases(nii_dataset), tmp_path / "c")
    assert dataset_fingerprint(discover_cases(copy)) == dataset_fingerprint(discover_cases(nii_dataset))


def test_unreadable_input_is_a_one_line_data_error(nii_dataset: Path, tmp_path: Path) -> None:
    from clisc.errors import DataError

    with pytest.raises(DataError, match="cannot stat input file"):
        identity.file_digest(nii_dataset / "missing.nii", tmp_path)


def _computed(lines: list[str]) -> set[str]:
    return {line.split()[1] for line in lines if line.startswith("[clisc]") and " computed " in line}


def test_in_place_edit_of_a_flair_recomputes_every_stage(synthetic_dataset: Path, tmp_path: Path) -> None:
    """BraTS2020's uncompressed .nii files keep their size when edited: every stage must run again."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    for path in sorted(data.glob("*/*.nii.gz")):  # the same cases as uncompressed .nii files
        nib.save(nib.load(path), path.with_name(path.name[:-3]))
        path.unlink()
    cache = tmp_path / "cache"
    runs = []
    for edit in (False, False, True):
        if edit:
            train = RunContext(data, resolve_settings(profile="tiny"), cache_root=cache, progress=False,
                               echo=lambda _: None).split["train"][0]
            edit_in_place(next((data / train).glob("*flair*.nii")))
        lines: list[str] = []
        run_method("clisc", data, profile="tiny", cache_root=cache, progress=False, echo=lines.append)
        runs.append(_computed(lines))
    first, unchanged, edited = runs
    assert {"slice_labels", "classifier_raw", "cams", "sam_pseudo_labels", "unet_round1", "s3f",
            "unet_round2", "predictions"} <= first
    assert unchanged == set()  # nothing changed: everything from the cache
    assert edited == first  # one voxel of one FLAIR changed at the same size: every stage again
