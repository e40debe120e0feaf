"""EpochRecorder keeps a training curve on disk that a resumed training continues."""
from __future__ import annotations

import json

from clisc.pipeline.curves import EpochRecorder, read_history


def test_rows_are_kept_in_epoch_order_and_a_repeated_epoch_replaces_its_row(tmp_path):
    path = tmp_path / "history.json"
    curve = EpochRecorder(path)
    curve(1, {"loss": 0.9})
    curve(2, {"loss": 0.7, "val_dice": 0.2})
    resumed = EpochRecorder(path)  # a new process after a crash
    resumed(2, {"loss": 0.7, "val_dice": 0.2})  # epoch 2 ran again (crash before its checkpoint)
    resumed(3, {"loss": 0.5})
    assert read_history(path) == [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.7, "val_dice": 0.2},
                                  {"epoch": 3, "loss": 0.5}]
    fresh = EpochRecorder(path, resume=False)
    fresh(1, {"loss": 1.0})
    assert json.loads(path.read_text()) == [{"epoch": 1, "loss": 1.0}]


def test_missing_or_broken_history_reads_as_empty(tmp_path):
    assert read_history(tmp_path / "absent.json") == []
    (tmp_path / "broken.json").write_text("[{\"epoch\": 1,")
    assert read_history(tmp_path / "broken.json") == []
