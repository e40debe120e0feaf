"""`clisc run / experiment / weights`: defaults, one-line errors, exit codes."""
from __future__ import annotations

from pathlib import Path

import pytest

import clisc.pipeline.cli as pipeline_cli
from clisc.cli import main


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
