"""Content identity of a dataset's input files: what roots every stage cache key.

``dataset_fingerprint`` (``clisc.data.discovery``) names a dataset by its case ids and file sizes, for
split files; it does not see an edit that keeps a file's size (BraTS2020 ships uncompressed ``.nii``
files of fixed size). :func:`dataset_content_key` hashes the *content* of every input file (FLAIR or
the chosen modality, and the segmentation when present), so an in-place edit of any one file changes
the key of every stage downstream of the volumes (``RunContext.volumes_key``).

Each file is read once: its SHA-256 is cached under ``<cache_root>/file_digests/`` by the file's
(resolved path, size, mtime_ns, ctime_ns, inode). A touched or copied dataset is hashed again but
gives the same key (the content did not change), so the stage cache survives a copy; an edit that
changes the content changes the key even when it restores the mtime (the ctime still moves).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from clisc.cache import atomic_write_bytes, stable_hash
from clisc.data.discovery import CaseFiles
from clisc.errors import DataError

DIGEST_DIR = "file_digests"
_CHUNK = 1 << 20


def _stat_key(path: Path) -> tuple[str, os.stat_result]:
    try:
        st = path.stat()
    except OSError as err:
        raise DataError(path, f"cannot stat input file ({err.strerror})") from err
    return stable_hash([str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino], 24), st


def file_digest(path: str | Path, cache_root: str | Path | None = None) -> str:
    """SHA-256 (hex) of the bytes of ``path``; with ``cache_root`` read from / stored in its digest
    cache under the file's (path, size, mtime, ctime, inode). DataError when the file is unreadable."""
    path = Path(path)
    key, st = _stat_key(path)
    entry = Path(cache_root) / DIGEST_DIR / f"{key}.json" if cache_root is not None else None
    if entry is not None and entry.is_file():
        try:
            return str(json.loads(entry.read_text())["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable entry: hash again and overwrite it
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
    except OSError as err:
        raise DataError(path, f"cannot read input file ({err.strerror})") from err
    value = digest.hexdigest()
    if entry is not None:
        atomic_write_bytes(entry, json.dumps({"path": str(path.resolve()), "size": st.st_size,
                                              "sha256": value}).encode())
    return value


def case_content(case: CaseFiles, cache_root: str | Path | None = None) -> list[str]:
    """``[case id, image digest, seg digest or ""]``: one case's input identity."""
    seg = file_digest(case.seg, cache_root) if case.seg is not None else ""
    return [case.case_id, file_digest(case.flair, cache_root), seg]


def dataset_content_key(cases: Iterable[CaseFiles], cache_root: str | Path | None = None) -> str:
    """Short hash of every case's id, layout, modality, channel and input file contents (sorted by id)."""
    entries = [case_content(c, cache_root) + [c.layout, c.modality, c.channel]
               for c in sorted(cases, key=lambda c: c.case_id)]
    return stable_hash(entries, length=16)
