"""``clisc run`` (one method, one or more seeds) and ``clisc weights`` (fetch / verify weights)."""
from __future__ import annotations

import argparse
from pathlib import Path

from clisc.pipeline.layers import PROFILES, PROTOCOLS


def weights_overrides(weights: str | None) -> dict[str, str]:
    """``--weights``: ``random`` keeps the profile's model sizes with random init; ``pretrained``
    switches to the real architectures (tiny models have no pretrained weights)."""
    if weights is None:
        return {}
    if weights == "random":
        return {"foundation.weights": "random"}
    return {"foundation.weights": weights, "foundation.size": "base"}


DEFAULT_DATA = Path("data/synthetic")
DEFAULT_SYNTHETIC_CASES = 20


def ensure_data(data: Path) -> Path:
    """The default folder is the synthetic dataset: written on first use (deterministic, seed 0)."""
    if data == DEFAULT_DATA and not (data / "SYNTHETIC").is_file():
        from clisc.data.synth import synthesize_dataset

        print(f"[clisc] {data} missing: writing the synthetic dataset ({DEFAULT_SYNTHETIC_CASES} cases, seed 0)")
        synthesize_dataset(data, DEFAULT_SYNTHETIC_CASES, seed=0)
    return data


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``clisc run``, ``clisc experiment`` and ``clisc search``."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"BraTS-layout folder (default {DEFAULT_DATA}: the synthetic dataset, written if missing)")
    parser.add_argument("--profile", choices=PROFILES, default="paper")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="paper")
    parser.add_argument("--weights", choices=("random", "pretrained"), default=None,
                        help="foundation weights (default: the profile's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set amda.alpha=10 (repeatable)")
    parser.add_argument("--cache", type=Path, default=Path("cache"), help="stage cache folder")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")


def run_overrides(args: argparse.Namespace) -> dict:
    from clisc.pipeline.settings import parse_override

    overrides = weights_overrides(args.weights)
    overrides.update(dict(parse_override(text) for text in args.overrides))
    return overrides


def _run(args: argparse.Namespace) -> int:
    from clisc.pipeline.run import run_method, summary_line

    ensure_data(args.data)
    for seed in args.seeds:
        out = args.out / f"{args.method}_seed{seed}"
        result = run_method(args.method, args.data, protocol=args.protocol, profile=args.profile, seed=seed,
                            overrides=run_overrides(args), cache_root=args.cache, out_dir=out, device=args.device)
        print(summary_line(result))
        print(f"[clisc] per-case scores: {result.artifacts['per_case']}")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from clisc.pipeline.experiment import run_experiment

    ensure_data(args.data)
    for name in args.experiments:
        run_experiment(name, args.data, profile=args.profile, protocol=args.protocol, overrides=run_overrides(args),
                       cache_root=args.cache, runs_root=args.out, tracking_uri=args.tracking_uri, device=args.device)
    return 0


def _search(args: argparse.Namespace) -> int:
    from clisc.pipeline.experiment import read_spec
    from clisc.pipeline.search import run_pipeline_search

    spec, _ = read_spec(args.spec, ("method", "space"), "a search spec needs 'method' and 'space'")
    ensure_data(args.data)
    study = run_pipeline_search(spec, args, run_overrides(args))
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    print(f"[clisc] study {study.study_name}: {len(study.trials)} trials ({len(done)} complete, {len(failed)} failed)")
    if done:
        from clisc.search.report import BEST_FILE, best_overrides, search_dir, set_line

        print(f"[clisc] best value {study.best_value:.4f} (trial {study.best_trial.number}) with {study.best_params}")
        folder = search_dir(args.reports, study.study_name)
        print(f"[clisc] plots and {BEST_FILE} in {folder}; reuse the best settings with:")
        print(f"  {set_line(best_overrides(study))}")
    return 0


def _weights(args: argparse.Namespace) -> int:
    from clisc.foundation.weights import WEIGHTS, resolve_weights

    names = args.names or sorted(WEIGHTS)
    for name in names:
        path = resolve_weights(name, cache_dir=args.dir, download=not args.no_download)
        print(f"{name}: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from clisc.pipeline.methods import METHODS

    run = subparsers.add_parser("run", help="run one method (all the stages it needs, cached) and score it")
    run.add_argument("method", choices=sorted(METHODS), metavar="METHOD", help=", ".join(sorted(METHODS)))
    add_run_options(run)
    run.add_argument("--seeds", type=int, nargs="+", default=[0])
    run.add_argument("--out", type=Path, default=Path("runs"), help="run folders (per-case CSV, settings)")
    run.set_defaults(func=_run)

    experiment = subparsers.add_parser("experiment", help="run experiment specs (experiments/*.yaml), "
                                       "logging every run to MLflow")
    experiment.add_argument("experiments", nargs="+", metavar="NAME", help="spec name (table1, table2, "
                            "sweep_alpha, sweep_beta) or a YAML path")
    add_run_options(experiment)
    experiment.set_defaults(profile=None, protocol=None)
    experiment.add_argument("--out", type=Path, default=Path("runs"), help="run folders")
    experiment.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI "
                            "or sqlite:///mlflow.db)")
    experiment.set_defaults(func=_experiment)

    search = subparsers.add_parser("search", help="Optuna search of alpha, beta and the CAM threshold; every "
                                   "trial a nested MLflow run")
    search.add_argument("--spec", default="search", help="search spec name or YAML path (default: search)")
    add_run_options(search)
    search.set_defaults(profile=None, protocol=None)
    search.add_argument("--objective", choices=("validation_dice", "label_free"), default=None,
                        help="validation_dice reads validation labels (tagged not label-free); label_free "
                             "maximises the SAM-vs-network agreement S3F computes (default: the spec's)")
    search.add_argument("--trials", type=int, default=None, help="number of trials (default: the spec's)")
    search.add_argument("--workers", type=int, default=1, help="local worker processes on one study")
    search.add_argument("--storage", default=None, help="Optuna storage: default a journal file under "
                        "optuna/; any RDB URL (sqlite:///..., postgresql://...) lets many machines share a study")
    search.add_argument("--study", default=None, help="study name (default: <spec>-<objective>-<profile>)")
    search.add_argument("--tracking-uri", default=None, help="MLflow store")
    search.add_argument("--reports", type=Path, default=Path("reports"),
                        help="the study's plots and best.yaml go to REPORTS/search/<study>/ (default: reports)")
    search.set_defaults(func=_search)

    weights = subparsers.add_parser("weights", help="download and verify pretrained weights (SHA256)")
    weights.add_argument("names", nargs="*", help="registry names (default: all)")
    weights.add_argument("--dir", type=Path, default=None, help="weights folder (default $CLISC_WEIGHTS_DIR "
                         "or ~/.cache/clisc/weights)")
    weights.add_argument("--no-download", action="store_true", help="only verify files already present")
    weights.set_defaults(func=_weights)
