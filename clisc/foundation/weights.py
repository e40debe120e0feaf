"""Pretrained-weights registry: where each file comes from, how to verify it, where it is cached.

``resolve_weights`` finds a file in this order: an explicit path, the cache directory, a download from
the official URL (into a temporary file, verified, then renamed into place). Every file is checked
against its published SHA-256 (or the hash prefix torchvision puts in its file names); a verified hash
is remembered in a ``<file>.sha256`` sidecar keyed by size and mtime, so multi-GB files are hashed once.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from clisc.cache import atomic_write_bytes
from clisc.errors import WeightsError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 30.0
SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM2_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
MEDSAM_PAGE = "https://github.com/bowang-lab/MedSAM#model-checkpoints"
NO_CHECKSUM = "none published: the file's sha256 is recorded with each run, not verified"


@dataclass(frozen=True)
class WeightSpec:
    """One downloadable weights file and how to verify it (``sha256_prefix``: torchvision style)."""

    name: str
    filename: str
    url: str
    sha256: str | None
    size_bytes: int | None
    sha256_prefix: str | None = None
    # False where the publisher gives no direct file link (a shared-drive folder): place the file by hand
    downloadable: bool = True
    # where the checksum comes from, or why there is none (shown by ``clisc weights``)
    checksum_source: str = "published by the model's authors"


@dataclass(frozen=True)
class WeightsRecord:
    """Which weights a model was built from; ``sha256`` is ``"random"`` for a random init."""

    name: str
    sha256: str

    @property
    def tag(self) -> str:
        return f"{self.name}={self.sha256}"


WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec("sam_vit_b", "sam_vit_b_01ec64.pth", SAM_BASE_URL + "sam_vit_b_01ec64.pth",
                   "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375042383),
        WeightSpec("sam_vit_l", "sam_vit_l_0b3195.pth", SAM_BASE_URL + "sam_vit_l_0b3195.pth",
                   "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1249524607),
        WeightSpec("sam_vit_h", "sam_vit_h_4b8939.pth", SAM_BASE_URL + "sam_vit_h_4b8939.pth",
                   "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2564550879),
        WeightSpec("resnet50_imagenet1k_v1", "resnet50-0676ba61.pth",
                   "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                   None, None, sha256_prefix="0676ba61", checksum_source="torchvision's hash prefix in the name"),
        # MedSAM (Ma et al., Nat. Commun. 2024): SAM ViT-B fine-tuned on medical boxes; its README links a
        # shared-drive folder, no direct file URL, size or checksum
        WeightSpec("medsam_vit_b", "medsam_vit_b.pth", MEDSAM_PAGE, None, None, downloadable=False,
                   checksum_source=NO_CHECKSUM),
        # SAM 2.1 (sam2 package, checkpoints of 2024-09-28): sam2's download script names no size or checksum
        *(WeightSpec(f"sam2.1_hiera_{size}", f"sam2.1_hiera_{size}.pt", f"{SAM2_BASE_URL}sam2.1_hiera_{size}.pt",
                     None, None, checksum_source=NO_CHECKSUM)
          for size in ("tiny", "small", "base_plus", "large")),
    )
}


def default_cache_dir() -> Path:
    """``$CLISC_WEIGHTS_DIR`` if set, else ``~/.cache/clisc/weights``."""
    env = os.environ.get("CLISC_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "clisc" / "weights"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def cached_sha256(path: str | Path) -> str:
    """SHA-256 of ``path``, reusing its sidecar when size and mtime are unchanged (else rehash + store)."""
    path = Path(path)
    stat = path.stat()
    sidecar = _sidecar(path)
    try:
        memo = json.loads(sidecar.read_text())
        if memo["size"] == stat.st_size and memo["mtime_ns"] == stat.st_mtime_ns:
            return str(memo["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = sha256_file(path)
    memo = {"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        atomic_write_bytes(sidecar, json.dumps(memo).encode())
    except OSError as e:  # a read-only location only costs a rehash next time
        log.debug("cannot write %s: %s", sidecar, e)
    return digest


def _expected(spec: WeightSpec) -> str | None:
    return spec.sha256 or spec.sha256_prefix


def _check_file(spec: WeightSpec, path: Path, shown: str | None = None) -> str:
    """Verify size and hash of ``path`` (called ``shown`` in errors) against ``spec``; return its SHA-256."""
    shown = shown or str(path)
    size = path.stat().st_size
    if spec.size_bytes is not None and size != spec.size_bytes:
        raise WeightsError(f"{shown}: {size} bytes, expected {spec.size_bytes} for {spec.name} "
                           f"(incomplete or wrong file); replace it with {spec.url}")
    digest = cached_sha256(path)
    expected = _expected(spec)
    if expected is not None and not digest.startswith(expected):
        raise WeightsError(f"{shown}: sha256 {digest} does not match {spec.name}'s expected {expected}; "
                           f"replace it with {spec.url}")
    return digest


def weight_spec(name: str) -> WeightSpec:
    """The registry entry ``name``, or WeightsError listing the known names."""
    try:
        return WEIGHTS[name]
    except KeyError:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(sorted(WEIGHTS))}") from None


def _download_reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _download(spec: WeightSpec, target: Path, progress: bool) -> None:
    """Fetch ``spec.url`` into a temp file next to ``target``, verify it, rename it into place."""
    tmp = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
    log.info("downloading %s to %s", spec.url, target)
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                    open(tmp, "wb") as out, \
                    tqdm(total=int(response.headers.get("Content-Length") or 0) or spec.size_bytes,
                         unit="B", unit_scale=True, unit_divisor=1024, desc=spec.filename,
                         disable=not progress) as bar:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
            raise WeightsError(f"cannot download {spec.url} ({_download_reason(e)}); "
                               f"place {spec.filename} at {target} or pass its path") from None
        except OSError as e:  # after the network errors above, which are OSErrors too
            raise WeightsError(f"cannot write into {target.parent} ({e.strerror or e}); set "
                               f"CLISC_WEIGHTS_DIR to a writable folder or pass the path of "
                               f"{spec.filename}") from None
        _check_file(spec, tmp, shown=f"download of {spec.url} (deleted)")  # finally removes it
        os.replace(tmp, target)
        os.replace(_sidecar(tmp), _sidecar(target))
    finally:
        for leftover in (tmp, _sidecar(tmp)):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


def resolve_weights(name: str, path: str | Path | None = None, cache_dir: str | Path | None = None,
                    download: bool = True, progress: bool = True) -> Path:
    """Local path of verified weights ``name``: explicit ``path`` -> cache dir -> download.

    Raises WeightsError (one line) for a missing/corrupt file or a failed download.
    """
    spec = weight_spec(name)
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: no such file (weights {spec.name}, official source {spec.url})")
        _check_file(spec, path)
        return path
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = target / spec.filename
    if target.is_file():
        try:
            _check_file(spec, target)
        except WeightsError as e:
            raise WeightsError(f"{e} (cached copy: delete it to download again)") from None
        return target
    if not download or not spec.downloadable:
        if not spec.downloadable:
            raise WeightsError(f"{spec.filename} not found at {target}; {spec.name} has no direct download: "
                               f"get it from {spec.url} and place it there or pass its path")
        raise WeightsError(f"{spec.filename} not found at {target}; place it there, pass its path, "
                           f"or allow the download from {spec.url}")
    _download(spec, target, progress)
    return target
