"""clisc.data.lazy: volumes read from the preprocessed cache on access, NpzFolder, mapped views."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from clisc.data.discovery import discover_cases
from clisc.data.lazy import LazyMapping, LazyVolumes, MappedSequence, NpzFolder
from clisc.data.preprocessing import PreprocessedStore, preprocess
from clisc.data.io import load_case


@pytest.fixture
def store_and_cases(tiny_brats_dir: Path, tmp_path: Path):
    return PreprocessedStore(tmp_path / "cache"), discover_cases(tiny_brats_dir)


def test_construction_preprocesses_missing_cases_and_keeps_none(store_and_cases, monkeypatch) -> None:
    store, cases = store_and_cases
    volumes = LazyVolumes(cases, store)
    assert all(store.path(c).is_file() for c in cases)
    assert len(volumes) == 3 and volumes.case_ids == [c.case_id for c in cases]
    assert len(volumes._recent) == 0
    reads: list[str] = []
    real_load = store.load
    monkeypatch.setattr(store, "load", lambda files: reads.append(files.case_id) or real_load(files))
    LazyVolumes(cases, store)  # everything cached: nothing is read
    assert reads == []


def test_items_equal_the_preprocessed_volumes_and_only_a_few_stay_in_memory(store_and_cases, monkeypatch) -> None:
    store, cases = store_and_cases
    volumes = LazyVolumes(cases, store, keep=1)
    reads: list[str] = []
    real_load = store.load
    monkeypatch.setattr(store, "load", lambda files: reads.append(files.case_id) or real_load(files))
    for files, volume in zip(cases, volumes):
        expected = preprocess(load_case(files))
        np.testing.assert_array_equal(volume.image, expected.image)
        np.testing.assert_array_equal(volume.label, expected.label)
        assert len(volumes._recent) == 1
    assert reads == [c.case_id for c in cases]
    volumes.labels()[2]
    volumes.images()[2]  # the most recent volume is not read again
    assert reads == [c.case_id for c in cases]
    assert volumes[-1].case_id == cases[-1].case_id
    with pytest.raises(IndexError):
        volumes[3]


def test_select_slice_and_views(store_and_cases) -> None:
    store, cases = store_and_cases
    volumes = LazyVolumes(cases, store)
    ids = volumes.case_ids
    chosen = volumes.select([ids[2], ids[0]])
    assert chosen.case_ids == [ids[2], ids[0]] and chosen[0].case_id == ids[2]
    assert volumes[1:].case_ids == ids[1:]
    assert volumes.by_id(ids[1]).case_id == ids[1]
    labels = volumes.labels_by_id()
    assert list(labels) == ids and len(labels) == 3 and ids[0] in labels and "other" not in labels
    np.testing.assert_array_equal(labels[ids[1]], volumes[1].label)
    images = volumes.images()
    assert len(images) == 3 and images[1:][0].shape == volumes[1].image.shape
    clone = pickle.loads(pickle.dumps(images))  # DataLoader workers may receive one
    np.testing.assert_array_equal(clone[0], volumes[0].image)


def test_mapped_sequence_and_lazy_mapping_compute_on_access() -> None:
    calls: list[int] = []
    mapped = MappedSequence([1, 2, 3], lambda x: calls.append(x) or x * 10)
    assert calls == [] and len(mapped) == 3
    assert mapped[1] == 20 and list(mapped) == [10, 20, 30]
    lazy = LazyMapping(["a", "b"], str.upper)
    assert dict(lazy) == {"a": "A", "b": "B"}
    with pytest.raises(KeyError):
        lazy["c"]


def test_npz_folder_reads_and_writes_per_case_files(tmp_path: Path) -> None:
    masks = NpzFolder(tmp_path / "masks", "mask")
    assert len(masks) == 0 and list(masks) == []
    masks["b"] = np.ones((2, 3), np.uint8)
    masks["a"] = np.zeros((2, 3), np.uint8)
    assert list(masks) == ["a", "b"] and "a" in masks and "c" not in masks
    np.testing.assert_array_equal(masks["b"], np.ones((2, 3)))
    rows = NpzFolder(tmp_path / "rows")
    rows["x"] = {"cam": np.full(3, 0.5, np.float16), "roi": np.ones(3, np.uint8)}
    assert set(rows["x"]) == {"cam", "roi"}
    np.testing.assert_array_equal(rows.view("roi")["x"], np.ones(3))
    kept = masks.view(keys=["b"])
    assert list(kept) == ["b"] and len(kept) == 1 and "a" not in kept
    with pytest.raises(KeyError):
        kept["a"]
    del masks["a"]
    assert list(masks) == ["b"]
    with pytest.raises(ValueError, match="dicts of arrays"):
        rows["y"] = np.zeros(2)
