"""``clisc run`` (one method, one or more seeds) and ``clisc weights`` (list every model; fetch / verify)."""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from clisc.errors import CliscError, DataError
from clisc.pipeline.experiment import EXPERIMENTS_DIR
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
SAVE_PREDICTIONS_HELP = ("write each test case's mask as <run folder>/predictions/<case>.nii.gz (uint8, the input's "
                         "own grid, affine and header; `clisc eval --pred` on it reproduces the scores)")
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
    parser.add_argument("--profile", choices=PROFILES, default="paper",
                        help="model sizes, epochs and sampling: paper (the paper's), demo and tiny (CPU minutes), "
                             "cpu (the CPU study)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="paper",
                        help="paper: as the paper's text says; official: as the public code does (docs/DEPARTURES.md)")
    parser.add_argument("--weights", choices=("random", "pretrained"), default=None,
                        help="foundation weights (default: the profile's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set amda.alpha=10 (repeatable)")
    parser.add_argument("--cache", type=Path, default=Path("cache"), help="stage cache folder (default: cache)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    parser.add_argument("--split", type=Path, default=None, metavar="FILE",
                        help="split CSV (case_id,split), e.g. one from `clisc data split --import-public` "
                             "(default: splits/<dataset fingerprint>_seed<split_seed>.csv, made when missing)")
    parser.add_argument("--settings-file", type=Path, default=None, metavar="FILE",
                        help="tuned settings (a search's reports/search/<study>/best.yaml): its overrides "
                             "apply beneath the method's own and --set; its provenance is logged as tags")
    parser.add_argument("--skip-bad", action="store_true",
                        help="check every case first (as `clisc data check`) and leave the bad ones out of "
                             "the data and the split, listing each with its reason")


def spec_defaults(parser: argparse.ArgumentParser) -> None:
    """--profile / --protocol of ``experiment`` and ``search`` default to the spec's (then paper)."""
    parser.set_defaults(profile=None, protocol=None)
    for action in parser._actions:
        if action.dest in ("profile", "protocol"):
            action.help = f"{action.help} (default: the spec's {action.dest}, else paper)"


def add_folds_option(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    parser.add_argument("--folds", type=int, default=default, metavar="K",
                        help="K-fold cross-validation: every case tested once, the others split 7:1 into "
                             "train/valid; one run per fold, pooled by `clisc report`")


def run_overrides(args: argparse.Namespace) -> dict:
    from clisc.pipeline.settings import parse_override

    overrides = weights_overrides(args.weights)
    overrides.update(dict(parse_override(text) for text in args.overrides))
    return overrides


def skipped_cases(args: argparse.Namespace, echo: Callable[[str], None] = print) -> list[str]:
    """``--skip-bad``: the ids of the bad cases under ``args.data`` (each printed with its reason)."""
    if not args.skip_bad:
        return []
    from clisc.data.check import check_dataset

    checks = check_dataset(args.data, require_seg=False)  # label-free data: a missing seg is no defect
    bad = [c for c in checks if not c.ok]
    for check in bad:
        echo(f"[clisc] --skip-bad: skipping {check.case_id}: {check.reason}")
    if len(bad) == len(checks):
        raise CliscError(f"{args.data}: --skip-bad: no good case left")
    echo(f"[clisc] --skip-bad: {len(checks) - len(bad)} good cases, {len(bad)} skipped")
    return [c.case_id for c in bad]


def settings_file(args: argparse.Namespace):
    """``--settings-file``, read and checked (None without it)."""
    from clisc.pipeline.settings_file import read_settings_file

    return read_settings_file(args.settings_file) if args.settings_file is not None else None


@contextmanager
def bad_case_hint(args: argparse.Namespace) -> Iterator[None]:
    """A bad case stops the run with its one-line error; say how to list them all or leave them out."""
    try:
        yield
    except DataError as err:
        data = Path(args.data).resolve()
        where = err.path.resolve()
        if args.skip_bad or where == data or not where.is_relative_to(data):
            raise
        raise CliscError(f"{err} (`clisc data check {args.data}` lists every bad case; --skip-bad leaves "
                         "them out)") from None


def _run(args: argparse.Namespace) -> int:
    from clisc.pipeline.folds import fold_split_files, fold_tags, pool_folds
    from clisc.pipeline.run import run_method, summary_line

    ensure_data(args.data)
    if args.folds and args.split:
        raise CliscError("--folds and --split exclude each other (the folds are split files of their own)")
    skip, tuned, overrides = skipped_cases(args), settings_file(args), run_overrides(args)
    with bad_case_hint(args):
        folds = (fold_split_files(args.data, args.folds, args.protocol, args.profile, overrides, skip)
                 if args.folds else [args.split])
        for seed in args.seeds:
            results = []
            for fold, split_file in enumerate(folds, start=1):
                name = f"{args.method}_seed{seed}" + (f"_fold{fold}" if args.folds else "")
                result = run_method(args.method, args.data, protocol=args.protocol, profile=args.profile,
                                    seed=seed, overrides=overrides, cache_root=args.cache, out_dir=args.out / name,
                                    device=args.device, split_file=split_file, skip_cases=skip,
                                    settings_file=tuned, extra_tags=fold_tags(fold, args.folds) if args.folds else None,
                                    save_predictions=args.save_predictions)
                print(summary_line(result))
                print(f"[clisc] per-case scores: {result.artifacts['per_case']}")
                if "predictions" in result.artifacts:
                    print(f"[clisc] native-grid masks: {result.artifacts['predictions']}")
                results.append(result)
            if args.folds:
                pooled = pool_folds(results)[0]
                path = args.out / f"{args.method}_seed{seed}_folds{args.folds}_pooled.csv"
                pooled.per_case.to_csv(path, index=False)
                print(f"[clisc] {args.folds} folds pooled: {summary_line(pooled)}")
                print(f"[clisc] pooled per-case scores: {path}")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from clisc.pipeline.experiment import load_spec, run_experiment
    from clisc.pipeline.launch import LaunchOptions

    ensure_data(args.data)
    skip, tuned = skipped_cases(args), settings_file(args)
    with bad_case_hint(args):
        for name in args.experiments:
            run_experiment(name, args.data, profile=args.profile, protocol=args.protocol,
                           overrides=run_overrides(args), cache_root=args.cache, runs_root=args.out,
                           tracking_uri=args.tracking_uri, device=args.device, split_file=args.split,
                           folds=args.folds, skip_cases=skip, settings_file=tuned,
                           save_predictions=args.save_predictions,
                           launch=LaunchOptions.from_spec(
                               load_spec(name), launcher=args.launcher, workers=args.workers, gpus=args.gpus,
                               partition=args.partition, time_min=args.time_min, gpus_per_job=args.gpus_per_job,
                               cpus_per_job=args.cpus_per_job, array_parallelism=args.array_parallelism))
    return 0


def _search(args: argparse.Namespace) -> int:
    from clisc.pipeline.experiment import read_spec
    from clisc.pipeline.search import run_pipeline_search

    spec, _ = read_spec(args.spec, ("method", "space"), "a search spec needs 'method' and 'space'")
    ensure_data(args.data)
    skip, tuned = skipped_cases(args), settings_file(args)
    with bad_case_hint(args):
        study = run_pipeline_search(spec, args, run_overrides(args), tuple(skip), tuned)
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


def _list_models(cache_dir: Path | None) -> None:
    """Every foundation model a run can choose: setting, source, file, size, sha256, what is verified."""
    from clisc.foundation.catalogue import statuses

    for status in statuses(cache_dir):
        model = status.entry
        choice = f"{model.setting}={model.value}" if model.setting else model.value
        extra = f" (pip extra [{model.requires}])" if model.requires else ""
        print(f"{model.title}: {choice}{' (default)' if model.default else ''}{extra}\n"
              f"  source:   {status.source}\n  file:     {status.file}\n  size:     {status.size}\n"
              f"  sha256:   {status.sha256}\n  input:    {model.normalisation}\n  verified: {status.verified}")


def _weights(args: argparse.Namespace) -> int:
    from clisc.foundation.weights import WEIGHTS, resolve_weights

    if args.markdown:
        from clisc.foundation.catalogue import markdown_table

        print(markdown_table(), end="")
        return 0
    if not args.names and not args.download:
        _list_models(args.dir)
        return 0
    names = args.names or sorted(n for n, spec in WEIGHTS.items() if spec.downloadable)
    for name in names:
        path = resolve_weights(name, cache_dir=args.dir, download=not args.no_download)
        print(f"{name}: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from clisc.pipeline.methods import all_methods

    methods = sorted(all_methods())
    run = subparsers.add_parser(
        "run", help="run one method (all the stages it needs, cached) and score it; no MLflow logging",
        description="Run one method and score it on the test split. Results go to the run folder (--out) "
                    "only: `clisc run` does not log to MLflow; `clisc experiment` does (--tracking-uri), and "
                    "`clisc report` / `clisc ui` read from there.")
    run.add_argument("method", choices=methods, metavar="METHOD", help=", ".join(methods))
    add_run_options(run)
    run.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                     help="one run per seed (default: 0)")
    add_folds_option(run)
    run.add_argument("--out", type=Path, default=Path("runs"),
                     help="run folders: per-case CSV, settings, qualitative slices (default: runs)")
    run.add_argument("--save-predictions", action="store_true", help=SAVE_PREDICTIONS_HELP)
    run.set_defaults(func=_run)

    experiment = subparsers.add_parser("experiment", help="run experiment specs (experiments/*.yaml), "
                                       "logging every run to MLflow")
    shipped = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if p.stem != "search"))
    experiment.add_argument("experiments", nargs="+", metavar="NAME",
                            help=f"spec name ({shipped}) or a YAML path")
    add_run_options(experiment)
    spec_defaults(experiment)
    add_folds_option(experiment)
    experiment.add_argument("--out", type=Path, default=Path("runs"), help="run folders (default: runs)")
    experiment.add_argument("--save-predictions", action="store_true",
                            help=SAVE_PREDICTIONS_HELP + "; logged as each child run's predictions/ artifact")
    experiment.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI "
                            "or sqlite:///mlflow.db)")
    launch = experiment.add_argument_group("fan-out (spec key launch:; default inline)")
    launch.add_argument("--launcher", choices=["inline", "local", "slurm"], default=None,
                        help="inline: one after another; local: worker processes; slurm: submitit jobs")
    launch.add_argument("--workers", type=int, default=None, help="local: worker processes (CPU)")
    launch.add_argument("--gpus", default=None, help="local: device ids, one worker each (CUDA_VISIBLE_DEVICES), e.g. 0,1")
    launch.add_argument("--partition", default=None, help="slurm: partition")
    launch.add_argument("--time-min", type=int, default=None, help="slurm: time limit per job (minutes)")
    launch.add_argument("--gpus-per-job", type=int, default=None, help="slurm: GPUs per job")
    launch.add_argument("--cpus-per-job", type=int, default=None, help="slurm: CPUs per job")
    launch.add_argument("--array-parallelism", type=int, default=None, help="slurm: jobs running at once")
    experiment.set_defaults(func=_experiment)

    search = subparsers.add_parser("search", help="Optuna search of alpha, beta and the CAM threshold; every "
                                   "trial a nested MLflow run")
    search.add_argument("--spec", default="search", help="search spec name or YAML path (default: search)")
    add_run_options(search)
    spec_defaults(search)
    search.add_argument("--objective", choices=("validation_dice", "label_free"), default=None,
                        help="validation_dice reads validation labels (tagged not label-free); label_free "
                             "maximises the final masks' agreement with SAM on the validation images (default: the spec's)")
    search.add_argument("--trials", type=int, default=None, help="number of trials (default: the spec's)")
    search.add_argument("--workers", type=int, default=1, help="local worker processes on one study (default: 1)")
    search.add_argument("--storage", default=None, help="Optuna storage: default a journal file under "
                        "optuna/; any RDB URL (sqlite:///..., postgresql://...) lets many machines share a study")
    search.add_argument("--study", default=None, help="study name (default: <spec>-<objective>-<profile>)")
    search.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI "
                        "or sqlite:///mlflow.db)")
    search.add_argument("--reports", type=Path, default=Path("reports"),
                        help="the study's plots and best.yaml go to REPORTS/search/<study>/ (default: reports)")
    search.set_defaults(func=_search)

    weights = subparsers.add_parser("weights", help="list every foundation model (source, file, size, sha256, "
                                    "what is verified here); with names or --download: fetch and verify")
    weights.add_argument("names", nargs="*", help="registry names to fetch/verify (default: list every model)")
    weights.add_argument("--download", action="store_true", help="download + verify every directly "
                         "downloadable registry file")
    weights.add_argument("--markdown", action="store_true", help="print the model table of "
                         "docs/FOUNDATION_MODELS.md (sources, files, sizes, checksums, normalisation)")
    weights.add_argument("--dir", type=Path, default=None, help="weights folder (default $CLISC_WEIGHTS_DIR "
                         "or ~/.cache/clisc/weights)")
    weights.add_argument("--no-download", action="store_true", help="only verify files already present")
    weights.set_defaults(func=_weights)
