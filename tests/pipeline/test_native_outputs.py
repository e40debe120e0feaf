"""Runs score and save their masks in the stored file's own grid: ``clisc eval`` on the saved NIfTI
files gives the run's per-case scores exactly, without resampling scoring equals scoring on the
crop, a reoriented dataset scores the same, and experiments log the masks to MLflow."""
from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from clisc.cli import main
from clisc.data.discovery import discover_cases
from clisc.evaluation.cli import evaluate_folder
from clisc.evaluation.evaluate import evaluate_cases
from clisc.pipeline.context import RunContext
from clisc.pipeline.experiment import run_experiment
from clisc.pipeline.methods import get_method
from clisc.pipeline.run import OUTPUTS, method_settings, run_method
from clisc.tracking.readback import load_experiment_results

QUIET = {"progress": False, "echo": lambda _: None}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("native_cache")


def test_eval_of_the_saved_masks_reproduces_the_runs_scores_exactly(synthetic_dataset, cache, tmp_path):
    result = run_method("cam_amda", synthetic_dataset, profile="tiny", cache_root=cache, out_dir=tmp_path / "run",
                        save_predictions=True, **QUIET)
    folder = result.artifacts["predictions"]
    ids = result.per_case["case_id"].tolist()
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{c}.nii.gz" for c in ids)
    cases = {c.case_id: c for c in discover_cases(synthetic_dataset)}
    for case_id in ids:
        saved, flair = nib.load(folder / f"{case_id}.nii.gz"), nib.load(cases[case_id].flair)
        assert saved.get_data_dtype() == np.uint8 and saved.shape == flair.shape  # 96x96x64, not the 4 mm grid
        np.testing.assert_array_equal(saved.affine, flair.affine)
    table, missing = evaluate_folder(folder, str(synthetic_dataset), ids)
    assert not missing
    pd.testing.assert_frame_equal(table, result.per_case, check_exact=True)
    with np.load(result.artifacts["qualitative"]) as slices:  # shown as the 2D models see them
        image = slices[f"{ids[0]}__image"]
        assert image.min() == 0 == image[0, 0] and image.max() == 1


def test_run_cli_saves_predictions(synthetic_dataset, cache, tmp_path, capsys):
    assert main(["run", "cam_amda", "--data", str(synthetic_dataset), "--profile", "tiny", "--cache", str(cache),
                 "--out", str(tmp_path), "--save-predictions"]) == 0
    assert "native-grid masks" in capsys.readouterr().out
    scores = pd.read_csv(tmp_path / "cam_amda_seed0" / "per_case.csv")
    assert main(["eval", "--pred", str(tmp_path / "cam_amda_seed0" / "predictions"), "--data", str(synthetic_dataset),
                 "--cases", *scores["case_id"], "--out", str(tmp_path / "eval.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "eval.csv"), scores)


@pytest.mark.slow
def test_without_resampling_native_scores_equal_scores_on_the_crop(synthetic_dataset, cache):
    """The paper profile does not resample: scoring in the stored grid only uncrops."""
    overrides = {"preprocess.target_spacing": None}
    result = run_method("cam_amda", synthetic_dataset, profile="tiny", cache_root=cache, overrides=overrides, **QUIET)
    settings = method_settings(get_method("cam_amda"), "paper", "tiny", overrides)
    ctx = RunContext(synthetic_dataset, settings, 0, cache, progress=False, echo=lambda _: None)
    _, preds = OUTPUTS["cam_amda"](ctx, "test")  # cached by the run
    cropped = evaluate_cases((v.case_id, preds[v.case_id].astype(bool), v.label.astype(bool), v.spacing)
                             for v in ctx.volumes("test"))
    assert cropped["gt_voxels"].sum() > 1000
    pd.testing.assert_frame_equal(result.per_case, cropped, check_exact=True)


@pytest.mark.slow
def test_a_reoriented_dataset_gives_the_same_scores(synthetic_dataset, cache, tmp_path, reoriented_case_writer):
    copy = tmp_path / "reoriented"
    for case in discover_cases(synthetic_dataset):
        reoriented_case_writer(case.flair.parent, copy, ("S", "R", "A"))
    shutil.copy(synthetic_dataset / "SYNTHETIC", copy / "SYNTHETIC")
    original = run_method("cam_amda", synthetic_dataset, profile="tiny", cache_root=cache, **QUIET)
    result = run_method("cam_amda", copy, profile="tiny", cache_root=tmp_path / "cache", out_dir=tmp_path / "run",
                        save_predictions=True, **QUIET)
    assert result.tags["dataset"] != original.tags["dataset"]  # really another dataset, computed afresh
    pd.testing.assert_frame_equal(result.per_case, original.per_case, check_exact=False, rtol=1e-9)
    some = result.per_case["case_id"].iloc[0]
    saved = nib.load(result.artifacts["predictions"] / f"{some}.nii.gz")
    assert nib.aff2axcodes(saved.affine) == ("S", "R", "A")


def test_experiment_logs_the_masks_as_artifacts(synthetic_dataset, cache, tmp_path, tracking_uri):
    spec = tmp_path / "native.yaml"
    spec.write_text("name: native\nmethods: [cam_amda]\nseeds: [0]\n")
    run_experiment(spec, synthetic_dataset, profile="tiny", cache_root=cache, runs_root=tmp_path / "runs",
                   tracking_uri=tracking_uri, echo=lambda _: None, save_predictions=True)
    logged = load_experiment_results("native", tracking_uri)[0]
    client = mlflow.MlflowClient(tracking_uri)
    run_id = client.search_runs([client.get_experiment_by_name("native").experiment_id],
                                "tags.method = 'cam_amda'")[0].info.run_id
    names = sorted(Path(a.path).name for a in client.list_artifacts(run_id, "predictions"))
    assert names == sorted(f"{c}.nii.gz" for c in logged.per_case["case_id"])
