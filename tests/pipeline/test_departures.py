"""docs/DEPARTURES.md names every setting on which the two protocols differ."""
from __future__ import annotations

from pathlib import Path

from clisc.pipeline.settings import resolve_settings

DEPARTURES = Path(__file__).resolve().parents[2] / "docs" / "DEPARTURES.md"


def test_every_setting_that_differs_between_the_protocols_has_a_row():
    paper, official = resolve_settings("paper").flat(), resolve_settings("official").flat()
    differing = sorted(key for key in paper if key != "protocol" and paper[key] != official[key])
    rows = [line for line in DEPARTURES.read_text().splitlines() if line.startswith("| ")]
    assert differing  # the official protocol is not empty
    missing = [key for key in differing if not any(f"`{key}`" in row.split(" | ")[0] for row in rows)]
    assert not missing, f"settings without a DEPARTURES row: {missing}"
