"""Protocols and profiles as data: ``protocols/<name>.yaml`` and ``profiles/<name>.yaml`` hold dotted
setting overrides. Kept free of heavy imports so the CLI can list the choices without loading torch."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from clisc.errors import CliscError

HERE = Path(__file__).parent
PROFILES = tuple(sorted(p.stem for p in (HERE / "profiles").glob("*.yaml")))
PROTOCOLS = tuple(sorted(p.stem for p in (HERE / "protocols").glob("*.yaml")))


def load_layer(kind: str, name: str) -> dict[str, Any]:
    """The overrides of protocol or profile ``name`` (``kind`` = "protocol" | "profile")."""
    choices = {"protocol": PROTOCOLS, "profile": PROFILES}[kind]
    if name not in choices:
        raise CliscError(f"unknown {kind} {name!r}; choose one of {', '.join(choices)}")
    return yaml.safe_load((HERE / f"{kind}s" / f"{name}.yaml").read_text()) or {}
