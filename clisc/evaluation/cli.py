"""``clisc eval``: score NIfTI predictions against the BraTS ground truth (whole tumour).

Predictions are ``<pred>/<case_id>.nii[.gz]`` or ``<pred>/<case_id>_pred.nii[.gz]`` in the original
image grid; voxels > 0 are tumour. A case without a prediction file is scored as an empty
prediction (empty rule "pred") and listed in the output.
"""
from __future__ import annotations

import argparse
import logging
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from clisc.data.discovery import CaseFiles, discover_cases
from clisc.data.io import AFFINE_ATOL
from clisc.data.native import native_ground_truth
from clisc.errors import CliscError, DataError
from clisc.evaluation.evaluate import EvaluationSettings, evaluate_case, per_case_table, summarize, summary_table
from clisc.evaluation.metrics import EMPTY_HD95_MM, EMPTY_PREDICTION

log = logging.getLogger(__name__)

_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, ImageFileError, HeaderDataError)
PREDICTION_NAMES = ("{}.nii.gz", "{}.nii", "{}_pred.nii.gz", "{}_pred.nii")


def find_prediction(pred_dir: Path, case_id: str) -> Path | None:
    """The prediction file of a case, None when there is none; DataError when two names match."""
    found = [pred_dir / name.format(case_id) for name in PREDICTION_NAMES if (pred_dir / name.format(case_id)).is_file()]
    if len(found) > 1:
        raise DataError(found[1], f"ambiguous prediction for {case_id}: {found[0].name} exists too")
    return found[0] if found else None


def load_prediction(path: Path, shape: tuple[int, ...], affine: np.ndarray | None = None) -> np.ndarray:
    """Prediction mask ``XxYxZ`` bool (voxels > 0) read from ``path``; DataError when it is unreadable,
    holds non-finite or non-integer values, or its shape differs from the ground truth's ``shape``."""
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except _READ_ERRORS as err:
        raise DataError(path, f"unreadable NIfTI prediction ({type(err).__name__})") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.shape != tuple(shape):
        raise DataError(path, f"prediction shape {data.shape} differs from the ground truth's {tuple(shape)}")
    if data.dtype.kind == "f":
        if not np.isfinite(data).all():
            raise DataError(path, "prediction holds NaN or infinite values")
        if not np.array_equal(data, np.round(data)):
            raise DataError(path, "prediction holds non-integer values (expected a 0/1 mask)")
    if affine is not None and not np.allclose(image.affine, affine, atol=AFFINE_ATOL):
        log.warning("%s: affine differs from the ground truth's; scoring voxel by voxel", path)
    return data > 0


def _selected_cases(data_dir: str, wanted: list[str] | None) -> list[CaseFiles]:
    cases = discover_cases(data_dir)
    if not wanted:
        return cases
    by_id = {case.case_id: case for case in cases}
    unknown = [case_id for case_id in wanted if case_id not in by_id]
    if unknown:
        raise DataError(data_dir, f"case(s) not found: {', '.join(unknown[:5])}")
    return [by_id[case_id] for case_id in dict.fromkeys(wanted)]


def evaluate_folder(
    pred_dir: str | Path,
    data_dir: str,
    case_ids: list[str] | None = None,
    empty_hd95: float = EMPTY_HD95_MM,
    empty_prediction: str = "penalty",
) -> tuple[pd.DataFrame, list[str]]:
    """Per-case table of the predictions in ``pred_dir`` and the ids of cases without a prediction
    (``empty_prediction``: ``penalty`` or the public code's ``zero``, see ``metrics``)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(pred_dir, "prediction folder not found")
    cases = _selected_cases(data_dir, case_ids)
    rows, missing = [], []
    for case in cases:
        gt, spacing = native_ground_truth(case)  # the stored grid, as runs score their native masks
        path = find_prediction(pred_dir, case.case_id)
        if path is None:
            missing.append(case.case_id)
            pred = np.zeros(gt.shape, dtype=bool)
        else:
            pred = load_prediction(path, gt.shape, nib.load(case.flair).affine)
        rows.append(evaluate_case(case.case_id, pred, gt, spacing, empty_hd95=empty_hd95,
                                  empty_prediction=empty_prediction))
    if len(missing) == len(cases):
        raise DataError(pred_dir, f"no prediction <case_id>.nii.gz or <case_id>_pred.nii.gz for any of the {len(cases)} cases")
    return per_case_table(rows), missing


def _eval(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    table, missing = evaluate_folder(args.pred, args.data, args.cases, args.empty_hd95, args.empty_prediction)
    summary = summarize(table, ddof=args.std_ddof)
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 120):
        print(summary_table(summary).to_string())
    print(f"Dice 95% bootstrap CI of the mean: [{summary['dsc_ci_low']:.2f}, {summary['dsc_ci_high']:.2f}]")
    rule = (f"Dice 1 / HD95 0 if both empty; Dice 0 / HD95 {args.empty_hd95:g} mm if one is"
            if args.empty_prediction == "penalty" else
            f"empty prediction Dice 0 / HD95 0; empty ground truth Dice 0 / HD95 {args.empty_hd95:g} mm")
    print(f"std: ddof {args.std_ddof}")
    print(
        f"empty-mask rule ({rule}): "
        f"both empty {summary['n_empty_both']}, prediction empty {summary['n_empty_pred']}, "
        f"ground truth empty {summary['n_empty_gt']}"
    )
    if missing:
        print(f"{len(missing)} case(s) without a prediction file, scored as empty predictions: {', '.join(missing)}")
    if args.out:
        out = Path(args.out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(out, index=False)
        except OSError as err:
            raise CliscError(f"{out}: cannot write the per-case CSV ({err.strerror})") from err
        print(f"per-case scores: {out}")
    print(f"evaluated {len(table)} cases in {time.perf_counter() - start:.1f} s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``clisc eval``; its handler is stored in ``args.func``."""
    parser = subparsers.add_parser("eval", help="score predictions (Dice, HD95, size groups) against BraTS labels")
    parser.add_argument("--pred", required=True, help="folder of <case_id>.nii.gz or <case_id>_pred.nii.gz masks")
    parser.add_argument("--data", required=True, help="BraTS dataset folder (ground truth)")
    parser.add_argument("--cases", nargs="+", metavar="ID", help="evaluate only these case ids")
    parser.add_argument("--out", help="write the per-case table to this CSV")
    parser.add_argument(
        "--empty-hd95", type=float, default=EMPTY_HD95_MM,
        help=f"HD95 (mm) when exactly one mask is empty (default {EMPTY_HD95_MM})",
    )
    parser.add_argument(
        "--empty-prediction", choices=EMPTY_PREDICTION, default=EvaluationSettings.empty_prediction,
        help="empty prediction: 'penalty' (Dice 0, HD95 --empty-hd95; default, the paper protocol) or 'zero' "
             "(Dice 0, HD95 0: the public code, the official protocol)",
    )
    parser.add_argument("--std-ddof", type=int, choices=(0, 1), default=EvaluationSettings.std_ddof,
                        help="std's delta degrees of freedom: 1 (sample std, default) or 0 (the public code's np.std)")
    parser.set_defaults(func=_eval)
