"""Faults that must lose nothing: an unreachable tracking store, runs left RUNNING by a killed process.

- :func:`check_tracking_store` probes an MLflow server (``/health``) or a database URL with a short
  timeout before any training starts, so a store that is down costs one line, not a run's work.
- Runs carry an owner tag (``host@pid``); :func:`close_orphaned_runs` marks RUNNING runs whose owner
  process on this host is gone as KILLED (a ``kill -9`` leaves them RUNNING forever otherwise).
"""
from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import mlflow
from mlflow.entities import ViewType

from clisc.errors import CliscError

OWNER_TAG = "clisc.owner"
PROBE_TIMEOUT_S = 5.0
_DB_SCHEMES = ("postgresql", "mysql", "mssql")


def owner() -> str:
    """``<hostname>@<pid>`` of this process."""
    return f"{socket.gethostname()}@{os.getpid()}"


def owner_is_dead(tag: str | None) -> bool:
    """True when ``tag`` names a process of this host that no longer exists (other hosts: unknown, False)."""
    host, _, pid = (tag or "").rpartition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _unreachable(uri: str, reason: str) -> CliscError:
    return CliscError(f"MLflow tracking store {uri} is unreachable ({reason}); nothing was run. Start it, or log "
                      "locally with --tracking-uri sqlite:///mlflow.db (or unset MLFLOW_TRACKING_URI)")


def check_tracking_store(uri: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """One-line :class:`CliscError` unless ``uri`` answers within ``timeout`` seconds.

    ``http(s)://``: ``GET <uri>/health`` of the tracking server. ``postgresql://``, ``mysql://``...:
    a database connection. ``sqlite:///``: the schema is created (or migrated) now, under a lock
    (:func:`init_sqlite_store`). Other local stores (``file:``, paths) need nothing.
    """
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme == "sqlite":
        init_sqlite_store(uri)
    elif scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
                if response.status != 200:
                    raise _unreachable(uri, f"/health answered {response.status}")
        except (urllib.error.URLError, OSError) as err:
            raise _unreachable(uri, str(getattr(err, "reason", err))) from None
    elif scheme in _DB_SCHEMES:
        import sqlalchemy

        connect_args = {"connect_timeout": int(max(1, timeout))} if scheme == "postgresql" else {}
        try:
            engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
            with engine.connect():
                pass
            engine.dispose()
        except Exception as err:  # driver missing, refused, timeout, authentication: all one line
            raise _unreachable(_mask(uri), str(err).strip().splitlines()[0] if str(err).strip() else
                               type(err).__name__) from None


def init_sqlite_store(uri: str) -> None:
    """Create or migrate a local SQLite MLflow store while holding a lock on its folder: two processes
    opening a new store at once would otherwise both run MLflow's schema migration, and one fails."""
    import fcntl

    path = uri[len("sqlite:///"):]
    if not path or path.startswith(":memory:"):
        return
    folder = Path(path).resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    finally:
        os.close(fd)  # releases the lock


def _mask(uri: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return uri.split("@")[-1]


def close_orphaned_runs(client: mlflow.MlflowClient, experiment_ids: Iterable[str],
                        filter_string: str = "") -> list[str]:
    """Mark KILLED the RUNNING runs (matching ``filter_string``) whose owner process on this host is gone."""
    closed = []
    query = " and ".join(f for f in ("attributes.status = 'RUNNING'", filter_string) if f)
    for run in client.search_runs(list(experiment_ids), query, ViewType.ACTIVE_ONLY, 1000):
        if owner_is_dead(run.data.tags.get(OWNER_TAG)):
            client.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
    return closed
