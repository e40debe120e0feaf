"""Figures from tracked runs: Dice vs alpha/beta (the paper's Fig. 3) and contours per size group (Fig. 2)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from clisc.errors import CliscError  # noqa: E402
from clisc.pipeline.result import MethodResult  # noqa: E402
from clisc.reporting.load import QUALITATIVE_ARTIFACT  # noqa: E402
from clisc.reporting.tables import (by_method, comparability_note, method_title, paper_rows,  # noqa: E402
                                    seed_mean_summary, size_groups)

SWEEP_PARAMS = {"alpha": "amda.alpha", "beta": "s3f.beta"}
SWEEP_SYMBOLS = {"alpha": "α", "beta": "β"}


def save_figure(fig: Figure, out_stem: Path) -> list[Path]:
    """``out_stem.png`` (150 dpi) and ``out_stem.pdf``, without timestamps (byte-stable reruns)."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = out_stem.with_name(out_stem.name + ".png"), out_stem.with_name(out_stem.name + ".pdf")
    fig.savefig(png, dpi=150, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return [png, pdf]


def _banner(fig: Figure, results: Sequence[MethodResult]) -> None:
    note = comparability_note(results)
    if note:
        fig.text(0.5, 0.995, note, ha="center", va="top", color="red", fontsize=8)


def sweep_figure(results: Iterable[MethodResult], param: str, out_stem: Path) -> list[Path]:
    """Dice (mean ± std over cases; several seeds: mean of per-seed values) vs ``alpha`` or ``beta``.

    The value of each run is its ``amda.alpha`` / ``s3f.beta`` param; one line per method.
    """
    if param not in SWEEP_PARAMS:
        raise CliscError(f"sweep parameter must be one of {sorted(SWEEP_PARAMS)}, not {param!r}")
    key = SWEEP_PARAMS[param]
    swept = [r for r in results if key in r.params]
    if not swept:
        raise CliscError(f"no run has the param {key}: nothing to plot for the {param} sweep")
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for method, runs in by_method(swept).items():
        values = sorted({float(r.params[key]) for r in runs})
        stats = [seed_mean_summary([r for r in runs if float(r.params[key]) == v]) for v in values]
        means = [s["dsc_mean"] for s in stats]
        stds = [s["dsc_std"] for s in stats]
        ax.errorbar(values, means, yerr=stds, marker="o", capsize=3, label=method)
        ax.set_xticks(values)
    ax.set_xlabel(f"{SWEEP_SYMBOLS[param]} ({key})")
    ax.set_ylabel("DSC (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _banner(fig, swept)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return save_figure(fig, out_stem)


def _method_order(methods: Iterable[str]) -> list[str]:
    paper = [row["method"] for row in paper_rows("table1")]
    present = set(methods)
    return [m for m in paper if m in present] + sorted(present - set(paper))


def panel_caption(result: MethodResult, case_id: str, pred: np.ndarray) -> str:
    """A panel's caption: the case's Dice for the run, and ``empty prediction`` when it predicted no
    tumour in the volume (``no mask on this slice`` when only the shown slice is empty)."""
    rows = result.per_case[result.per_case["case_id"] == case_id]
    dice = f"Dice {float(rows['dsc'].iloc[0]):.1f}" if len(rows) and "dsc" in rows else "Dice n/a"
    if len(rows) and str(rows["empty"].iloc[0]) == "pred":
        return f"{dice}\nempty prediction"
    return dice if np.any(pred) else f"{dice}\nno mask on this slice"


def qualitative_figure(results: Iterable[MethodResult], out_stem: Path) -> list[Path]:
    """One row per size group: the FLAIR slice with the ground truth, then each method's contour
    (titled by its table title; each panel gives the case's Dice and marks an empty prediction).

    Uses each method's lowest seed that logged ``qualitative.npz`` (``<case>__image``, ``__gt``,
    ``__pred`` axial slices); per row the first case (by id) of that size group present in every
    method's file. Slices are ``XxY`` and shown transposed (x to the right, y up).
    """
    chosen: dict[str, tuple[MethodResult, dict[str, np.ndarray]]] = {}
    for method, runs in by_method(results).items():
        with_npz = [r for r in runs if QUALITATIVE_ARTIFACT in r.artifacts]
        if with_npz:
            with np.load(with_npz[0].artifacts[QUALITATIVE_ARTIFACT]) as npz:
                chosen[method] = (with_npz[0], {k: npz[k] for k in npz.files})
    if not chosen:
        raise CliscError(f"no run logged {QUALITATIVE_ARTIFACT}: no qualitative figure")
    methods = _method_order(chosen)
    reference = chosen[methods[0]][0].per_case
    rows = []
    for group in size_groups():
        cases = sorted(reference.loc[reference["size_group"] == group, "case_id"])
        common = [c for c in cases if all(f"{c}__image" in arrays for _, arrays in chosen.values())]
        if common:
            rows.append((group, common[0]))
    if not rows:
        raise CliscError(f"no case is in the {QUALITATIVE_ARTIFACT} of every method")
    labels = {m: method_title(m) for m in methods}
    fig, axes = plt.subplots(len(rows), len(methods) + 1, figsize=(1.8 * (len(methods) + 1), 1.9 * len(rows)),
                             squeeze=False)
    for i, (group, case_id) in enumerate(rows):
        arrays = chosen[methods[0]][1]
        image, gt = arrays[f"{case_id}__image"], arrays[f"{case_id}__gt"]
        panels = [("ground truth", None, None)] + [(labels[m], chosen[m][1][f"{case_id}__pred"], chosen[m][0])
                                                    for m in methods]
        for j, (title, pred, result) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(image, cmap="gray")  # YxX display slice: anterior at the top
            for mask, colour in ((gt, "lime"), (pred, "red")):
                if mask is not None and np.any(mask):
                    ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
            if result is not None:
                ax.text(0.02, 0.98, panel_caption(result, case_id, pred), transform=ax.transAxes, ha="left",
                        va="top", fontsize=6, color="yellow", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1})
        axes[i, 0].set_ylabel(f"{group}\n{case_id}", fontsize=7)
    _banner(fig, [result for result, _ in chosen.values()])
    fig.supxlabel("green: ground truth, red: prediction", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save_figure(fig, out_stem)
