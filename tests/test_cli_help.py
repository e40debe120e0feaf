"""`clisc --help` and every subcommand's help: each option says what it does and its default."""
from __future__ import annotations

import argparse

from clisc.cli import FIRST_STEPS, build_parser


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, path + (name,))
        elif action.option_strings and action.dest not in ("help", "version"):
            yield path, action


def test_every_option_has_a_help_line_naming_its_default() -> None:
    missing = [(" ".join(path), action.option_strings[0]) for path, action in _options(build_parser())
               if not action.help or "default" not in action.help.lower()]
    assert not missing, missing
    helps = {(" ".join(path), action.option_strings[0]): action.help for path, action in _options(build_parser())}
    assert helps[("run", "--seeds")].endswith("(default: 0)")
    assert helps[("run", "--profile")].endswith("(default: paper)")
    assert helps[("experiment", "--profile")].endswith("(default: the spec's profile, else paper)")
    assert helps[("ui", "--port")].endswith("(default: 5000)") and "(default: 127.0.0.1" in helps[("ui", "--host")]
    assert helps[("dashboard", "--port")].endswith("(default: 8080)")
    assert helps[("run", "--skip-bad")].endswith("(default: off)")


def test_top_help_ends_with_the_first_three_commands() -> None:
    text = build_parser().format_help()
    assert text.rstrip().endswith(FIRST_STEPS.splitlines()[-1].rstrip())
    steps = [line.split()[1] for line in FIRST_STEPS.splitlines()[1:] if line.startswith("  clisc ")]
    assert steps == ["data", "experiment", "ui"]


def test_run_help_says_it_does_not_log_to_mlflow() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "does not log to MLflow" in " ".join(sub.choices["run"].format_help().split())
