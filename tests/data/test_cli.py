from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import pytest

from clisc.data import cli
from clisc.data.split import read_split_csv


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="clisc")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.brats_sample
def test_check_brats_sample_all_good(brats_sample, capsys):
    assert run(["data", "check", str(brats_sample)]) == 0
    assert capsys.readouterr().out.startswith("12 good, 0 bad")


def test_check_damaged_folder_exits_1(tiny_brats_dir, capsys):
    seg = tiny_brats_dir / "BraTS20_Training_003" / "BraTS20_Training_003_seg.nii.gz"
    seg.write_bytes(b"garbage")
    assert run(["data", "check", str(tiny_brats_dir)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("BraTS20_Training_003: BraTS20_Training_003_seg.nii.gz: unreadable NIfTI")
    assert lines[1].startswith("2 good, 1 bad") and len(lines) == 2


def test_split_writes_csv_and_prints_counts(tiny_brats_dir, tmp_path, capsys):
    out = tmp_path / "split.csv"
    assert run(["data", "split", str(tiny_brats_dir), "--seed", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"train 2 / valid 0 / test 1: {out}"
    assert sum(len(v) for v in read_split_csv(out).values()) == 3


def test_split_default_path_under_current_directory(tiny_brats_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLISC_SPLITS_DIR")
    assert run(["data", "split", str(tiny_brats_dir)]) == 0
    written = Path(capsys.readouterr().out.strip().split(": ")[-1])
    assert written.parent == Path("splits") and (tmp_path / written).is_file()


def test_split_import_public(tiny_brats_dir, tmp_path, capsys):
    csvs = []
    for name, ids in [("train", ["001", "002"]), ("valid", []), ("test", ["003"])]:
        rows = [f"image/BraTS20_Training_{i}.nii.gz,label/BraTS20_Training_{i}.nii.nii.gz" for i in ids]
        csvs.append(tmp_path / f"{name}.csv")
        csvs[-1].write_text("\n".join(["image_pth,mask_pth", *rows]) + "\n")
    out = tmp_path / "public.csv"
    assert run(["data", "split", str(tiny_brats_dir), "--import-public", *map(str, csvs), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("train 2 / valid 0 / test 1")
    assert read_split_csv(out)["test"] == ["BraTS20_Training_003"]


def test_preprocess_fills_the_cache(tiny_brats_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = ["data", "preprocess", str(tiny_brats_dir), "--cache", str(cache), "--mode", "official",
            "--target-spacing", "2"]
    assert run(argv) == 0
    assert capsys.readouterr().out.startswith("preprocessed 3 cases in")
    assert len(list((cache / "preprocessed").glob("*/*.npz"))) == 3


def test_synth_calls_the_synthesiser(tmp_path, monkeypatch, capsys):
    calls = []
    fake = types.ModuleType("clisc.data.synth")
    fake.synthesize_dataset = lambda out, n_cases, seed: calls.append((out, n_cases, seed))
    monkeypatch.setitem(sys.modules, "clisc.data.synth", fake)
    assert run(["data", "synth", "--out", str(tmp_path / "synth"), "--cases", "4", "--seed", "7"]) == 0
    assert calls == [(tmp_path / "synth", 4, 7)]
    assert "4 synthetic cases" in capsys.readouterr().out
