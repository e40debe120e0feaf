"""experiments/foundations.yaml: CLISC + SAM for each SAM-stage model, CLISC for each CLIP, at the tiny
profile (random weights), sharing the stages the cache allows, reported with Table 1's columns."""
from __future__ import annotations

import importlib.util

import pytest
import yaml

from clisc.errors import CliscError
from clisc.foundation import catalogue
from clisc.pipeline.experiment import EXPERIMENTS_DIR, expand, load_spec, run_experiment
from clisc.reporting.foundations import COLUMNS, REAL_NUMBERS_NOTE, foundations_table
from clisc.reporting.tables import RANDOM_WEIGHTS_NOTE
from clisc.tracking.readback import load_experiment_results

SAM2_MODELS = [m for m in catalogue.choices("sam.model") if m.startswith("sam2")]


def test_spec_runs_every_sam_and_clip_choice_once():
    spec = load_spec("foundations")
    runs = list(expand(spec))
    pairs = [(r.method, next(iter(r.sweep.items()))) for r in runs]
    assert [(m, v) for m, (k, v) in pairs if k == "sam.model"] == [
        (method, model) for method in ("clisc", "sam_gt_prompts") for model in catalogue.choices("sam.model")]
    assert [(m, v) for m, (k, v) in pairs if k == "foundation.clip_arch"] == [
        ("clisc", arch) for arch in catalogue.choices("foundation.clip_arch")[1:]]  # the default runs once, above
    assert len({r.label for r in runs}) == len(runs)


def test_group_with_a_method_outside_the_spec_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("methods: [clisc]\ngroups:\n  - methods: [raw_cam]\n    sweep: {sam.model: [vit_b]}\n")
    with pytest.raises(CliscError, match=r"group method\(s\) \['raw_cam'\] are not in the spec's methods"):
        load_spec(path)


@pytest.mark.slow
def test_foundations_runs_at_tiny_and_reports_one_row_per_model(synthetic_dataset, tmp_path, tracking_uri):
    spec = yaml.safe_load((EXPERIMENTS_DIR / "foundations.yaml").read_text())
    if importlib.util.find_spec("sam2") is None:  # the sam2 extra is optional: its rows are left out then
        spec["groups"][0]["sweep"]["sam.model"] = [m for m in spec["groups"][0]["sweep"]["sam.model"]
                                                   if m not in SAM2_MODELS]
    path = tmp_path / "foundations.yaml"
    path.write_text(yaml.safe_dump(spec))
    lines: list[str] = []
    results = run_experiment(path, synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                             runs_root=tmp_path / "runs", tracking_uri=tracking_uri, echo=lines.append)
    sam_models = spec["groups"][0]["sweep"]["sam.model"]
    assert len(results) == 2 * len(sam_models) + 3
    # every choice shares the stages before it: the SAM rows share slice labels, classifier, CAM and
    # AMDA; at tiny every CLIP is the one tiny stand-in, so the CLIP rows reuse the default row's stages
    computed = [line.split()[1] for line in lines if " computed" in line]
    assert computed.count("slice_labels") == computed.count("classifier_raw") == computed.count("cams") == 1
    assert computed.count("sam_pseudo_labels") == len(sam_models)  # CLISC: one per SAM model
    logged = load_experiment_results("foundations", tracking_uri)
    table = foundations_table(logged)
    assert list(table.columns) == COLUMNS and len(table) == len(results)
    assert table.attrs["notes"][0] == REAL_NUMBERS_NOTE
    assert any(RANDOM_WEIGHTS_NOTE in note for note in table.attrs["notes"])
    labels = list(table["method"])
    assert labels[0] == "CLISC (SAM stage: SAM ViT-B; CLIP: CLIP ViT-B/32 (OpenAI))"
    assert "SAM (prompts from ground truth) (SAM stage: MedSAM (ViT-B))" in labels
    assert "CLISC (SAM stage: SAM ViT-B; CLIP: BiomedCLIP (PubMedBERT + ViT-B/16))" in labels
    default = table.iloc[0]
    assert default["paper DSC"] == "85.60 ± 9.26" and default["p vs CLISC"] == ""
    assert all(row["paper DSC"] == "" for _, row in table.iloc[2:].iterrows())  # other models: no paper value
    assert (tmp_path / "runs" / "foundations").is_dir()
