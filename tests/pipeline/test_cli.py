"""`clisc run / experiment / weights`: defaults, one-line errors, exit codes."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

import clisc.pipeline.cli as pipeline_cli
from clisc.cli import main
from clisc.data.split import read_split_csv


def test_default_data_folder_is_written_on_first_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pipeline_cli, "DEFAULT_SYNTHETIC_CASES", 1)
    pipeline_cli.ensure_data(Path("data/synthetic"))
    assert (tmp_path / "data/synthetic/SYNTHETIC").is_file()
    assert (tmp_path / "data/synthetic/BraTS20_Training_001/BraTS20_Training_001_seg.nii.gz").is_file()
    pipeline_cli.ensure_data(Path("elsewhere"))  # a folder the user named is never invented
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("argv,message", [
    (["run", "clisc", "--data", "{tmp}/missing", "--profile", "tiny"], "missing"),
    (["run", "clisc", "--data", "{data}", "--profile", "tiny", "--set", "amda.nope=1"], "unknown setting"),
    (["run", "clisc", "--data", "{data}", "--profile", "tiny", "--set", "amda.alpha"], "expected KEY=VALUE"),
    (["experiment", "table9", "--data", "{data}"], "unknown experiment"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, synthetic_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.format(tmp=tmp_path, data=synthetic_dataset) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clisc: error: ") and message in err and "\n" not in err


def test_weights_without_download_names_the_file_and_folder(tmp_path, capsys):
    assert main(["weights", "sam_vit_b", "--dir", str(tmp_path), "--no-download"]) == 2
    err = capsys.readouterr().err.strip()
    assert "sam_vit_b_01ec64.pth" in err and str(tmp_path) in err and "\n" not in err


def test_run_prints_stages_and_scores(synthetic_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "cam_amda", "--data", str(synthetic_dataset), "--profile", "tiny", "--out", "runs"]) == 0
    out = capsys.readouterr().out
    assert "classifier_amda" in out and "computed" in out and "cam_amda: DSC" in out
    assert (tmp_path / "runs/cam_amda_seed0/per_case.csv").is_file()


def _public_csvs(folder: Path, parts: dict[str, list[str]]) -> list[str]:
    """The public code's split files (image_pth,mask_pth) for ``parts`` (train, valid, test)."""
    paths = []
    for name, ids in parts.items():
        rows = [f"../data/BraTS2020/image/{c}.nii.gz,../data/BraTS2020/label/{c}.nii.gz" for c in ids]
        paths.append(folder / f"{name}.csv")
        paths[-1].write_text("\n".join(["image_pth,mask_pth", *rows]) + "\n")
    return [str(p) for p in paths]


def _run_folder(folder: Path) -> tuple[list[str], dict]:
    """(scored case ids, tags) of a run folder."""
    tags = yaml.safe_load((folder / "settings.yaml").read_text())["tags"]
    return pd.read_csv(folder / "per_case.csv", dtype={"case_id": str})["case_id"].tolist(), tags


def test_run_scores_exactly_the_test_cases_of_an_imported_public_split(synthetic_dataset, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    ids = sorted(p.name for p in synthetic_dataset.iterdir() if p.is_dir())
    test = [ids[0], ids[4], ids[9]]  # 6 / 1 / 3: not what the default 7:1:2 split would give
    parts = {"train": [c for c in ids[1:] if c not in test], "valid": [ids[1]], "test": test}
    parts["train"].remove(ids[1])
    assert main(["data", "split", str(synthetic_dataset), "--import-public", *_public_csvs(tmp_path, parts)]) == 0
    split_file = Path(capsys.readouterr().out.strip().split(": ")[-1])
    assert split_file.parent == Path(os.environ["CLISC_SPLITS_DIR"])  # the one split folder
    assert main(["run", "raw_cam", "--data", str(synthetic_dataset), "--profile", "tiny", "--split", str(split_file),
                 "--cache", "cache"]) == 0
    scored, tags = _run_folder(tmp_path / "runs/raw_cam_seed0")
    assert sorted(scored) == test
    assert tags["split_file"] == split_file.name
    assert tags["split_sha256"] == hashlib.sha256(split_file.read_bytes()).hexdigest()
    assert not (tmp_path / "splits").exists() and not (tmp_path / "cache/splits").exists()


def test_a_missing_split_file_is_one_line(synthetic_dataset, tmp_path, capsys):
    argv = ["run", "raw_cam", "--data", str(synthetic_dataset), "--profile", "tiny", "--split", str(tmp_path / "x.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"clisc: error: {tmp_path / 'x.csv'}: split file not found (make one with `clisc data split`)"


@pytest.mark.slow
def test_run_with_folds_tests_every_case_once(synthetic_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLISC_SPLITS_DIR", str(tmp_path / "splits"))
    argv = ["run", "raw_cam", "--data", str(synthetic_dataset), "--profile", "tiny", "--folds", "2", "--cache", "cache"]
    assert main(argv) == 0
    assert "2 folds pooled: raw_cam: DSC" in capsys.readouterr().out
    all_ids = sorted(p.name for p in synthetic_dataset.iterdir() if p.is_dir())
    tested = []
    for fold in (1, 2):
        scored, tags = _run_folder(tmp_path / f"runs/raw_cam_seed0_fold{fold}")
        assert (tags["fold"], tags["folds"]) == (str(fold), "2") and tags["split_file"].endswith(f"_fold{fold}of2.csv")
        split = read_split_csv(tmp_path / "splits" / tags["split_file"])
        assert sorted(scored) == split["test"] and not set(split["test"]) & set(split["train"] + split["valid"])
        tested += scored
    assert sorted(tested) == all_ids  # every case tested exactly once
    pooled = pd.read_csv(tmp_path / "runs/raw_cam_seed0_folds2_pooled.csv", dtype={"case_id": str})
    assert sorted(pooled["case_id"]) == all_ids


def test_settings_file_overrides_and_provenance(synthetic_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    best = tmp_path / "reports/search/s1/best.yaml"
    best.parent.mkdir(parents=True)
    best.write_text("provenance: {study: s1, storage: 'sqlite:///o.db', objective: validation_dice, label_free: false, "
                    "best_trial: 7, value: 81.2}\noverrides: {amda.alpha: 10.0, s3f.beta: 30.0, cam.threshold: 0.45}\n")
    assert main(["run", "raw_cam", "--data", str(synthetic_dataset), "--profile", "tiny", "--cache", "cache",
                 "--settings-file", str(best), "--set", "cam.threshold=0.4"]) == 0
    settings = yaml.safe_load((tmp_path / "runs/raw_cam_seed0/settings.yaml").read_text())
    assert (settings["settings"]["amda"]["alpha"], settings["settings"]["cam"]["threshold"]) == (10.0, 0.4)
    tags = settings["tags"]
    assert (tags["tuned_study"], tags["tuned_objective"], tags["tuned_on_labels"]) == ("s1", "validation_dice", "true")
    assert tags["label_free"] == "false" and tags["gt_switches"] == "tuned_on_validation_labels"


def test_bad_settings_file_is_one_line(synthetic_dataset, tmp_path, capsys):
    best = tmp_path / "best.yaml"
    best.write_text("overrides: [amda.alpha]\n")
    assert main(["run", "raw_cam", "--data", str(synthetic_dataset), "--profile", "tiny", "--settings-file",
                 str(best)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"clisc: error: {best}: a settings file needs an 'overrides' mapping") and "\n" not in err


def test_skip_bad_leaves_a_corrupt_case_out(synthetic_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    for case in synthetic_dataset.iterdir():
        if case.is_dir():
            (data / case.name).symlink_to(case, target_is_directory=True)
    bad = data / "BraTS20_Training_099"
    bad.mkdir()
    (bad / "BraTS20_Training_099_flair.nii.gz").write_bytes(b"not a NIfTI file")
    shutil.copy(next(synthetic_dataset.glob("*/*_seg.nii.gz")), bad / "BraTS20_Training_099_seg.nii.gz")
    argv = ["run", "raw_cam", "--data", str(data), "--profile", "tiny", "--cache", "cache"]

    assert main(argv) == 2  # without --skip-bad: one line, naming the file, saying what to do
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    assert err.startswith("clisc: error: ") and "BraTS20_Training_099_flair.nii.gz" in err and "--skip-bad" in err

    assert main(argv + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "[clisc] --skip-bad: skipping BraTS20_Training_099: BraTS20_Training_099_flair.nii.gz: " in out
    assert "[clisc] --skip-bad: 10 good cases, 1 skipped" in out
    scored, tags = _run_folder(tmp_path / "runs/raw_cam_seed0")
    assert tags["skipped_cases"] == "BraTS20_Training_099" and "BraTS20_Training_099" not in scored
    split = read_split_csv(Path(os.environ["CLISC_SPLITS_DIR"]) / tags["split_file"])
    assert "BraTS20_Training_099" not in {c for part in split.values() for c in part}
