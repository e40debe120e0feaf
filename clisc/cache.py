"""Content-keyed, crash-safe cache of stage outputs.

Each entry lives in ``root/<stage>/<key>/`` where ``key`` hashes the stage name, its settings and the
keys of its inputs, so changing anything upstream gives a new key and variants share every upstream
entry they have in common. An entry is written into a temporary sibling directory and renamed into
place only when complete (``os.replace`` is atomic on one filesystem), so an interrupted stage leaves
nothing that a later run could mistake for a finished result.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

MANIFEST = "_entry.json"
LOCK_HEARTBEAT_S = 10.0  # a holder rewrites its lock file this often
LOCK_STALE_S = 120.0  # a lock not refreshed for this long belongs to a dead holder (any host)
COMPUTED_LOG = "_computed.log"  # one line per stage entry computed (who, when): counts shared work


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner() -> str:
    return f"{socket.gethostname()}@{os.getpid()}"


def _canonical(obj: Any) -> Any:
    """JSON-able, order-independent form of settings (dataclasses, paths, tuples, numpy scalars)."""
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _canonical(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return obj.item()
    return obj


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``obj``; equal settings give equal hashes across runs."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def stage_key(stage: str, settings: Any, inputs: Sequence[str] = ()) -> str:
    """Key of a stage's output: its name, its settings and the keys of what it consumed."""
    return stable_hash({"stage": stage, "settings": settings, "inputs": list(inputs)})


class StageCache:
    """Directory of finished stage outputs; see the module docstring for the layout."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / MANIFEST).is_file()

    def manifest(self, stage: str, key: str) -> dict[str, Any]:
        return json.loads((self.path(stage, key) / MANIFEST).read_text())

    @contextlib.contextmanager
    def writing(self, stage: str, key: str, info: Mapping[str, Any] | None = None) -> Iterator[Path]:
        """Yield a private directory to write the entry into; publish it atomically on success.

        On an exception the partial directory is removed and the exception propagates. If another
        process published the same key meanwhile, its entry is kept (same key = same content).
        """
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{key}.tmp-{_owner()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
            (tmp / MANIFEST).write_text(json.dumps(_canonical(dict(info or {})), indent=1, default=str))
            if final.exists() and not (final / MANIFEST).is_file():
                shutil.rmtree(final)  # leftover of a crash between two renames: never complete
            try:
                os.replace(tmp, final)
            except OSError:
                if not self.has(stage, key):
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def lock_path(self, stage: str, key: str) -> Path:
        return self.root / stage / f".{key}.lock"

    @contextlib.contextmanager
    def computing(self, stage: str, key: str, poll_s: float = 0.5) -> Iterator[bool]:
        """Hold the per-key lock while computing an entry; yields False when another process
        published it while this one waited (then reuse it, compute nothing).

        The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on NFSv3+ and local disks)
        holding ``host pid``; its holder rewrites it every ``LOCK_HEARTBEAT_S``. A lock is stale,
        and is broken, when its holder is a dead process on this host or its file has not been
        refreshed for ``LOCK_STALE_S`` (a holder on another machine that died).
        """
        lock = self.lock_path(stage, key)
        lock.parent.mkdir(parents=True, exist_ok=True)
        while True:
            if self.has(stage, key):
                yield False
                return
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if _lock_is_stale(lock):
                    lock.unlink(missing_ok=True)
                    continue
                time.sleep(poll_s)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{socket.gethostname()} {os.getpid()}\n")
            break
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(lock, stop), daemon=True)
        beat.start()
        try:
            if self.has(stage, key):  # published between the check and the lock
                yield False
                return
            yield True
            with open(self.root / COMPUTED_LOG, "a") as log:
                log.write(f"{stage}/{key} {_owner()} {time.time():.3f}\n")
        finally:
            stop.set()
            beat.join()
            lock.unlink(missing_ok=True)

    def computed_log(self) -> list[str]:
        """``stage/key`` of every entry computed under this root, once per computation."""
        path = self.root / COMPUTED_LOG
        return [line.split()[0] for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []

    def clean_partial(self) -> int:
        """Remove temporary directories left by interrupted writers of this host; returns how many.

        A writer that is still running (another worker process sharing the cache) is left alone.
        """
        n = 0
        for tmp in self.root.glob("*/.*.tmp-*"):
            host, _, rest = tmp.name.rpartition(".tmp-")[2].partition("@")
            pid = rest.split("-")[0]
            if host == socket.gethostname() and pid.isdigit() and _alive(int(pid)):
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            n += 1
        return n


def _heartbeat(lock: Path, stop: threading.Event) -> None:
    while not stop.wait(LOCK_HEARTBEAT_S):
        with contextlib.suppress(OSError):
            os.utime(lock)


def _lock_is_stale(lock: Path) -> bool:
    try:
        host, pid = lock.read_text().split()[:2]
        age = time.time() - lock.stat().st_mtime
    except (OSError, ValueError):  # vanished, or written halfway: look again soon
        return False
    if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        return True
    return age > LOCK_STALE_S


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers see either the old content or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
