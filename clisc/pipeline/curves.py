"""Training curves of the cached training stages (classifiers, U-Net rounds).

A training stage records one row per epoch (``{"epoch": 1, "loss": 0.69, "val_dice": ...}``) in
``history.json``: in its scratch directory while it trains (so a resumed U-Net keeps the epochs run
before a crash) and in the published cache entry, so a cached re-run still has its curve. The run's
:class:`~clisc.pipeline.result.MethodResult` carries the curves (``histories``), and MLflow logs them
as step metrics (``<stage>/loss``).
"""
from __future__ import annotations

import json
from pathlib import Path

from clisc.cache import atomic_write_bytes

HISTORY_FILE = "history.json"

History = list[dict[str, float]]


def read_history(path: Path) -> History:
    """Rows of a ``history.json`` (epoch order); [] when the file is absent or unreadable."""
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return sorted((row for row in rows if isinstance(row, dict) and "epoch" in row), key=lambda r: r["epoch"])


class EpochRecorder:
    """``on_epoch`` callback that keeps the curve in ``path`` (rewritten atomically every epoch).

    Rows already in the file are kept (a resumed training continues its curve); an epoch recorded
    again (re-run after a crash between this record and the checkpoint) replaces its row.
    """

    def __init__(self, path: Path, resume: bool = True):
        self.path = Path(path)
        self.rows: dict[int, dict[str, float]] = (
            {int(row["epoch"]): row for row in read_history(self.path)} if resume else {}
        )

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        self.rows[int(epoch)] = {"epoch": int(epoch), **{k: float(v) for k, v in metrics.items()}}
        self.write(self.path)

    @property
    def history(self) -> History:
        return [self.rows[e] for e in sorted(self.rows)]

    def write(self, path: Path) -> None:
        atomic_write_bytes(path, json.dumps(self.history).encode())
