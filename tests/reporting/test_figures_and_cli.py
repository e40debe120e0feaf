"""Figures from fake runs, and `clisc report` end to end: it reads only MLflow and is reproducible."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from clisc.errors import CliscError
from clisc.reporting import cli as report_cli
from clisc.reporting.figures import qualitative_figure, sweep_figure
from clisc.tracking import ExperimentRecorder

MAGIC = {".png": b"\x89PNG", ".pdf": b"%PDF"}


def assert_figure_files(paths: list[Path]) -> None:
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    for path in paths:
        assert path.stat().st_size > 1000 and path.read_bytes().startswith(MAGIC[path.suffix])


def qualitative_npz(path: Path, per_case, shift: int) -> Path:
    """One 32x32 slice per case: a bright disc (the ground truth) and a shifted square prediction."""
    arrays = {}
    yy, xx = np.mgrid[:32, :32]
    for case_id in per_case["case_id"]:
        gt = ((yy - 16) ** 2 + (xx - 16) ** 2 < 64).astype(np.uint8)
        pred = np.zeros((32, 32), np.uint8)
        pred[10 + shift:22 + shift, 10:22] = 1
        arrays[f"{case_id}__image"] = (gt * 2.0 + 0.1 * yy).astype(np.float32)
        arrays[f"{case_id}__gt"] = gt
        arrays[f"{case_id}__pred"] = pred
    np.savez(path, **arrays)
    return path


def sweep_results(fakes, param_key: str, values: tuple[int, ...] = (0, 10, 20, 30)) -> list:
    return [fakes.fake_result("clisc", [60 + v + s, 70 + v, 65 + v - s], seed=s, params={param_key: v})
            for v in values for s in (0, 1)]


@pytest.mark.parametrize("param, key", [("alpha", "amda.alpha"), ("beta", "s3f.beta")])
def test_sweep_figure(fakes, tmp_path: Path, param: str, key: str) -> None:
    assert_figure_files(sweep_figure(sweep_results(fakes, key), param, tmp_path / f"sweep_{param}"))


def test_sweep_figure_without_param_fails(fakes, tmp_path: Path) -> None:
    with pytest.raises(CliscError, match="s3f.beta"):
        sweep_figure([fakes.fake_result("clisc", [50])], "beta", tmp_path / "x")


def test_qualitative_figure(fakes, tmp_path: Path) -> None:
    results = []
    for shift, method in enumerate(("fully_supervised", "clisc", "raw_cam")):
        result = fakes.fake_result(method, [50, 60, 70, 80, 90, 55])
        result.artifacts = {"qualitative.npz": qualitative_npz(tmp_path / f"{method}.npz", result.per_case, shift)}
        results.append(result)
    assert_figure_files(qualitative_figure(results, tmp_path / "qualitative"))


def report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    report_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def logged_store(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory, fakes) -> str:
    """table1 (with qualitative.npz), table2 and sweep_alpha logged through ExperimentRecorder."""
    work = tmp_path_factory.mktemp("artifacts")
    with ExperimentRecorder("table1", {"experiment": "table1"}, tracking_uri=tracking_uri) as rec:
        for shift, method in enumerate(("clisc", "fully_supervised", "sam_gt_prompts")):
            result = fakes.fake_result(method, [80 - 5 * shift + i for i in range(10)],
                                       tags={"weights": "sam_vit_b=random"})
            npz = qualitative_npz(work / f"{method}.npz", result.per_case, shift)
            result.artifacts = {"qualitative": npz}
            rec.log_result(result)
    with ExperimentRecorder("table2", {"experiment": "table2"}, tracking_uri=tracking_uri) as rec:
        for method in ("raw_cam", "clisc"):
            rec.log_result(fakes.fake_result(method, [50 + (method == "clisc") * 20 + i for i in range(10)]))
    with ExperimentRecorder("sweep_alpha", {"experiment": "sweep_alpha"}, tracking_uri=tracking_uri) as rec:
        for result in sweep_results(fakes, "amda.alpha", values=(0, 20)):
            rec.log_result(result)
    return tracking_uri


def test_report_reads_mlflow_and_regenerates_identically(logged_store: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "reports"
    assert report(["report", "--out", str(out), "--tracking-uri", logged_store]) == 0
    printed = capsys.readouterr().out
    assert "missing: experiment 'sweep_beta' has no runs" in printed
    names = sorted(p.name for p in out.iterdir())
    expected = {f"{s}{e}" for s in ("table1", "table1_size_groups", "table2") for e in (".md", ".csv", ".tex")}
    expected |= {f"{s}{e}" for s in ("qualitative", "sweep_alpha") for e in (".png", ".pdf")}
    assert set(names) == expected
    table1_md = (out / "table1.md").read_text()
    assert "random weights — not comparable to the paper" in table1_md
    assert "| SaLIP |  |" in table1_md  # did not run: the label-free column makes no claim
    assert "not run" in table1_md
    first = {name: (out / name).read_bytes() for name in names}
    for path in out.iterdir():
        path.unlink()
    out.rmdir()
    assert report(["report", "--out", str(out), "--tracking-uri", logged_store]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first


def test_report_with_no_runs_fails(logged_store: str, tmp_path: Path) -> None:
    with pytest.raises(CliscError, match="sweep_beta"):
        report(["report", "--experiments", "sweep_beta", "--out", str(tmp_path), "--tracking-uri", logged_store])


def test_report_warns_when_a_label_free_method_ran_with_ground_truth(fakes, tmp_path_factory, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    uri = fakes.fresh_store(tmp_path_factory)
    official = {"protocol": "official", "label_free": "false", "gt_switches": "gate_cams_with_gt"}
    with ExperimentRecorder("table2", {"experiment": "table2"}, tracking_uri=uri) as rec:
        rec.log_result(fakes.fake_result("clisc", [70, 80, 90], tags=official))
    assert report(["report", "--experiments", "table2", "--out", str(tmp_path), "--tracking-uri", uri]) == 0
    err = capsys.readouterr().err
    assert ("clisc: table2: WARNING: full CLISC is label-free in the paper, but these runs used ground truth "
            "(gate_cams_with_gt): label-free = no.") in err
    assert "| full CLISC | no |" in (tmp_path / "table2.md").read_text()
