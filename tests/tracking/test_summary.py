"""The parent run's table, figures and headline metrics; the dataset input of a run."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from clisc.tracking.inputs import dataset_entity, split_digest
from clisc.tracking.summary import headline_metrics, summary_files

SPLIT = pd.DataFrame({"case_id": ["c1", "c2", "c3", "c4"], "split": ["train", "train", "valid", "test"]})


def test_headline_metrics_name_clisc_and_its_best_label_free_rival(fakes) -> None:
    results = [fakes.fake_result("clisc", [80, 90]), fakes.fake_result("clisc", [70, 80], seed=1),
               fakes.fake_result("raw_cam", [40, 50]), fakes.fake_result("cam_amda", [60, 60]),
               fakes.fake_result("fully_supervised", [95, 95], tags={"label_free": "false"})]
    metrics, tags = headline_metrics(results, {})
    assert metrics["dsc_mean"] == pytest.approx(80.0)  # mean of the two seeds' means
    assert metrics["best_rival_dsc_mean"] == 60.0 and tags == {"best_rival": "cam_amda", "best_rival_label_free": "true"}
    assert metrics["fully_supervised/dsc_mean"] == 95.0 and "raw_cam/hd95_mean" in metrics


def test_a_sweep_reports_its_best_point(fakes) -> None:
    results = [fakes.fake_result("clisc", [d, d], params={"s3f.beta": beta}) for beta, d in ((0, 50), (20, 70), (40, 60))]
    metrics, tags = headline_metrics(results, {"sweep": {"s3f.beta": [0, 20, 40]}})
    assert metrics == {"best_dsc_mean": 70.0} and tags == {"best_method": "clisc", "best.s3f.beta": "20"}


@pytest.mark.parametrize("experiment, spec, expected", [
    ("table2", {}, {"table2.md", "table2.csv", "table2.tex", "stage_times.png", "table2_dsc.png"}),
    ("mini", {}, {"mini.md", "mini.csv", "stage_times.png", "mini_dsc.png"}),
    ("beta_check", {"sweep": {"s3f.beta": [0, 20]}}, {"beta_check.md", "beta_check_beta.png", "stage_times.png"}),
])
def test_summary_files(fakes, tmp_path, experiment, spec, expected) -> None:
    results = [fakes.fake_result("clisc", [80, 90], params={"s3f.beta": 0}, stage_times={"s3f": 2.0}),
               fakes.fake_result("clisc", [70, 60], params={"s3f.beta": 20}, stage_times={"unet_round2": 3.0}),
               fakes.fake_result("raw_cam", [40, 50], stage_times={"classifier_raw": 1.0})]
    names = {p.name for p in summary_files(experiment, spec, results, tmp_path)}
    assert expected <= names
    if experiment == "mini":  # only the rows that ran, in the paper's layout
        table = pd.read_csv(tmp_path / "mini.csv")
        assert list(table["method"]) == ["raw CAM", "full CLISC"]  # table2's rows and labels


def test_dataset_input_names_data_split_and_counts(fakes) -> None:
    result = fakes.fake_result("clisc", [1, 2], split=SPLIT, data_root="/data/BraTS2020",
                               tags={"dataset": "abc123", "split_file": "abc123_seed0.csv"})
    entity = dataset_entity(result)
    profile = json.loads(entity.profile)
    assert entity.name == "BraTS2020" and len(entity.digest) <= 36
    assert profile == {"fingerprint": "abc123", "split_digest": split_digest(SPLIT), "split_file": "abc123_seed0.csv",
                       "split_sha256": "", "cases": 4, "cases_test": 1, "cases_train": 2, "cases_valid": 1, "synthetic": "false"}
    moved = fakes.fake_result("clisc", [1, 2], split=SPLIT.assign(split=["train", "valid", "train", "test"]),
                              data_root="/data/BraTS2020", tags={"dataset": "abc123"})
    assert dataset_entity(moved).digest != entity.digest  # another split, another dataset version
    assert dataset_entity(fakes.fake_result("clisc", [1, 2])) is None


def test_parent_description_is_the_compact_table(fakes) -> None:
    from clisc.tracking.summary import description

    empty = fakes.fake_result("raw_cam", [0.0, 0.0], hd95=[373.13, 373.13])
    empty.per_case["empty"] = "pred"
    text = description("table2", {"description": "CLISC ablation"},
                       [fakes.fake_result("clisc", [80, 90]), empty])
    text = text.replace("\u00a0", " ").replace("\u2011", "-")  # headers and numbers kept unbroken
    lines = text.splitlines()
    assert lines[0] == "| method | label-free | DSC | DSC 95% CI | HD95 | paper DSC |"  # first: MLflow folds the rest
    assert "**table2**: CLISC ablation. DSC (%) and HD95 (mm)" in text
    assert any(line.startswith("| raw CAM | yes | 0.00 ± 0.00 [1] |") for line in lines)
    assert "\u00a0" in description("table2", {}, [fakes.fake_result("clisc", [80, 90])]).splitlines()[0]
    assert any(line.startswith("| full CLISC | yes | 85.00 ± 7.07 |") for line in lines)
    assert any(line.startswith("- [1] all of 2 test predictions empty") for line in lines)
    assert "Not run: " in text and "SAM (box)" in text.split("Not run: ")[1]  # not a table row
    assert description("x", {}, [fakes.fake_result("clisc", [1.0]).__class__(
        method="clisc", seed=0, per_case=pd.DataFrame({"case_id": ["a"], "agreement": [0.5]}))]) is None


def test_grouped_spec_headlines_the_default_models_and_names_each_row(fakes) -> None:
    """foundations.yaml: ``dsc_mean`` is CLISC on the default models, not a mean over every model."""
    default = {"sam.model": "vit_b", "foundation.clip_arch": "ViT-B-32-quickgelu"}
    results = [fakes.fake_result("clisc", [80, 80], params=default),
               fakes.fake_result("clisc", [20, 20], params={**default, "sam.model": "sam2.1_hiera_b+"}),
               fakes.fake_result("clisc", [50, 50], params={**default, "foundation.clip_arch": "biomedclip"})]
    spec = {"groups": [{"methods": ["clisc"], "sweep": {"sam.model": ["vit_b", "sam2.1_hiera_b+"]}},
                       {"methods": ["clisc"], "sweep": {"foundation.clip_arch": ["biomedclip"]}}]}
    metrics, _ = headline_metrics(results, spec)
    assert metrics["dsc_mean"] == 80.0 and metrics["clisc/dsc_mean"] == 80.0
    assert metrics["clisc/model_sam2.1_hiera_b_/dsc_mean"] == 20.0
    assert metrics["clisc/clip_arch_biomedclip/dsc_mean"] == 50.0
