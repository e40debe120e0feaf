"""The ``clisc`` command. Each area adds its own subcommands through a ``register(subparsers)``
function in its ``cli`` module, listed in ``COMMAND_MODULES``; this file only dispatches and turns
:class:`~clisc.errors.CliscError` into one line on stderr."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from clisc import __version__
from clisc.errors import CliscError

COMMAND_MODULES = (
    "clisc.data.cli",  # clisc data synth|check|split|preprocess
    "clisc.evaluation.cli",  # clisc eval
    "clisc.pipeline.cli",  # clisc run, experiment, search, weights
    "clisc.reporting.cli",  # clisc report, clisc ui
    "clisc.search.cli",  # clisc dashboard
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clisc", description="CLISC reproduction suite")
    parser.add_argument("--version", action="version", version=f"clisc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # area not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliscError as err:
        print(f"clisc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clisc: interrupted; finished stages are kept in the cache", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
