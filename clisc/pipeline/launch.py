"""Fan-out of an experiment's child runs: ``inline`` (one after another in this process), ``local``
(K worker processes, each pinned to one device) or ``slurm`` (one submitit job per run).

The driver keeps the MLflow parent run and logs each child as its job finishes; the jobs share the
content-keyed stage cache, whose per-key lock (:meth:`clisc.cache.StageCache.computing`) makes a job
that needs an upstream stage another job is computing wait and reuse it. A failed job is reported
with its log and the others finish; re-submitting resumes from the cache.
"""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clisc.errors import CliscError

LAUNCHERS = ("inline", "local", "slurm")
# methods whose chain contains most of the others' (labels -> classifier -> CAM -> SAM -> U-Net): started first
_LONG_PREFIX_FIRST = ("clisc", "no_s3f", "no_self_training", "sam_box_points", "sam_box", "sam_points")


@dataclass(frozen=True)
class LaunchOptions:
    """How the runs are spread: ``workers`` processes (local), ``gpus`` device ids, one per worker
    (local: ``CUDA_VISIBLE_DEVICES``), and the Slurm job shape (``partition``, ``time_min``,
    ``gpus_per_job``, ``cpus_per_job``, ``array_parallelism``, ``retries``, ``log_dir``)."""

    launcher: str = "inline"
    workers: int = 1
    gpus: tuple[str, ...] = ()
    partition: str | None = None
    time_min: int = 240
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    array_parallelism: int = 16
    retries: int = 1
    log_dir: str = "runs/_jobs"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], **flags: Any) -> LaunchOptions:
        """Spec key ``launch: {launcher: local, workers: 2, ...}`` under the command-line flags (not None)."""
        given = dict(spec.get("launch") or {})
        unknown = set(given) - set(cls.__dataclass_fields__)
        if unknown:
            raise CliscError(f"unknown launch key(s) {sorted(unknown)}; known: {', '.join(cls.__dataclass_fields__)}")
        given.update({k: v for k, v in flags.items() if v is not None})
        if "gpus" in given:
            gpus = given["gpus"]
            given["gpus"] = tuple(str(g) for g in (gpus.split(",") if isinstance(gpus, str) else gpus) if str(g))
        options = cls(**given)
        if options.launcher not in LAUNCHERS:
            raise CliscError(f"unknown launcher {options.launcher!r}; known: {', '.join(LAUNCHERS)}")
        return options

    @property
    def n_local(self) -> int:
        return len(self.gpus) or max(1, int(self.workers))


def order_jobs(jobs: Sequence[Any]) -> list[Any]:
    """Jobs whose stage chain is the longest shared prefix start first (then the spec's order), so
    the jobs after them find CLIP labels, classifier, CAMs, SAM masks and the U-Net cached or locked."""
    def rank(job: Any) -> int:
        return _LONG_PREFIX_FIRST.index(job.method) if job.method in _LONG_PREFIX_FIRST else len(_LONG_PREFIX_FIRST)
    return sorted(jobs, key=rank)


def _pin_device(queue: Any) -> None:
    """Worker initializer: take one device id from the queue and see only it."""
    device = queue.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)


def _call(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    return fn(**kwargs)


@dataclass
class JobOutcome:
    label: str
    result: Any = None
    error: str | None = None
    log: str | None = None


def launch(
    jobs: Sequence[tuple[str, Callable[..., Any], Mapping[str, Any]]],
    options: LaunchOptions,
    echo: Callable[[str], None] = print,
) -> Iterator[JobOutcome]:
    """Run every ``(label, fn, kwargs)`` job and yield its outcome as it finishes (not in order).

    ``fn`` must be importable at module level (workers are spawned). A job's exception becomes an
    outcome with ``error`` (and ``log`` under slurm) while the other jobs go on.
    """
    if options.launcher == "inline":
        for label, fn, kwargs in jobs:
            try:
                yield JobOutcome(label, fn(**kwargs))
            except Exception as err:  # noqa: BLE001 -- reported, the other jobs still run
                yield JobOutcome(label, error=f"{type(err).__name__}: {err}")
        return
    if options.launcher == "slurm":
        from clisc.pipeline.launch_slurm import launch_slurm
        yield from launch_slurm(jobs, options, echo)
        return
    context = multiprocessing.get_context("spawn")
    devices = context.Queue()
    for i in range(options.n_local):
        devices.put(options.gpus[i] if options.gpus else None)
    echo(f"[clisc] launcher local: {options.n_local} worker(s)"
         + (f" on CUDA devices {','.join(options.gpus)}" if options.gpus else ""))
    with ProcessPoolExecutor(options.n_local, mp_context=context, initializer=_pin_device,
                             initargs=(devices,)) as pool:
        pending: dict[Future, str] = {pool.submit(_call, fn, kwargs): label for label, fn, kwargs in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                label = pending.pop(future)
                error = future.exception()
                yield (JobOutcome(label, error=f"{type(error).__name__}: {error}") if error
                       else JobOutcome(label, future.result()))


def job_log_dir(options: LaunchOptions, experiment: str) -> Path:
    return Path(options.log_dir) / experiment
