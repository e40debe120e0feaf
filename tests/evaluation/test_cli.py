"""``clisc eval`` on tiny synthetic BraTS folders (and one real case when the sample is present)."""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from medpy.metric.binary import hd95 as medpy_hd95
from scipy import ndimage

from clisc.errors import DataError
from clisc.evaluation import cli
from clisc.evaluation.evaluate import PER_CASE_COLUMNS
from clisc.evaluation.metrics import EMPTY_HD95_MM


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


def _seg(data_dir: Path, case_id: str) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(data_dir / case_id / f"{case_id}_seg.nii.gz")
    return np.asarray(image.dataobj) > 0, image.affine


def _write_pred(path: Path, mask: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), path)


def test_eval_scores_predictions_and_reports_missing(tiny_brats_dir: Path, tmp_path: Path, capsys) -> None:
    ids = sorted(p.name for p in tiny_brats_dir.iterdir())
    pred_dir, out = tmp_path / "pred", tmp_path / "out" / "scores.csv"
    first, affine = _seg(tiny_brats_dir, ids[0])
    _write_pred(pred_dir / f"{ids[0]}.nii.gz", first, affine)  # perfect
    second, affine = _seg(tiny_brats_dir, ids[1])
    _write_pred(pred_dir / f"{ids[1]}_pred.nii.gz", ndimage.binary_dilation(second), affine)
    assert _run("--pred", str(pred_dir), "--data", str(tiny_brats_dir), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "prediction empty 1" in printed and ids[2] in printed
    table = pd.read_csv(out, keep_default_na=False).set_index("case_id")
    assert list(table.reset_index().columns) == list(PER_CASE_COLUMNS)
    assert (table.loc[ids[0], "dsc"], table.loc[ids[0], "hd95"]) == (100.0, 0.0)
    dilated = ndimage.binary_dilation(second)
    assert table.loc[ids[1], "hd95"] == pytest.approx(medpy_hd95(dilated, second), abs=1e-9)
    assert (table.loc[ids[2], "hd95"], table.loc[ids[2], "empty"]) == (EMPTY_HD95_MM, "pred")
    assert table.loc[ids[0], "gt_voxels"] == int(first.sum())


def test_eval_selected_cases_only(tiny_brats_dir: Path, tmp_path: Path) -> None:
    case_id = sorted(p.name for p in tiny_brats_dir.iterdir())[1]
    seg, affine = _seg(tiny_brats_dir, case_id)
    _write_pred(tmp_path / "pred" / f"{case_id}.nii.gz", seg, affine)
    out = tmp_path / "one.csv"
    _run("--pred", str(tmp_path / "pred"), "--data", str(tiny_brats_dir), "--cases", case_id, "--out", str(out))
    table = pd.read_csv(out)
    assert table["case_id"].tolist() == [case_id] and table["size_group"].tolist() == ["medium"]


def _broken_gzip(path: Path, mask: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(b"not a nifti file at all" * 20))


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (lambda path, mask, affine: _write_pred(path, mask[:-1], affine), "differs from the ground truth"),
        (lambda path, mask, affine: nib.save(nib.Nifti1Image(mask * 0.5, affine), path), "non-integer"),
        (_broken_gzip, "unreadable"),
    ],
)
def test_bad_prediction_raises_naming_the_file(tiny_brats_dir: Path, tmp_path: Path, writer, message: str) -> None:
    case_id = sorted(p.name for p in tiny_brats_dir.iterdir())[0]
    seg, affine = _seg(tiny_brats_dir, case_id)
    path = tmp_path / "pred" / f"{case_id}.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer(path, seg.astype(np.float32), affine)
    with pytest.raises(DataError, match=message) as caught:
        _run("--pred", str(path.parent), "--data", str(tiny_brats_dir))
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no_folder", "prediction folder not found"),
        ("empty_folder", "no prediction"),
        ("unknown_case", "case(s) not found"),
        ("ambiguous", "ambiguous prediction"),
    ],
)
def test_eval_input_errors(tiny_brats_dir: Path, tmp_path: Path, setup: str, message: str) -> None:
    case_id = sorted(p.name for p in tiny_brats_dir.iterdir())[0]
    pred_dir = tmp_path / "pred"
    argv = ["--pred", str(pred_dir), "--data", str(tiny_brats_dir)]
    if setup != "no_folder":
        pred_dir.mkdir()
    if setup == "unknown_case":
        argv += ["--cases", "nope"]
    if setup == "ambiguous":
        seg, affine = _seg(tiny_brats_dir, case_id)
        _write_pred(pred_dir / f"{case_id}.nii.gz", seg, affine)
        _write_pred(pred_dir / f"{case_id}_pred.nii.gz", seg, affine)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _run(*argv)
