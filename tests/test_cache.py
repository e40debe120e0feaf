"""clisc.cache: keys are stable and content-derived; entries appear only when complete."""
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from clisc.cache import StageCache, atomic_write_bytes, stable_hash, stage_key


@dataclass(frozen=True)
class _Settings:
    alpha: float = 20.0
    layers: tuple = ("layer3",)


def test_stable_hash_ignores_key_order_and_follows_values():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
    assert stable_hash(_Settings()) == stable_hash({"alpha": 20.0, "layers": ["layer3"]})
    assert stable_hash(Path("/x")) == stable_hash("/x")


@pytest.mark.parametrize("change", [
    dict(stage="other"), dict(settings=_Settings(alpha=10.0)), dict(inputs=["upstream2"]),
])
def test_stage_key_changes_with_name_settings_and_inputs(change):
    base = dict(stage="cam", settings=_Settings(), inputs=["upstream1"])
    assert stage_key(**base) == stage_key(**dict(base))
    assert stage_key(**{**base, **change}) != stage_key(**base)


def test_entry_published_only_on_success(tmp_path):
    cache = StageCache(tmp_path)
    with pytest.raises(RuntimeError):
        with cache.writing("sam", "k1") as tmp:
            (tmp / "part.npz").write_bytes(b"half")
            raise RuntimeError("killed")
    assert not cache.has("sam", "k1")
    assert not cache.path("sam", "k1").exists()
    assert list((tmp_path / "sam").iterdir()) == []  # no temp dir left behind

    with cache.writing("sam", "k1", {"n": 3}) as tmp:
        (tmp / "out.txt").write_text("done")
    assert cache.has("sam", "k1")
    assert (cache.path("sam", "k1") / "out.txt").read_text() == "done"
    assert cache.manifest("sam", "k1") == {"n": 3}


def test_clean_partial_removes_leftovers_of_dead_writers_only(tmp_path):
    cache = StageCache(tmp_path)
    host = socket.gethostname()
    child = subprocess.Popen(["true"])  # a writer that has exited
    child.wait()
    (tmp_path / "unet" / f".abc.tmp-{host}@{child.pid}-1a2b3c4d").mkdir(parents=True)
    (tmp_path / "unet" / f".abc.tmp-{host}@{os.getpid()}-5e6f7a8b").mkdir(parents=True)  # a live writer
    assert cache.clean_partial() == 1
    assert [p.name for p in (tmp_path / "unet").iterdir()] == [f".abc.tmp-{host}@{os.getpid()}-5e6f7a8b"]


def test_atomic_write_bytes_replaces_whole_file(tmp_path):
    target = tmp_path / "a" / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def _compute_once(root: str, delay: float) -> bool:
    """A worker: compute entry ("s", "k") under the lock, taking ``delay`` s; True if it computed."""
    import time as _time

    cache = StageCache(root)
    with cache.computing("s", "k", poll_s=0.05) as mine:
        if mine:
            with cache.writing("s", "k") as tmp:
                _time.sleep(delay)
                (tmp / "x").write_text("1")
    return mine


def test_two_processes_compute_a_key_once_the_second_waits_and_reuses(tmp_path):
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        outcomes = list(pool.map(_compute_once, [str(tmp_path)] * 2, [1.0, 1.0]))
    assert sorted(outcomes) == [False, True]
    assert StageCache(tmp_path).computed_log() == ["s/k"]
    assert not StageCache(tmp_path).lock_path("s", "k").exists()


def test_a_lock_of_a_dead_holder_on_this_host_is_broken(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    cache = StageCache(tmp_path)
    lock = cache.lock_path("s", "k")
    lock.parent.mkdir(parents=True)
    lock.write_text(f"{socket.gethostname()} {dead.pid}\n")
    assert _compute_once(str(tmp_path), 0.0) is True


def test_a_lock_not_refreshed_for_long_is_stale_whatever_host(tmp_path, monkeypatch):
    import clisc.cache as cache_module

    cache = StageCache(tmp_path)
    lock = cache.lock_path("s", "k")
    lock.parent.mkdir(parents=True)
    lock.write_text("another-host 1\n")
    assert not cache_module._lock_is_stale(lock)  # fresh: its holder may be alive elsewhere
    old = lock.stat().st_mtime - cache_module.LOCK_STALE_S - 1
    os.utime(lock, (old, old))
    assert cache_module._lock_is_stale(lock)
    assert _compute_once(str(tmp_path), 0.0) is True
