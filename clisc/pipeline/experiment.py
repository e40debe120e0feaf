"""Experiments as data: a YAML spec (``experiments/*.yaml``) expanded into method x sweep value x seed
runs, each run through the cached pipeline and logged at once as a child of one MLflow parent run.

Spec keys: ``name``, ``description``, ``methods`` (registry names), ``planned`` (methods that are
not implemented yet; reported as "not run"), ``seeds``, optional ``sweep`` (one dotted setting ->
list of values), ``overrides`` (for every run), ``profile`` / ``protocol`` defaults.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clisc.errors import CliscError
from clisc.pipeline.methods import all_methods

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"


@dataclass(frozen=True)
class RunSpec:
    method: str
    seed: int
    overrides: Mapping[str, Any] = field(default_factory=dict)  # the spec's, for every run
    sweep: Mapping[str, Any] = field(default_factory=dict)  # this run's point of the sweep

    @property
    def label(self) -> str:
        swept = "".join(f"_{k.split('.')[-1]}{v}" for k, v in self.sweep.items())
        return f"{self.method}{swept}_seed{self.seed}"


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
    spec.setdefault("seeds", [0])
    return spec


def expand(spec: Mapping[str, Any]) -> Iterator[RunSpec]:
    """Every (method, sweep value, seed) of a spec, methods in the spec's order."""
    sweep = spec.get("sweep") or {}
    points = [{k: v} for k, values in sweep.items() for v in values] or [{}]
    for method, point, seed in itertools.product(spec["methods"], points, spec["seeds"]):
        yield RunSpec(method, int(seed), {**(spec.get("overrides") or {}), **point}, point)


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
    save_predictions: bool = False,
) -> list:
    """Run every run of the spec and log each to MLflow as soon as it finishes; returns the results.

    A failure in one run is logged and re-raised after the parent run is closed as failed; the runs
    finished before it stay in MLflow and in the stage cache, so a re-run continues from there.
    """
    from clisc.pipeline.run import run_method, summary_line
    from clisc.tracking.store import ExperimentRecorder

    spec = load_spec(name_or_path)
    profile = profile or spec.get("profile", "paper")
    protocol = protocol or spec.get("protocol", "paper")
    resolved = {**spec, "profile": profile, "protocol": protocol, "data": str(data),
                "overrides": {**(spec.get("overrides") or {}), **(overrides or {})}}
    results = []
    tags = {"profile": profile, "protocol": protocol}
    with ExperimentRecorder(spec["name"], resolved, tracking_uri=tracking_uri, tags=tags) as recorder:
        for run in expand(resolved):
            echo(f"[clisc] === {spec['name']}: {run.label} ===")
            result = run_method(
                run.method, data, protocol=protocol, profile=profile, seed=run.seed,
                overrides={**run.overrides, **(overrides or {})}, cache_root=cache_root,
                out_dir=Path(runs_root) / spec["name"] / run.label, device=device, echo=echo,
                save_predictions=save_predictions,
            )
            recorder.log_result(result)
            echo(f"[clisc] {summary_line(result)}")
            results.append(result)
    return results
