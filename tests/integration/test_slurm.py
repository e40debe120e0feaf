"""A throwaway single-node Slurm (slurmctld + slurmd on localhost, no cgroups, munge) runs a tiny
experiment through submitit. Skips with the exact reason when Slurm cannot run here."""
from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SLURM_CONF = """ClusterName=clisc-test
SlurmctldHost={host}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
NodeName={host} CPUs=2 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _skip_if(condition: bool, reason: str) -> None:
    if condition:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    """SLURM_CONF of a running localhost cluster; the daemons are stopped afterwards."""
    missing = [b for b in ("slurmctld", "slurmd", "sinfo", "sbatch", "munged") if not shutil.which(b)]
    _skip_if(bool(missing), f"Slurm not installed here (missing {', '.join(missing)}; apt-get install slurm-wlm munge)")
    pytest.importorskip("submitit")
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=socket.gethostname(), user=getpass.getuser(), root=root))
    env = {"SLURM_CONF": str(conf), "PATH": "/usr/sbin:/usr/bin:/bin"}
    procs = []
    munge = subprocess.run(["munged", "--force"], capture_output=True, text=True)
    _skip_if(munge.returncode != 0 and "already running" not in munge.stderr,
             f"munged cannot start here: {munge.stderr.strip().splitlines()[-1] if munge.stderr.strip() else munge.returncode}")
    for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D"]):
        procs.append(subprocess.Popen(daemon, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        for _ in range(30):
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                out = dead[0].stdout.read().strip().splitlines()
                pytest.skip(f"{dead[0].args[0]} cannot run in this sandbox: {out[-1] if out else dead[0].returncode}")
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            if state.stdout.strip() in ("idle", "mixed"):
                break
            time.sleep(1)
        else:
            pytest.skip(f"slurm node never became idle: {state.stdout.strip() or state.stderr.strip()}")
        yield conf
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def test_a_tiny_experiment_runs_through_submitit_on_slurm(slurm, synthetic_dataset, tmp_path, tracking_uri, monkeypatch):
    from clisc.pipeline.experiment import run_experiment
    from clisc.pipeline.launch import LaunchOptions
    from clisc.tracking.readback import load_experiment_results

    monkeypatch.setenv("SLURM_CONF", str(slurm))
    spec = tmp_path / "slurm_mini.yaml"
    spec.write_text("name: slurm_mini\nmethods: [raw_cam, cam_amda]\nseeds: [0]\n")
    results = run_experiment(spec, synthetic_dataset, profile="tiny", cache_root=tmp_path / "cache",
                             runs_root=tmp_path / "runs", tracking_uri=tracking_uri, echo=print,
                             launch=LaunchOptions(launcher="slurm", cpus_per_job=1, time_min=10,
                                                  log_dir=str(tmp_path / "jobs")))
    assert sorted(r.method for r in results) == ["cam_amda", "raw_cam"]
    assert sorted(r.method for r in load_experiment_results("slurm_mini", tracking_uri)) == ["cam_amda", "raw_cam"]
    assert list(Path(tmp_path / "jobs").glob("*_log.out"))
