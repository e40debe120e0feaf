"""experiments/cpu_study.yaml (issue 7): 3 methods x 4 folds with oracle labels, and the CLI takes the
spec's profile and folds when none is given (the heavy run itself is `make cpu-study`, not a test)."""
from __future__ import annotations

from pathlib import Path

from clisc.cli import build_parser
from clisc.pipeline import run as run_module
from clisc.pipeline.experiment import expand, load_spec, run_experiment
from clisc.pipeline.settings import resolve_settings


def test_cpu_study_expands_to_three_methods_by_four_folds() -> None:
    spec = load_spec("cpu_study")
    runs = list(expand(spec))
    assert [(r.method, r.fold) for r in runs] == [
        (m, f) for m in ("fully_supervised", "raw_cam", "cam_amda") for f in (1, 2, 3, 4)]
    assert all(r.overrides == {"slices.labels": "ground_truth"} for r in runs)
    assert spec["profile"] == "cpu" and spec["description"]
    settings = resolve_settings(spec.get("protocol", "paper"), spec["profile"], spec["overrides"])
    assert settings.foundation.size == "tiny" and not settings.label_free


def test_cli_leaves_profile_and_folds_to_the_spec(synthetic_dataset: Path, tmp_path: Path, tracking_uri: str,
                                                  fakes, monkeypatch) -> None:
    args = build_parser().parse_args(["experiment", "cpu_study", "--data", str(synthetic_dataset)])
    assert args.profile is None and args.folds is None and args.protocol is None
    seen = []

    def fake_run(name, data, **kwargs):
        seen.append((name, kwargs["profile"], Path(kwargs["split_file"]).name, kwargs["overrides"]))
        result = fakes.fake_result(name, [50.0], tags=kwargs["extra_tags"])
        result.per_case["case_id"] = f"case{kwargs['extra_tags']['fold']}"
        return result

    monkeypatch.setenv("CLISC_SPLITS_DIR", str(tmp_path / "splits"))
    monkeypatch.setattr(run_module, "run_method", fake_run)
    monkeypatch.setattr(run_module, "summary_line", lambda result: result.method)
    run_experiment("cpu_study", synthetic_dataset, profile=args.profile, folds=args.folds, tracking_uri=tracking_uri,
                   runs_root=tmp_path / "runs", echo=lambda _: None)
    assert len(seen) == 12 and {s[1] for s in seen} == {"cpu"}
    assert sorted({s[2].split("_fold")[1] for s in seen}) == [f"{i}of4.csv" for i in range(1, 5)]
    assert all(s[3] == {"slices.labels": "ground_truth"} for s in seen)
