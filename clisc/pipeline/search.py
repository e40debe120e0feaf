"""``clisc search``: Optuna over CLISC's thresholds, with the objective's use of labels made explicit.

Two objectives (``experiments/search.yaml``):
- ``validation_dice``: mean Dice of the method on the validation split. It reads validation labels,
  so the search and every run it selects are tagged not label-free.
- ``label_free``: the mean agreement (Dice, percent) between the method's masks on the validation
  images and SAM prompted from them as in S3F (``steps_seg.sam_agreement``); an empty mask scores 0.
  No label is read. It sees every setting the method's output depends on: for CLISC the round-2
  network, so ``s3f.beta`` too (S3F's own similarity, computed before the beta filter, cannot).
A searched setting that the method's output does not read (``s3f.beta`` for a method that stops
before round 2) is refused with a one-line error, whatever the objective.
"""
from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from clisc.errors import CliscError
from clisc.pipeline.result import MethodResult

OBJECTIVES = {"validation_dice": "dsc_mean", "label_free": "sam_agreement"}
# settings read only by the outputs listed (a search of them over another output would be blind)
READ_ONLY_BY = {"s3f.beta": ("unet_round2",), "s3f.round2_targets": ("unet_round2",),
                "s3f.keep_rule": ("unet_round2",)}


def check_space(method: str, space: Mapping[str, Any]) -> None:
    """CliscError when a searched setting cannot change ``method``'s output (``READ_ONLY_BY``)."""
    from clisc.pipeline.methods import get_method

    output = get_method(method).output
    for key, outputs in READ_ONLY_BY.items():
        if key in space and output not in outputs:
            raise CliscError(f"search space: {key} does not affect method {method!r} (its output {output!r} "
                             f"comes before it); drop {key} from the space or search a method that reads it")


def sam_agreement_result(method: str, data: Path, seed: int, settings_kwargs: Mapping[str, Any]) -> MethodResult:
    """Per-validation-case agreement of the method's masks with SAM (column ``sam_agreement``,
    percent): label-free (the validation images are read, never their labels)."""
    from clisc.pipeline.context import RunContext
    from clisc.pipeline.methods import get_method
    from clisc.pipeline.run import ground_truth_tags, method_settings, resolve_output, split_table
    from clisc.pipeline.steps_seg import sam_agreement

    spec = get_method(method)
    tuned = settings_kwargs.get("settings_file")
    settings = method_settings(spec, settings_kwargs["protocol"], settings_kwargs["profile"],
                               settings_kwargs["overrides"], tuned)
    split_file = settings_kwargs.get("split_file")
    ctx = RunContext(data, settings, seed, Path(settings_kwargs["cache_root"]), settings_kwargs["device"],
                     progress=False, echo=lambda _: None, split_path=Path(split_file) if split_file else None,
                     skip_cases=tuple(settings_kwargs.get("skip_cases", ())))
    _, agreement = sam_agreement(ctx, resolve_output(spec.output)(ctx, "valid"), "valid")
    per_case = pd.DataFrame({"case_id": list(agreement), "sam_agreement": [100.0 * v for v in agreement.values()]})
    gt_used = ground_truth_tags(spec, settings, tuned)
    tags = {"method": method, "protocol": settings.protocol, "profile": settings.profile,
            "gt_switches": ",".join(gt_used) or "none", "label_free": str(spec.label_free and not gt_used).lower(),
            "scored_split": "valid (images only, no labels)", "dataset": ctx.fingerprint,
            "split_file": ctx.split_path.name, **(tuned.tags() if tuned is not None else {})}
    return MethodResult(method, seed, per_case, settings.flat(), tags, dict(ctx.stage_times),
                        histories=dict(ctx.histories), split=split_table(ctx), data_root=str(data))


def pipeline_objective(params: dict[str, Any], *, method: str, data: str, seed: int, objective: str,
                       protocol: str, profile: str, overrides: Mapping[str, Any], cache_root: str,
                       device: str, split_file: str | None = None, skip_cases: tuple[str, ...] = (),
                       settings_file: Any = None) -> MethodResult:
    """One trial: the method with the trial's settings; module-level so worker processes can pickle it."""
    from clisc.pipeline.run import run_method

    merged = {**overrides, **params}
    if objective == "label_free":
        kwargs = {"protocol": protocol, "profile": profile, "overrides": merged, "cache_root": cache_root,
                  "device": device, "split_file": split_file, "skip_cases": skip_cases,
                  "settings_file": settings_file}
        return sam_agreement_result(method, Path(data), seed, kwargs)
    return run_method(method, data, protocol=protocol, profile=profile, seed=seed, overrides=merged,
                      cache_root=cache_root, device=device, progress=False, split="valid",
                      echo=lambda _: None, split_file=split_file, skip_cases=skip_cases,
                      settings_file=settings_file)


def run_pipeline_search(spec: Mapping[str, Any], args: argparse.Namespace, overrides: Mapping[str, Any],
                        skip_cases: tuple[str, ...] = (), settings_file: Any = None):
    """``settings_file`` (a :class:`~clisc.pipeline.settings_file.SettingsFile`) is the base the trials
    start from; settings tuned on labels make every trial, and the search, not label-free."""
    from clisc.pipeline.methods import get_method
    from clisc.pipeline.run import method_settings
    from clisc.pipeline.settings import ground_truth_uses
    from clisc.search.study import run_search

    objective = args.objective or spec.get("objective", "validation_dice")
    if objective not in OBJECTIVES:
        raise CliscError(f"unknown objective {objective!r}; choose {', '.join(OBJECTIVES)}")
    check_space(spec["method"], spec["space"])
    profile = args.profile or spec.get("profile", "paper")
    protocol = args.protocol or spec.get("protocol", "paper")
    fn = functools.partial(
        pipeline_objective, method=spec["method"], data=str(args.data), seed=int(spec.get("seed", 0)),
        objective=objective, protocol=protocol, profile=profile, overrides=dict(overrides),
        cache_root=str(args.cache), device=args.device,
        split_file=str(args.split) if getattr(args, "split", None) else None, skip_cases=tuple(skip_cases),
        settings_file=settings_file,
    )
    if args.workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        # spawned workers inherit this: K workers x all cores of threads would oversubscribe the CPU,
        # and spinning OpenMP threads then run many times slower (25x seen on 2 cores)
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.workers))
    method = get_method(spec["method"])
    fixed = method_settings(method, protocol, profile, overrides, settings_file)
    label_free = (objective == "label_free" and method.label_free and not ground_truth_uses(fixed, method.gt_switches, method.gt_switches_when)
                  and not set(spec["space"]) & set(method.gt_switches)
                  and not (settings_file is not None and settings_file.tuned_on_labels))
    study_name = args.study or f"{spec['name']}-{objective}-{profile}"
    return run_search(fn, spec["space"], args.trials or int(spec.get("n_trials", 12)), study_name,
                      storage=args.storage, workers=args.workers, objective_metric=OBJECTIVES[objective],
                      direction="maximize", tracking_uri=args.tracking_uri, label_free=label_free,
                      seed=int(spec.get("seed", 0)), objective_name=objective,
                      reports=Path(getattr(args, "reports", None) or "reports"))
