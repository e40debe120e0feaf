"""Compare a synthetic dataset with real BraTS cases: tumour contrast, volumes, intensities.

    python -m clisc.data.synth.compare --synthetic DIR --real DIR [--markdown]

Per case: contrast = mean FLAIR in the whole tumour / mean FLAIR in the non-tumour brain (brain =
FLAIR > 0), whole-tumour and brain voxels, FLAIR percentiles over the brain. The table summarises
each set as min / median / max (percentiles: median over cases, raw and relative to the median).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from clisc.data.discovery import scan_case_folders
from clisc.errors import CliscError, DataError


def case_stats(flair_path: Path, seg_path: Path) -> dict[str, float]:
    """Statistics of one case from its FLAIR and segmentation files (``XxYxZ`` volumes)."""
    flair = np.asanyarray(nib.load(flair_path).dataobj).astype(np.float32)
    tumour = np.asanyarray(nib.load(seg_path).dataobj) > 0
    brain = flair > 0
    values = flair[brain]
    p1, p50, p99 = np.percentile(values, [1, 50, 99])
    healthy = brain & ~tumour
    return {
        "contrast": float(flair[tumour].mean() / flair[healthy].mean()) if tumour.any() else float("nan"),
        "tumour_voxels": int(tumour.sum()),
        "brain_voxels": int(brain.sum()),
        "p1": float(p1), "p50": float(p50), "p99": float(p99),
        "p1_rel": float(p1 / p50), "p99_rel": float(p99 / p50),
    }


def dataset_stats(root: str | Path) -> pd.DataFrame:
    """One row of ``case_stats`` per case with a segmentation under ``root`` (column ``case_id``)."""
    cases, _ = scan_case_folders(root)
    rows = [{"case_id": c.case_id, **case_stats(c.flair, c.seg)} for c in cases if c.seg is not None]
    if not rows:
        raise DataError(root, "no case with a FLAIR and a segmentation file")
    return pd.DataFrame(rows)


def _spread(values: pd.Series, fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in (values.min(), values.median(), values.max()))


def summary(stats: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows = quantities, columns = the named sets (cells are text: min / median / max or medians)."""
    table = {}
    for name, df in stats.items():
        table[name] = {
            "cases": str(len(df)),
            "contrast tumour/brain (min / median / max)": _spread(df["contrast"], ".2f"),
            "whole-tumour voxels (min / median / max)": _spread(df["tumour_voxels"], ",.0f"),
            "brain voxels (min / median / max)": _spread(df["brain_voxels"], ",.0f"),
            "FLAIR p1 / p50 / p99 in brain (median over cases)":
                " / ".join(format(df[c].median(), ".0f") for c in ("p1", "p50", "p99")),
            "p1 / p99 relative to p50 (median over cases)":
                f"{df['p1_rel'].median():.2f} / {df['p99_rel'].median():.2f}",
        }
    return pd.DataFrame(table)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub markdown table of ``table`` (index as the first column)."""
    header = ["quantity", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([str(idx), *map(str, row)]) + " |" for idx, row in table.iterrows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clisc.data.synth.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic", required=True, type=Path, help="folder of synthetic cases")
    parser.add_argument("--real", required=True, type=Path, help="folder of real BraTS cases")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    try:
        table = summary({"synthetic": dataset_stats(args.synthetic), "real": dataset_stats(args.real)})
    except CliscError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(to_markdown(table) if args.markdown else table.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
