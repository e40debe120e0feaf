"""What a finished search leaves: Optuna's plots of the study, the best settings ready to reuse.

Under ``<reports>/search/<study>/``: ``optimization_history.png``, ``param_importances.png``,
``slice.png``, ``parallel_coordinate.png`` (Optuna's matplotlib visualisations; a plot that the study
cannot support yet, e.g. importances with one finished trial, is skipped with a note) and
``best.yaml``, read back by ``clisc run/experiment --settings-file``::

    provenance: {study: NAME, storage: URL, objective: validation_dice, label_free: false, best_trial: 7, value: 81.2}
    overrides: {amda.alpha: 20.0, s3f.beta: 20.0, cam.threshold: 0.45}
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

log = logging.getLogger(__name__)

BEST_FILE = "best.yaml"


def _plots() -> dict[str, Callable[[optuna.Study], Any]]:
    from optuna.visualization import matplotlib as vis

    return {"optimization_history": vis.plot_optimization_history, "param_importances": vis.plot_param_importances,
            "slice": vis.plot_slice, "parallel_coordinate": vis.plot_parallel_coordinate}


def search_dir(reports: Path, study_name: str) -> Path:
    return Path(reports) / "search" / study_name


def _plain(value: Any) -> Any:
    """Floats without binary noise (0.45000000000000007 -> 0.45), other values as they are."""
    return float(f"{value:.10g}") if isinstance(value, float) else value


def best_overrides(study: optuna.Study) -> dict[str, Any]:
    """The best trial's params (dotted setting names) with plain values."""
    return {name: _plain(value) for name, value in study.best_trial.params.items()}


def set_line(overrides: dict[str, Any]) -> str:
    """``--set amda.alpha=20.0 --set s3f.beta=20.0`` for the overrides."""
    return " ".join(f"--set {name}={value}" for name, value in overrides.items())


def write_best(study: optuna.Study, path: Path, storage: str) -> Path:
    """``best.yaml`` (see the module docstring) of the study's best complete trial, written by
    :func:`clisc.pipeline.settings_file.write_settings_file` (the reader's own format)."""
    from clisc.pipeline.settings_file import write_settings_file

    best = study.best_trial
    provenance = {"study": study.study_name, "storage": storage,
                  "objective": study.user_attrs.get("objective", study.user_attrs.get("objective_metric", "")),
                  "label_free": bool(study.user_attrs.get("label_free", False)),
                  "best_trial": best.number, "value": _plain(float(best.value))}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_settings_file(path, provenance, best_overrides(study))


def objective_label(study: optuna.Study) -> str:
    """The objective's name for the plots' value axis: ``validation_dice (dsc_mean)``, or the metric alone."""
    metric = str(study.user_attrs.get("objective_metric", "") or "objective value")
    name = str(study.user_attrs.get("objective", "") or metric)
    return name if name == metric else f"{name} ({metric})"


def plot_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's matplotlib plots of ``study`` by name, each titled with the study's name and its value
    axis named by :func:`objective_label`; plots the study cannot support yet are left out."""
    from clisc.reporting.figures import save_figure  # noqa: F401  (sets the Agg backend first)
    import matplotlib.pyplot as plt

    figures = {}
    target = objective_label(study)
    for name, plot in _plots().items():
        try:
            with warnings.catch_warnings():  # experimental API; few trials: flat axes, equal importances
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", UserWarning)
                axes = plot(study, target_name=target)
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            log.info("search plot %s skipped: %s", name, err)
            plt.close("all")
            continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        fig = first.figure
        fig.suptitle(f"study {study.study_name}: {name.replace('_', ' ')} of {target}", fontsize=9)
        figures[name] = fig
    return figures


def write_plots(study: optuna.Study, out: Path) -> list[Path]:
    """:func:`plot_figures` of ``study`` as PNGs under ``out``."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in plot_figures(study).items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})  # Optuna's own layout
        plt.close(fig)
        written.append(path)
    return written


def write_search_report(study: optuna.Study, reports: Path, storage: str) -> list[Path]:
    """Plots and ``best.yaml`` of ``study`` under ``<reports>/search/<study>/`` (best.yaml only once a
    trial completed); returns the files written."""
    out = search_dir(reports, study.study_name)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return []
    return write_plots(study, out) + [write_best(study, out / BEST_FILE, storage)]
