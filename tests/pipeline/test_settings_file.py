"""Settings files (--settings-file): the search's best.yaml format, its provenance tags, bad files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clisc.errors import CliscError
from clisc.pipeline.methods import get_method
from clisc.pipeline.run import method_settings
from clisc.pipeline.settings_file import read_settings_file, write_settings_file

BEST_YAML = """\
provenance: {study: search_clisc-validation_dice-paper, storage: 'sqlite:///optuna.db', objective: validation_dice,
  label_free: false, best_trial: 7, value: 81.2}
overrides: {amda.alpha: 20.0, s3f.beta: 20.0, cam.threshold: 0.45}
"""


def test_the_agreed_format_reads_into_overrides_and_tags(tmp_path: Path) -> None:
    path = tmp_path / "best.yaml"
    path.write_text(BEST_YAML)
    tuned = read_settings_file(path)
    assert tuned.overrides == {"amda.alpha": 20.0, "s3f.beta": 20.0, "cam.threshold": 0.45}
    assert tuned.tuned_on_labels
    assert tuned.tags() == {"settings_file": "best.yaml", "tuned_on_labels": "true",
                            "tuned_study": "search_clisc-validation_dice-paper", "tuned_objective": "validation_dice"}


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    provenance = {"study": "s", "storage": "optuna/s.log", "objective": "label_free", "label_free": True,
                  "best_trial": np.int64(3), "value": np.float64(0.5)}
    path = write_settings_file(tmp_path / "search" / "s" / "best.yaml", provenance, {"s3f.beta": np.float64(10.0)})
    tuned = read_settings_file(path)
    assert tuned.provenance["best_trial"] == 3 and tuned.overrides == {"s3f.beta": 10.0}
    assert not tuned.tuned_on_labels and tuned.tags()["tuned_on_labels"] == "false"
    assert path.read_text().startswith("provenance: {study: s,")


@pytest.mark.parametrize("provenance, on_labels", [
    ({"study": "s", "objective": "label_free", "label_free": True}, False),
    ({"study": "s", "objective": "label_free", "label_free": False}, True),  # e.g. an official-protocol study
    ({"study": "s", "objective": "label_free"}, True),  # no claim: counted as tuned on labels
    ({"study": "s", "objective": "validation_dice", "label_free": True}, True),
    (None, False),  # a hand-written file of plain overrides
])
def test_tuned_on_labels(tmp_path: Path, provenance, on_labels: bool) -> None:
    path = tmp_path / "f.yaml"
    write_settings_file(path, provenance or {}, {"s3f.beta": 10.0})
    if provenance is None:
        path.write_text("overrides: {s3f.beta: 10.0}\n")
    tuned = read_settings_file(path)
    assert tuned.tuned_on_labels is on_labels
    assert ("tuned_study" in tuned.tags()) is (provenance is not None)


@pytest.mark.parametrize("text, message", [
    (None, "settings file not found"),
    ("overrides: {amda.alpha: [", "not valid YAML"),
    ("- 1\n- 2\n", "needs an 'overrides' mapping"),
    ("provenance: {study: s, objective: label_free}\n", "needs an 'overrides' mapping"),
    ("overrides: {amda.alpha: 10}\nbest: 3\n", "unknown key(s) ['best']"),
    ("provenance: {study: s}\noverrides: {amda.alpha: 10}\n", "'provenance' must be a mapping with study, objective"),
    ("overrides: {amda.nope: 10}\n", "unknown setting 'amda.nope'"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "best.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(CliscError) as err:
        read_settings_file(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_the_file_sits_beneath_the_methods_differences_and_the_users_overrides(tmp_path: Path) -> None:
    path = tmp_path / "best.yaml"
    path.write_text(BEST_YAML)
    tuned = read_settings_file(path)
    clisc = method_settings(get_method("clisc"), "paper", "tiny", {"cam.threshold": 0.3}, tuned)
    assert (clisc.amda.alpha, clisc.s3f.beta, clisc.cam.threshold) == (20.0, 20.0, 0.3)  # --set wins
    no_s3f = method_settings(get_method("no_s3f"), "paper", "tiny", {}, tuned)
    assert no_s3f.s3f.beta == 0.0 and no_s3f.cam.threshold == 0.45  # an ablation stays an ablation
