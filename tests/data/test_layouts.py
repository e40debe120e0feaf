from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from clisc.data.discovery import dataset_fingerprint, discover_cases, scan_case_folders
from clisc.data.io import load_case, whole_tumour
from clisc.data.layouts import LAYOUTS
from clisc.data.synth import synthesize_dataset
from clisc.data.synth.layouts import synthesize_in_layout
from clisc.errors import DataError

SHAPE = (48, 48, 32)


@pytest.fixture(scope="module")
def layout_roots(tmp_path_factory):
    """The same 2 synthetic cases in the three layouts."""
    roots = {}
    for layout in ("brats2020", "brats2023", "msd"):
        root = tmp_path_factory.mktemp(layout)
        if layout == "brats2020":
            synthesize_dataset(root, 2, seed=3, shape=SHAPE, progress=False)
        else:
            synthesize_in_layout(root, 2, seed=3, layout=layout, shape=SHAPE, progress=False)
        roots[layout] = root
    return roots


@pytest.mark.parametrize("layout, first_id", [("brats2020", "BraTS20_Training_001"),
                                              ("brats2023", "BraTS-GLI-00001-000"), ("msd", "BRATS_001")])
def test_each_layout_found_and_named(layout_roots, layout, first_id):
    cases = discover_cases(layout_roots[layout])
    assert [c.layout for c in cases] == [layout, layout]
    assert cases[0].case_id == first_id
    assert (cases[0].channel == 0) == (layout == "msd")  # FLAIR is MSD's channel 0


@pytest.mark.parametrize("layout", ["brats2023", "msd"])
def test_same_cases_load_the_same_in_every_layout(layout_roots, layout):
    for ref, other in zip(discover_cases(layout_roots["brats2020"]), discover_cases(layout_roots[layout])):
        a, b = load_case(ref), load_case(other)
        np.testing.assert_array_equal(a.flair, b.flair)
        np.testing.assert_array_equal(a.seg, b.seg)  # labels mapped back to BraTS's values
        assert whole_tumour(b.seg).any()


@pytest.mark.parametrize("layout, scale", [("brats2023", 2), ("msd", 4)])
def test_t2_modality_reads_the_t2_file_or_channel(layout_roots, layout, scale):
    flair = load_case(discover_cases(layout_roots[layout])[0])
    t2_files = discover_cases(layout_roots[layout], modality="t2")[0]
    assert t2_files.modality == "T2"
    np.testing.assert_array_equal(load_case(t2_files).flair, flair.flair * scale)  # synthetic T2 = scaled FLAIR


def test_fingerprint_names_layout_and_modality(layout_roots):
    flair = discover_cases(layout_roots["msd"])
    t2 = discover_cases(layout_roots["msd"], modality="T2")
    assert dataset_fingerprint(flair) != dataset_fingerprint(t2)


def test_resection_cavity_is_not_tumour(tmp_path):
    case = "BraTS-GLI-00007-001"
    folder = tmp_path / case
    folder.mkdir()
    image = np.zeros((8, 8, 4), np.int16)
    image[2:6, 2:6] = 100
    seg = np.zeros((8, 8, 4), np.uint8)
    seg[2, 2, :] = [1, 2, 3, 4]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), folder / f"{case}-t2f.nii.gz")
    nib.save(nib.Nifti1Image(seg, affine), folder / f"{case}-seg.nii.gz")
    loaded = load_case(discover_cases(tmp_path)[0])
    assert loaded.seg[2, 2].tolist() == [1, 2, 4, 0]  # NCR, ED, ET -> BraTS 1, 2, 4; cavity -> 0
    assert whole_tumour(loaded.seg).sum() == 3
    assert LAYOUTS["brats2023"].tumour_labels == (1, 2, 3)


def _msd(tmp_path, channels=4, modality=None, labels=(0, 1, 2, 3), listed=("BRATS_001",)):
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / sub).mkdir()
    volume = np.stack([np.full((6, 6, 4), 10 * (c + 1), np.int16) for c in range(channels)], axis=-1)
    seg = np.zeros((6, 6, 4), np.uint8)
    seg[0, 0, : len(labels)] = labels
    nib.save(nib.Nifti1Image(volume, np.eye(4) * [-1, -1, 1, 1]), tmp_path / "imagesTr" / "BRATS_001.nii.gz")
    nib.save(nib.Nifti1Image(seg, np.eye(4) * [-1, -1, 1, 1]), tmp_path / "labelsTr" / "BRATS_001.nii.gz")
    (tmp_path / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"macOS resource fork")
    spec = {"modality": modality or {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            "training": [{"image": f"./imagesTr/{c}.nii.gz"} for c in listed]}
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    return tmp_path


def test_msd_channel_order_comes_from_dataset_json(tmp_path):
    root = _msd(tmp_path, modality={"0": "T1w", "1": "t1gd", "2": "FLAIR", "3": "T2w"})
    files = discover_cases(root)
    assert [c.case_id for c in files] == ["BRATS_001"] and files[0].channel == 2
    case = load_case(files[0])
    assert case.flair.shape == (6, 6, 4) and np.all(case.flair == 30)
    assert case.seg[0, 0].tolist() == [0, 2, 1, 4]  # edema -> 2, non-enhancing -> 1, enhancing -> 4


@pytest.mark.parametrize("kwargs, where, message", [
    ({"channels": 3}, "BRATS_001.nii.gz", "expected a 4D volume with 4 channels"),
    ({"labels": (0, 1, 4)}, "BRATS_001.nii.gz", r"unknown label value\(s\) \[4\]; expected \(0, 1, 2, 3\) \(msd\)"),
])
def test_msd_bad_file_is_one_line(tmp_path, kwargs, where, message):
    files = discover_cases(_msd(tmp_path, **kwargs))[0]
    with pytest.raises(DataError, match=message) as err:
        load_case(files)
    assert err.value.path.name == where and "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"listed": ("BRATS_001", "BRATS_002")}, "lists 1 training image.s. absent from imagesTr/, e.g. BRATS_002"),
    ({"modality": {"0": "FLAIR", "1": "T2w"}}, "'modality' names 2 channels; msd has 4"),
])
def test_msd_dataset_json_that_disagrees_is_one_line(tmp_path, kwargs, message):
    root = _msd(tmp_path, **kwargs)
    with pytest.raises(DataError, match=message) as err:
        scan_case_folders(root)
    assert err.value.path.name == "dataset.json"
