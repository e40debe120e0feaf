"""``clisc data synth|check|split|preprocess``: dataset commands."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from clisc.data.check import check_dataset
from clisc.data.discovery import dataset_fingerprint, discover_cases
from clisc.data.layouts import MODALITIES, SYNTH_LAYOUTS
from clisc.data.lazy import LazyVolumes
from clisc.data.preprocessing import MODES, PreprocessedStore, PreprocessSettings
from clisc.data.split import (SPLITS, check_split_matches, default_split_dir, import_public_split,
                              load_or_create_split, write_split_csv)


def _synth(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.layout == "brats2020":
        from clisc.data.synth import synthesize_dataset

        synthesize_dataset(Path(args.out), args.cases, args.seed)
    else:
        from clisc.data.synth.layouts import synthesize_in_layout

        synthesize_in_layout(Path(args.out), args.cases, args.seed, args.layout)
    print(f"wrote {args.cases} synthetic cases to {args.out} ({args.layout} layout) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _check(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    checks = check_dataset(args.dir, require_seg=not args.no_seg, modality=args.modality)
    layouts = sorted({c.layout for c in checks if c.layout})
    bad = [c for c in checks if not c.ok]
    for check in bad:
        print(f"{check.case_id}: {check.reason}")
    print(f"{len(checks) - len(bad)} good, {len(bad)} bad ({time.perf_counter() - start:.1f} s); "
          f"layout {', '.join(layouts) or 'none found'}, modality {args.modality}")
    return 1 if bad else 0


def _split(args: argparse.Namespace) -> int:
    if args.import_public:
        cases = discover_cases(args.dir)
        split = import_public_split(*args.import_public)
        out = Path(args.out) if args.out else default_split_dir() / f"{dataset_fingerprint(cases)}_public.csv"
        check_split_matches(split, [c.case_id for c in cases], args.import_public[0])
        path = write_split_csv(out, split)
    else:
        split, path = load_or_create_split(args.dir, args.seed, args.out)
    counts = " / ".join(f"{name} {len(split[name])}" for name in SPLITS)
    print(f"{counts}: {path}")
    return 0


def _preprocess(args: argparse.Namespace) -> int:
    settings = PreprocessSettings(mode=args.mode, target_spacing=args.target_spacing)
    cases = discover_cases(args.dir)
    start = time.perf_counter()
    store = PreprocessedStore(args.cache, settings)
    LazyVolumes(cases, store, progress=True)  # fills the cache one case at a time, keeps none in memory
    where = store.directory
    print(f"preprocessed {len(cases)} cases in {time.perf_counter() - start:.1f} s: {where}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``clisc data`` and its subcommands; each handler is stored in ``args.func``."""
    data = subparsers.add_parser("data", help="BraTS data: synthesise, check, split, preprocess")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    synth = commands.add_parser("synth", help="write a synthetic BraTS-layout dataset")
    synth.add_argument("--out", required=True, help="folder to create")
    synth.add_argument("--cases", type=int, default=20, help="number of cases (default: 20)")
    synth.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same data (default: 0)")
    synth.add_argument("--layout", choices=SYNTH_LAYOUTS, default="brats2020",
                       help="file layout (docs/DATASETS.md): brats2020, brats2023 (GLI) or msd (Task01)")
    synth.set_defaults(func=_synth)

    check = commands.add_parser("check", help="validate every case; exit 1 if any is bad")
    check.add_argument("dir", help="dataset folder")
    check.add_argument("--no-seg", action="store_true", help="segmentations are optional")
    check.add_argument("--modality", choices=MODALITIES, default="FLAIR", type=str.upper,
                       help="the image to read (T2 where the layout has it)")
    check.set_defaults(func=_check)

    split = commands.add_parser("split", help="make (or reuse) the train/valid/test split CSV")
    split.add_argument("dir", help="dataset folder")
    split.add_argument("--seed", type=int, default=0, help="shuffle seed of the 7:1:2 split (default: 0)")
    split.add_argument("--out", help="split CSV, reused when it exists (default: splits/<dataset fingerprint>_seed<seed>.csv, "
                            "or _public.csv with --import-public; splits/ is $CLISC_SPLITS_DIR if set, and is where "
                            "`clisc run` looks for its split; pass another file with `clisc run --split FILE`)")
    split.add_argument("--import-public", nargs=3, metavar=("TRAIN", "VALID", "TEST"),
                       help="the public code's train/valid/test CSVs (image_pth,mask_pth)")
    split.set_defaults(func=_split)

    prep = commands.add_parser("preprocess", help="fill the preprocessing cache")
    prep.add_argument("dir", help="dataset folder")
    prep.add_argument("--cache", required=True, help="cache root")
    prep.add_argument("--mode", choices=MODES, default="paper",
                      help="preprocessing as the paper describes it, or as the public code does (default: paper)")
    prep.add_argument("--target-spacing", type=float, default=None, metavar="MM",
                      help="resample to isotropic MM (default: native spacing)")
    prep.set_defaults(func=_preprocess)
