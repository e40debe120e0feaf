"""Validate every case of a dataset folder without stopping at the first bad one."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clisc.data.discovery import scan_case_folders
from clisc.data.io import load_case
from clisc.errors import DataError


@dataclass
class CaseCheck:
    """Outcome for one case folder: ``reason`` says what is wrong ("" when ``ok``)."""

    case_id: str
    path: Path
    ok: bool
    reason: str
    layout: str = ""


def check_dataset(root: str | Path, require_seg: bool = True, modality: str = "FLAIR") -> list[CaseCheck]:
    """Load every case under ``root`` with the validators of :mod:`clisc.data.io`, sorted by case id.

    Folders beside the cases that lack a FLAIR file are reported as bad cases. Only a missing root
    raises (DataError); problems of single cases never do.
    """
    cases, without_flair = scan_case_folders(root, modality)
    stem = "_flair" if modality.upper() == "FLAIR" else "_t2"
    checks = [CaseCheck(d.name, d, False, f"no {d.name}{stem}.nii[.gz] file") for d in without_flair]
    for files in cases:
        try:
            load_case(files, require_seg=require_seg)
        except DataError as err:
            where = err.path.name if err.path != files.flair.parent else "folder"
            checks.append(CaseCheck(files.case_id, err.path, False, f"{where}: {err.problem}", files.layout))
        else:
            checks.append(CaseCheck(files.case_id, files.flair.parent, True, "", files.layout))
    return sorted(checks, key=lambda c: c.case_id)
