"""benchmarks/fanout_projection.py: the fan-out simulation over the stage chains of the four experiments."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
UNITS = ("preprocess", "volume_read", "clip", "cls_step", "cls_predict", "cam", "sam_encode", "sam_decode",
         "unet_step", "unet_window", "score")


@pytest.fixture(scope="module")
def fp():
    sys.path.insert(0, str(BENCH))
    import fanout_projection

    return fanout_projection


def test_one_device_does_all_the_work_once_and_more_devices_never_go_under_the_critical_path(fp):
    costs = fp.stage_costs({u: 1.0 + i for i, u in enumerate(UNITS)})
    jobs = fp.jobs()
    assert all(s in costs for j in jobs for s in j.chain)
    work = sum(costs[s] for s in {s for j in jobs for s in j.chain})
    path, job = fp.critical_path(jobs, costs)
    walls = [fp.simulate(jobs, costs, n)[0] for n in (1, 4, 8)]
    assert walls[0] == pytest.approx(work) and fp.simulate(jobs, costs, 1)[1] == pytest.approx(work)
    assert walls[0] >= walls[1] >= walls[2] >= path - 1e-6
    assert "unet_round1[20]" in job.chain and "sam_train[20]" in job.chain  # the shared CLISC prefix


def test_report_is_written_between_markers(fp, tmp_path):
    units = tmp_path / "u.json"
    units.write_text(json.dumps({"device": "cpu", "device_name": "x", "load": 1.0,
                                 "units": {u: {"seconds": 0.5} for u in UNITS}}))
    doc = tmp_path / "DOC.md"
    doc.write_text("# doc\n")
    fp.write_section(doc, fp.report(units))
    fp.write_section(doc, fp.report(units))  # replaced, not appended
    text = doc.read_text()
    assert text.count(fp.BEGIN) == 1 and "| 8 |" in text and "Critical path" in text
