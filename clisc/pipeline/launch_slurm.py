"""The ``slurm`` launcher: one submitit job per child run (AutoExecutor), the driver waiting and
yielding each job's outcome as it finishes; submitit keeps each job's stdout/stderr log and retries
a job that was preempted or timed out (``retries``)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from clisc.errors import CliscError
from clisc.pipeline.launch import JobOutcome, LaunchOptions


def launch_slurm(
    jobs: Sequence[tuple[str, Callable[..., Any], Mapping[str, Any]]],
    options: LaunchOptions,
    echo: Callable[[str], None] = print,
    poll_s: float = 5.0,
) -> Iterator[JobOutcome]:
    """Submit every ``(label, fn, kwargs)`` job as one element of a Slurm job array and yield outcomes."""
    try:
        import submitit
    except ImportError:
        raise CliscError("--launcher slurm needs submitit: pip install -e .[ops]") from None
    executor = submitit.AutoExecutor(folder=options.log_dir, slurm_max_num_timeout=options.retries)
    params: dict[str, Any] = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_job,
                              "slurm_array_parallelism": options.array_parallelism, **dict(options.extra)}
    if options.gpus_per_job:
        params["gpus_per_node"] = options.gpus_per_job
    if options.partition:
        params["slurm_partition"] = options.partition
    executor.update_parameters(**params)
    with executor.batch():
        submitted = [(label, executor.submit(fn, **kwargs)) for label, fn, kwargs in jobs]
    echo(f"[clisc] launcher {executor.cluster}: {len(submitted)} job(s), logs under {options.log_dir}")
    pending = dict(submitted)
    while pending:
        for label, job in list(pending.items()):
            if not job.done():
                continue
            del pending[label]
            try:
                yield JobOutcome(label, job.result(), log=str(job.paths.stdout))
            except Exception as err:  # noqa: BLE001 -- reported with its log, the other jobs go on
                first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                yield JobOutcome(label, error=first, log=str(job.paths.stderr))
        if pending:
            time.sleep(poll_s)
