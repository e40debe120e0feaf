"""Experiments as data: a YAML spec (``experiments/*.yaml``) expanded into method x sweep value x seed
runs, each run through the cached pipeline and logged at once as a child of one MLflow parent run.

Spec keys: ``name``, ``description``, ``methods`` (registry names), ``planned`` (methods that are
not implemented yet; reported as "not run"), ``seeds``, optional ``sweep`` (one dotted setting ->
list of values), ``overrides`` (for every run), ``profile`` / ``protocol`` defaults, optional ``folds``
(K-fold cross-validation: every run once per fold, each fold an MLflow child tagged ``fold``/``folds``).
Optional ``groups``: a list of ``{methods, sweep}``, each its own methods x one swept setting (e.g.
``experiments/foundations.yaml``: CLISC and SAM for each ``sam.model``, CLISC for each CLIP); the
spec's ``methods`` then lists every method the groups run.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clisc.errors import CliscError
from clisc.pipeline.launch import LaunchOptions, launch as launch_jobs, order_jobs
from clisc.pipeline.methods import all_methods
from clisc.pipeline.settings_file import SettingsFile

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


@dataclass(frozen=True)
class RunSpec:
    method: str
    seed: int
    overrides: Mapping[str, Any] = field(default_factory=dict)  # the spec's, for every run
    sweep: Mapping[str, Any] = field(default_factory=dict)  # this run's point of the sweep
    fold: int | None = None  # 1..K with cross-validation

    @property
    def label(self) -> str:
        swept = "".join(f"_{k.split('.')[-1]}{v}" for k, v in self.sweep.items())
        return f"{self.method}{swept}_seed{self.seed}" + (f"_fold{self.fold}" if self.fold else "")


def find_spec(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise CliscError(f"{path}: experiment spec not found")
        return path
    path = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")))
        raise CliscError(f"unknown experiment {name_or_path!r}; known: {known}")
    return path


def read_spec(name_or_path: str | Path, required: tuple[str, ...], needs: str) -> tuple[dict[str, Any], Path]:
    """A YAML spec (experiment or search) holding its ``required`` keys, else a one-line error ending in
    ``needs``; ``name`` defaults to the file stem."""
    path = find_spec(name_or_path)
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CliscError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(spec, dict) or not set(required) <= set(spec):
        raise CliscError(f"{path}: {needs}")
    spec.setdefault("name", path.stem)
    return spec, path


def load_spec(name_or_path: str | Path) -> dict[str, Any]:
    spec, path = read_spec(name_or_path, ("methods",), "an experiment spec needs a 'methods' list")
    methods = all_methods()
    unknown = [m for m in spec["methods"] if m not in methods]
    if unknown:
        raise CliscError(f"{path}: unknown method(s) {unknown}; known: {', '.join(sorted(methods))}")
    if len(spec.get("sweep") or {}) > 1:
        raise CliscError(f"{path}: sweep one setting at a time")
    for group in spec.get("groups") or []:
        if not isinstance(group, dict) or not set(group) <= {"methods", "sweep"} or len(group.get("sweep") or {}) > 1:
            raise CliscError(f"{path}: each group is {{methods: [...], sweep: {{one.setting: [values]}}}}")
        outside = [m for m in group.get("methods", []) if m not in spec["methods"]]
        if outside:
            raise CliscError(f"{path}: group method(s) {outside} are not in the spec's methods")
    folds = spec.get("folds")
    if folds is not None and (not isinstance(folds, int) or isinstance(folds, bool) or folds < 2):
        raise CliscError(f"{path}: folds must be a whole number of at least 2, not {folds!r}")
    spec.setdefault("seeds", [0])
    return spec


def expand(spec: Mapping[str, Any]) -> Iterator[RunSpec]:
    """Every (method, sweep value, seed[, fold]) of a spec, methods in the spec's order; with ``groups``,
    each group's in turn."""
    groups = spec.get("groups") or [{"methods": spec["methods"], "sweep": spec.get("sweep")}]
    folds = list(range(1, int(spec["folds"]) + 1)) if spec.get("folds") else [None]
    for group in groups:
        sweep = group.get("sweep") or {}
        points = [{k: v} for k, values in sweep.items() for v in values] or [{}]
        methods = group.get("methods") or spec["methods"]
        for method, point, seed, fold in itertools.product(methods, points, spec["seeds"], folds):
            yield RunSpec(method, int(seed), {**(spec.get("overrides") or {}), **point}, point, fold)


def run_experiment(
    name_or_path: str | Path,
    data: str | Path,
    *,
    profile: str | None = None,
    protocol: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    cache_root: str | Path = "cache",
    runs_root: str | Path = "runs",
    tracking_uri: str | None = None,
    device: str = "cpu",
    echo: Callable[[str], None] = print,
    split_file: str | Path | None = None,
    folds: int | None = None,
    skip_cases: Sequence[str] = (),
    settings_file: SettingsFile | None = None,
    save_predictions: bool = False,
    launch: LaunchOptions | None = None,
) -> list:
    """Run every run of the spec and log each to MLflow as soon as it finishes; returns the results.

    ``folds`` (default: the spec's ``folds``) runs each method x sweep value x seed once per fold on
    the fold split files; ``split_file``, ``skip_cases`` and ``settings_file`` go to every run (see
    :func:`clisc.pipeline.run.run_method`). A failure in one run is logged and re-raised after the
    parent run is closed as failed; the runs finished before it stay in MLflow and in the stage
    cache, so a re-run continues from there.

    ``launch`` (default: the spec's ``launch:`` key, else inline) spreads the runs over worker
    processes or Slurm jobs (:mod:`clisc.pipeline.launch`); the parent run still collects every child,
    and a failed run is reported with its log while the others finish.
    """
    from clisc.pipeline.folds import fold_split_files, fold_tags, pool_folds
    from clisc.pipeline.run import run_method, summary_line
    from clisc.tracking.store import ExperimentRecorder

    spec = load_spec(name_or_path)
    profile = profile or spec.get("profile", "paper")
    protocol = protocol or spec.get("protocol", "paper")
    folds = folds or spec.get("folds")
    if folds and split_file:
        raise CliscError("--folds and --split exclude each other (the folds are split files of their own)")
    all_overrides = {**(spec.get("overrides") or {}), **(overrides or {})}
    fold_files = fold_split_files(data, folds, protocol, profile, all_overrides, skip_cases) if folds else []
    resolved = {**spec, "profile": profile, "protocol": protocol, "data": str(data), "overrides": all_overrides,
                "folds": folds, "split_file": str(split_file) if split_file else None,
                "settings_file": str(settings_file.path) if settings_file else None,
                "skipped_cases": sorted(skip_cases)}
    launch = launch or LaunchOptions.from_spec(spec)
    runs = order_jobs(list(expand(resolved))) if launch.launcher != "inline" else list(expand(resolved))
    jobs = [(run.label, run_method, dict(
        name=run.method, data=data, protocol=protocol, profile=profile, seed=run.seed,
        overrides={**run.overrides, **(overrides or {})}, cache_root=cache_root,
        out_dir=Path(runs_root) / spec["name"] / run.label, device=device,
        **({"echo": echo} if launch.launcher == "inline" else {"progress": False}),
        split_file=fold_files[run.fold - 1] if run.fold else split_file, skip_cases=skip_cases,
        settings_file=settings_file, extra_tags=fold_tags(run.fold, folds) if run.fold else None,
        save_predictions=save_predictions)) for run in runs]
    order = {label: i for i, (label, _, _) in enumerate(jobs)}
    finished: dict[str, Any] = {}
    failed: list[str] = []
    tags = {"profile": profile, "protocol": protocol, **({"folds": str(folds)} if folds else {})}
    with ExperimentRecorder(spec["name"], resolved, tracking_uri=tracking_uri, tags=tags) as recorder:
        if launch.launcher == "inline":
            echo(f"[clisc] === {spec['name']}: {len(jobs)} run(s) ===")
        for outcome in launch_jobs(jobs, launch, echo):
            if outcome.error:
                failed.append(f"{outcome.label} ({outcome.error}" + (f"; log {outcome.log})" if outcome.log else ")"))
                echo(f"[clisc] FAILED {outcome.label}: {outcome.error}" + (f" (log: {outcome.log})" if outcome.log else ""))
                continue
            recorder.log_result(outcome.result)
            echo(f"[clisc] {outcome.label} done: {summary_line(outcome.result)}")
            finished[outcome.label] = outcome.result
        if failed:
            raise CliscError(f"{spec['name']}: {len(failed)} of {len(jobs)} run(s) failed: {'; '.join(failed)}")
    if recorder.run_link():
        echo(f"[clisc] {spec['name']} in MLflow: {recorder.run_link()}")
    results = [finished[label] for label in sorted(finished, key=order.__getitem__)]
    if folds:
        for pooled in pool_folds(results):
            echo(f"[clisc] {folds} folds pooled: {summary_line(pooled)}")
    return results
