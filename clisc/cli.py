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


FIRST_STEPS = """first three commands (what `make demo` and `make ui` do; CPU, minutes):
  clisc data synth --out data/synthetic               a small synthetic BraTS-layout dataset
  clisc experiment table1 table2 --data data/synthetic --profile demo --weights random
                                                      Table 1 and 2, every run logged to MLflow (./mlflow.db)
  clisc ui                                            browse the runs (then `clisc report` writes reports/)"""


def _default_text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option of ``parser`` and its subcommands says its default in its help (``(default: X)``,
    ``off`` for a flag) unless its help already names it; an option without help gets one saying so."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                show_defaults(sub)
            continue
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest in ("help", "version"):
            continue
        help_text = action.help or ""
        if "default" in help_text.lower():
            continue
        default = "off" if isinstance(action, argparse._StoreTrueAction) else _default_text(action.default)
        action.help = f"{help_text} (default: {default})".strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clisc", description="CLISC reproduction suite", epilog=FIRST_STEPS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    show_defaults(parser)
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
