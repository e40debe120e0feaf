"""Weights registry: download from a local HTTP server, cache, checksum refusal, offline errors, sidecar."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

from clisc.errors import WeightsError
from clisc.foundation import weights
from clisc.foundation.weights import WEIGHTS, WeightSpec, WeightsRecord, resolve_weights

BLOB = bytes(range(256)) * 40  # 10240 bytes
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


class _CountingServer:
    """A static file server on 127.0.0.1 that counts the GET requests it answers."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_CountingServer]:
    root = tmp_path / "served"
    root.mkdir()
    (root / "blob.bin").write_bytes(BLOB)
    srv = _CountingServer(root)
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/blob.bin"


def _register(monkeypatch: pytest.MonkeyPatch, url: str, **overrides: object) -> WeightSpec:
    spec = WeightSpec("test_blob", "blob.bin", url, BLOB_SHA, len(BLOB))
    spec = dataclasses.replace(spec, **overrides)
    monkeypatch.setitem(WEIGHTS, spec.name, spec)
    return spec


def test_download_renames_into_cache_then_reuses_it_offline(server, monkeypatch, tmp_path, capsys):
    spec = _register(monkeypatch, server.url + "blob.bin")
    cache = tmp_path / "cache"
    path = resolve_weights(spec.name, cache_dir=cache)
    assert path == cache / "blob.bin" and path.read_bytes() == BLOB
    assert sorted(p.name for p in cache.iterdir()) == ["blob.bin", "blob.bin.sha256"]  # no .part left
    assert "blob.bin" in capsys.readouterr().err  # tqdm progress bar, labelled with the file name
    assert server.requests == ["/blob.bin"]
    _register(monkeypatch, _closed_port_url())  # the network is gone: the cache still answers
    assert resolve_weights(spec.name, cache_dir=cache) == path
    assert server.requests == ["/blob.bin"]


def test_cache_dir_defaults_to_env(server, monkeypatch, tmp_path):
    monkeypatch.setenv("CLISC_WEIGHTS_DIR", str(tmp_path / "env-cache"))
    assert weights.default_cache_dir() == tmp_path / "env-cache"
    spec = _register(monkeypatch, server.url + "blob.bin")
    assert resolve_weights(spec.name, progress=False) == tmp_path / "env-cache" / "blob.bin"
    monkeypatch.delenv("CLISC_WEIGHTS_DIR")
    assert weights.default_cache_dir() == Path.home() / ".cache" / "clisc" / "weights"


@pytest.mark.parametrize("override, shown", [
    ({"sha256": "0" * 64}, BLOB_SHA),
    ({"sha256": None, "sha256_prefix": "deadbeef"}, BLOB_SHA),
    ({"size_bytes": len(BLOB) + 1}, f"{len(BLOB)} bytes"),
], ids=["sha256", "prefix", "size"])
def test_mismatching_download_is_refused_and_deleted(server, monkeypatch, tmp_path, override, shown):
    spec = _register(monkeypatch, server.url + "blob.bin", **override)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as err:
        resolve_weights(spec.name, cache_dir=cache, progress=False)
    message = str(err.value)
    assert "\n" not in message and spec.url in message and shown in message and "deleted" in message
    assert list(cache.iterdir()) == []


def test_hash_prefix_accepts_the_matching_file(server, monkeypatch, tmp_path):
    spec = _register(monkeypatch, server.url + "blob.bin", sha256=None, sha256_prefix=BLOB_SHA[:8])
    assert resolve_weights(spec.name, cache_dir=tmp_path, progress=False).read_bytes() == BLOB


def test_explicit_path_is_verified(monkeypatch, tmp_path):
    spec = _register(monkeypatch, _closed_port_url())
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(BLOB)
    bad.write_bytes(BLOB[::-1])
    assert resolve_weights(spec.name, path=good) == good
    with pytest.raises(WeightsError, match=f"{bad}: sha256 {hashlib.sha256(BLOB[::-1]).hexdigest()} "
                                           f"does not match test_blob's expected {BLOB_SHA}"):
        resolve_weights(spec.name, path=bad)
    assert bad.exists()  # a user's own file is refused, never deleted
    with pytest.raises(WeightsError, match="no such file"):
        resolve_weights(spec.name, path=tmp_path / "absent.bin")


def test_corrupt_cached_copy_is_refused(monkeypatch, tmp_path):
    spec = _register(monkeypatch, _closed_port_url(), size_bytes=None)
    (tmp_path / "blob.bin").write_bytes(b"truncated")
    with pytest.raises(WeightsError, match="delete it to download again"):
        resolve_weights(spec.name, cache_dir=tmp_path)


@pytest.mark.parametrize("where", ["closed port", "missing file"])
def test_failed_download_names_url_and_where_to_place_the_file(server, monkeypatch, tmp_path, where):
    url = _closed_port_url() if where == "closed port" else server.url + "absent.bin"
    spec = _register(monkeypatch, url)
    with pytest.raises(WeightsError) as err:
        resolve_weights(spec.name, cache_dir=tmp_path / "cache", progress=False)
    message = str(err.value)
    assert message.startswith(f"cannot download {url} (") and "\n" not in message
    assert f"place blob.bin at {tmp_path / 'cache' / 'blob.bin'} or pass its path" in message
    assert ("HTTP 404" in message) == (where == "missing file")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_unwritable_cache_dir_is_named(server, monkeypatch, tmp_path):
    spec = _register(monkeypatch, server.url + "blob.bin")
    (tmp_path / "not-a-dir").write_text("a file where the cache folder should be")
    expected = f"cannot write into {tmp_path / 'not-a-dir'} .*; set CLISC_WEIGHTS_DIR"
    with pytest.raises(WeightsError, match=expected):
        resolve_weights(spec.name, cache_dir=tmp_path / "not-a-dir", progress=False)


def test_no_download_and_unknown_name(monkeypatch, tmp_path):
    spec = _register(monkeypatch, _closed_port_url())
    with pytest.raises(WeightsError, match=f"blob.bin not found at {tmp_path / 'blob.bin'}"):
        resolve_weights(spec.name, cache_dir=tmp_path, download=False)
    with pytest.raises(WeightsError, match="unknown weights 'sam_vit_x'; known: .*sam_vit_b"):
        resolve_weights("sam_vit_x")


def test_sidecar_skips_rehashing_until_the_file_changes(monkeypatch, tmp_path):
    calls: list[Path] = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p: calls.append(Path(p)) or real(p))
    path = tmp_path / "w.bin"
    path.write_bytes(BLOB)
    assert weights.cached_sha256(path) == BLOB_SHA
    assert weights.cached_sha256(path) == BLOB_SHA
    assert len(calls) == 1 and (tmp_path / "w.bin.sha256").is_file()
    path.write_bytes(BLOB[::-1])
    os.utime(path, ns=(1, 1))  # new content and mtime: the memo no longer applies
    assert weights.cached_sha256(path) == hashlib.sha256(BLOB[::-1]).hexdigest()
    assert len(calls) == 2


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_registry_entries_are_consistent(name):
    spec = WEIGHTS[name]
    assert spec.name == name and urlparse(spec.url).scheme == "https"
    assert not spec.downloadable or spec.url.rsplit("/", 1)[1] == spec.filename
    # a checksum, or the statement that none is published (never an invented one)
    assert spec.sha256 is not None or spec.sha256_prefix is not None or "none published" in spec.checksum_source
    if spec.sha256_prefix:  # torchvision: the prefix is part of the file name
        assert spec.filename.rsplit("-", 1)[1].startswith(spec.sha256_prefix)
    if spec.sha256:
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0


def test_record_tag():
    assert WeightsRecord("sam_vit_b", "ec2d").tag == "sam_vit_b=ec2d"
    assert WeightsRecord("clip:tiny", "random").tag == "clip:tiny=random"


def test_only_the_sam_checksums_of_record_are_in_the_registry():
    """SAM ViT-B/L/H publish sizes + sha256 (docs/METHOD.md); MedSAM and SAM 2.1 publish none."""
    assert {n for n, spec in WEIGHTS.items() if spec.sha256} == {"sam_vit_b", "sam_vit_l", "sam_vit_h"}
    for name in ("medsam_vit_b", "sam2.1_hiera_tiny", "sam2.1_hiera_small", "sam2.1_hiera_base_plus",
                 "sam2.1_hiera_large"):
        assert WEIGHTS[name].sha256 is None and WEIGHTS[name].size_bytes is None


def test_medsam_has_no_direct_download(tmp_path):
    """MedSAM's authors share a drive folder: the one-line error names the page and the path."""
    with pytest.raises(WeightsError, match="medsam_vit_b.pth not found at .* no direct download: get it from "
                                           "https://github.com/bowang-lab/MedSAM"):
        weights.resolve_weights("medsam_vit_b", cache_dir=tmp_path)
