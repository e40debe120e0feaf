"""What one method x seed run produces; the contract between the runner, MLflow tracking and reports."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class MethodResult:
    """One method evaluated with one seed.

    ``per_case`` has the columns of docs/DESIGN.md: ``case_id, dsc (%), hd95 (mm), gt_voxels,
    size_group, empty``. ``params`` are the resolved settings (flat ``section.name -> value``);
    ``tags`` hold provenance: ``protocol``, ``gt_switches`` (comma list or "none"), ``label_free``
    ("true"/"false"), ``weights`` (``name=sha256`` or ``name=random`` pairs), ``dataset``
    (fingerprint), ``synthetic_data`` ("true"/"false"), ``profile``, ``git_commit``. ``histories`` are
    the training curves of the stages it used (stage -> per-epoch rows ``{"epoch": 1, "loss": ...}``);
    ``split`` is the data split it ran on (columns ``case_id, split``; None when unknown) and
    ``data_root`` the dataset folder: MLflow logs them as the run's dataset input.
    """

    method: str
    seed: int
    per_case: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    stage_times: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    split: pd.DataFrame | None = None
    data_root: str = ""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"section.name": value}`` (the form of ``MethodResult.params``)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
