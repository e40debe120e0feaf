"""The run context every stage function receives: data, split, settings, seed, stage cache, timings.

Stage functions (``clisc.pipeline.steps``) call :meth:`RunContext.stage` with their settings and the
keys of their inputs; it returns the cached entry when one exists and otherwise computes it into a
private directory that is published atomically. Each stage's status and time is printed and kept in
``stage_times`` so that runs can log them.
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clisc import __version__
from clisc.cache import StageCache, stable_hash, stage_key
from clisc.compute import check_compute
from clisc.data.discovery import CaseFiles, dataset_fingerprint, discover_cases
from clisc.data.identity import dataset_content_key
from clisc.data.lazy import LazyVolumes
from clisc.data.preprocessing import CACHE_FORMAT as VOLUME_FORMAT
from clisc.data.preprocessing import PreprocessedStore
from clisc.data.split import SPLITS, load_or_create_split
from clisc.pipeline.settings import Settings
from clisc.stages.slice_input import SLICE_ORIENTATION

log = logging.getLogger(__name__)


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez_compressed(path, **arrays)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@dataclass
class RunContext:
    data_root: Path
    settings: Settings
    seed: int = 0
    cache_root: Path = Path("cache")
    device: str = "cpu"
    progress: bool = True
    echo: Callable[[str], None] = print
    split_path: Path | None = None  # a given split file (must exist); None: the default one, made if missing
    skip_cases: tuple[str, ...] = ()  # case ids left out of the dataset and its split (--skip-bad)
    stage_times: dict[str, float] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)  # model -> sha256 or "random"
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # stage -> per-epoch rows
    _memo: dict[tuple[str, str], Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data_root = Path(self.data_root)
        self.cache_root = Path(self.cache_root)
        check_compute(self.settings, self.device)
        self.cache = StageCache(self.cache_root)
        self.cache.clean_partial()
        self.cases: dict[str, CaseFiles] = {c.case_id: c for c in discover_cases(self.data_root, self.settings.preprocess.modality)
                                            if c.case_id not in self.skip_cases}
        self.fingerprint = dataset_fingerprint(list(self.cases.values()))
        self.content_key = dataset_content_key(self.cases.values(), self.cache_root)  # roots every stage key
        self.split = self._load_split()

    # ----------------------------------------------------------------- data
    def _load_split(self) -> dict[str, list[str]]:
        """The given split file, or the default one in the split folder (``splits/``, made when missing)."""
        given = self.split_path is not None
        split, self.split_path = load_or_create_split(self.data_root, self.settings.split_seed, self.split_path,
                                                      exclude=self.skip_cases, must_exist=given)
        return split

    def volumes(self, split: str) -> LazyVolumes:
        """Preprocessed volumes of one split (``train``, ``valid`` or ``test``), in split order, read
        from the preprocessed cache on access (memory does not grow with the number of cases)."""
        assert split in SPLITS, split
        memo = ("volumes", split)
        if memo not in self._memo:
            start = time.perf_counter()
            cases = [self.cases[c] for c in self.split[split]]
            store = PreprocessedStore(self.cache_root, self.settings.preprocess)
            self._memo[memo] = LazyVolumes(cases, store, progress=self.progress)
            self._note(f"volumes_{split}", "ready", time.perf_counter() - start)
        return self._memo[memo]

    @property
    def volumes_key(self) -> str:
        # the volume format is hashed too: every stage downstream re-runs when what stages see changes;
        # the input files' contents too (``clisc.data.identity``): an in-place edit of one file at the
        # same size, which the fingerprint (ids + sizes) does not see, re-runs every stage
        return stage_key("volumes", {"preprocess": self.settings.preprocess, "format": VOLUME_FORMAT},
                         [self.fingerprint, stable_hash(self.split), self.content_key])

    # ---------------------------------------------------------------- cache
    def stage(
        self,
        name: str,
        settings: Any,
        inputs: list[str],
        compute: Callable[[Path], None],
        load: Callable[[Path], Any],
    ) -> tuple[str, Any]:
        """``(key, value)`` of a stage: ``compute(dir)`` writes the entry once, ``load(dir)`` reads it."""
        key = self.key(name, settings, inputs)
        memo = (name, key)
        if memo in self._memo:
            return key, self._memo[memo]
        if self.cache.has(name, key):
            start = time.perf_counter()
            value = load(self.cache.path(name, key))
            self._note(name, "cached", time.perf_counter() - start)
        else:
            start = time.perf_counter()
            with self.cache.computing(name, key) as mine:  # another job computing it: wait, then reuse
                if mine:
                    self.echo(f"[clisc] {name:<22} running ...")
                    with self.cache.writing(name, key, {"stage": name, "settings": settings,
                                                        "inputs": inputs}) as tmp:
                        compute(tmp)
                    shutil.rmtree(self.cache_root / "_work" / name / key, ignore_errors=True)  # drop scratch
            elapsed = time.perf_counter() - start
            value = load(self.cache.path(name, key))
            self._note(name, "computed" if mine else "cached", elapsed)
        self._memo[memo] = value
        return key, value

    @staticmethod
    def key(name: str, settings: Any, inputs: list[str]) -> str:
        """Cache key of a stage; the package version is part of it, so a new release never reads
        entries written by code that may have computed them differently; so is what a 2D model sees
        of a slice (``clisc.stages.slice_input.SLICE_ORIENTATION``)."""
        return stage_key(name, {"settings": settings, "clisc": __version__,
                                "slice_orientation": SLICE_ORIENTATION}, inputs)

    def scratch(self, name: str, key: str) -> Path:
        """A persistent work directory for a running stage (checkpoints, per-case parts) that
        survives a crash so a re-run resumes; the finished entry itself is published by ``stage``."""
        path = self.cache_root / "_work" / name / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _note(self, name: str, status: str, seconds: float) -> None:
        self.stage_times[name] = self.stage_times.get(name, 0.0) + (seconds if status == "computed" else 0.0)
        self.echo(f"[clisc] {name:<22} {status:<8} {seconds:8.1f} s")
