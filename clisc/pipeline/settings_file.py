"""Settings files (``--settings-file FILE``): setting overrides plus the provenance of how they were chosen.

After every study the search writes ``reports/search/<study>/best.yaml`` in this format::

    provenance: {study: NAME, storage: URL, objective: validation_dice, label_free: false, best_trial: 7, value: 81.2}
    overrides: {amda.alpha: 20.0, s3f.beta: 20.0, cam.threshold: 0.45}

A run given such a file applies its ``overrides`` as a layer beneath the method's declared differences,
the experiment's sweep point and ``--set`` (so an ablation stays an ablation and ``--set`` still wins),
and carries the provenance as tags. Settings not chosen by a label-free study (``objective:
label_free`` with ``label_free: true``) were tuned on validation labels: such a run is not label-free
and names the ground-truth switch ``tuned_on_validation_labels``. ``provenance`` may be left out of a
hand-written file; its overrides are then logged as plain settings.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clisc.cache import atomic_write_bytes
from clisc.errors import CliscError

TUNED_ON_LABELS_SWITCH = "tuned_on_validation_labels"
LABEL_FREE_OBJECTIVE = "label_free"
KEYS = ("provenance", "overrides")
PROVENANCE_REQUIRED = ("study", "objective")


@dataclass(frozen=True)
class SettingsFile:
    """A read and checked settings file: dotted-key ``overrides`` and the search's ``provenance``."""

    path: Path
    overrides: Mapping[str, Any]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def tuned_on_labels(self) -> bool:
        """True unless the provenance says a label-free objective chose the settings (no provenance: False)."""
        if not self.provenance:
            return False
        return not (self.provenance.get("objective") == LABEL_FREE_OBJECTIVE
                    and self.provenance.get("label_free") is True)

    def tags(self) -> dict[str, str]:
        """``settings_file``, ``tuned_on_labels`` and, with a provenance, ``tuned_study`` / ``tuned_objective``."""
        tags = {"settings_file": self.path.name, "tuned_on_labels": str(self.tuned_on_labels).lower()}
        if self.provenance:
            tags["tuned_study"] = str(self.provenance["study"])
            tags["tuned_objective"] = str(self.provenance["objective"])
        return tags


def read_settings_file(path: str | Path) -> SettingsFile:
    """Read and check ``path``; every problem is a one-line CliscError naming the file."""
    from clisc.pipeline.settings import Settings, apply_overrides

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CliscError(f"{path}: settings file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CliscError(f"{path}: unreadable settings file ({err})") from None
    except yaml.YAMLError as err:
        raise CliscError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("overrides"), dict):
        raise CliscError(f"{path}: a settings file needs an 'overrides' mapping (and the search's 'provenance'), "
                         "e.g. overrides: {amda.alpha: 20.0}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise CliscError(f"{path}: unknown key(s) {unknown}; a settings file holds {', '.join(KEYS)}")
    provenance = data.get("provenance", {})
    complete = isinstance(provenance, dict) and all(k in provenance for k in PROVENANCE_REQUIRED)
    if "provenance" in data and not complete:
        raise CliscError(f"{path}: 'provenance' must be a mapping with {', '.join(PROVENANCE_REQUIRED)}")
    overrides = {str(k): v for k, v in data["overrides"].items()}
    try:
        apply_overrides(Settings(), overrides)
    except CliscError as err:
        raise CliscError(f"{path}: {err}") from None
    return SettingsFile(path, overrides, provenance)


def _plain(value: Any) -> Any:
    """numpy scalars (Optuna's values may be) -> Python scalars, so the YAML stays plain."""
    return value.item() if hasattr(value, "item") else value


def write_settings_file(path: str | Path, provenance: Mapping[str, Any], overrides: Mapping[str, Any]) -> Path:
    """Write a settings file in the format above (atomically); returns the path."""
    path = Path(path)
    data = {"provenance": {k: _plain(v) for k, v in provenance.items()},
            "overrides": {k: _plain(v) for k, v in overrides.items()}}
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=1_000_000)  # one line per key
    atomic_write_bytes(path, text.encode())
    return path
