"""``clisc dashboard``: optuna-dashboard on a study's storage, on the loopback interface."""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from clisc.errors import CliscError

INSTALL_HINT = "pip install -e '.[ops]' (or: pip install optuna-dashboard)"


def dashboard_command(storage: str, host: str = "127.0.0.1", port: int = 8080) -> list[str]:
    """argv of optuna-dashboard serving ``storage`` (an RDB URL or a journal file) on ``host:port``."""
    exe = Path(sys.executable).with_name("optuna-dashboard")
    program = str(exe) if exe.is_file() else shutil.which("optuna-dashboard")
    if program is None:
        raise CliscError(f"optuna-dashboard is not installed: {INSTALL_HINT}")
    kind = [] if "://" in storage else ["--storage-class", "JournalFileStorage"]
    return [program, storage, *kind, "--host", host, "--port", str(port)]


def find_storage(study: str | None, storage: str | None, folder: Path = Path("optuna")) -> str:
    """``--storage`` as given; else the journal file of ``--study``; else the only journal under ``folder``."""
    from clisc.search.study import storage_spec

    if storage or study:
        spec = storage_spec(storage, study or "")
        if "://" not in spec and not Path(spec).is_file():
            raise CliscError(f"{spec}: no Optuna study journal here (run `clisc search` first, or pass --storage)")
        return spec
    journals = sorted(folder.glob("*.log"))
    if len(journals) != 1:
        found = ", ".join(p.stem for p in journals) or "none"
        raise CliscError(f"{folder.resolve()}: pass --study NAME or --storage URL (studies found: {found})")
    return str(journals[0].resolve())


def _dashboard(args: argparse.Namespace) -> int:
    from clisc.search.study import storage_label

    argv = dashboard_command(find_storage(args.study, args.storage), host=args.host, port=args.port)
    print(f"optuna-dashboard for {storage_label(argv[1])} at http://{args.host}:{args.port} (Ctrl-C stops it)",
          flush=True)
    try:
        return subprocess.run(argv, check=False).returncode
    except KeyboardInterrupt:
        return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``clisc dashboard``."""
    parser = subparsers.add_parser("dashboard", help="browse Optuna studies in optuna-dashboard (loopback only)")
    parser.add_argument("--study", default=None, help="study name (its journal under optuna/)")
    parser.add_argument("--storage", default=None, help="journal file or RDB URL (as given to clisc search)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port to serve on (default: 8080)")
    parser.set_defaults(func=_dashboard)
