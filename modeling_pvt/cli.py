"""The one error policy of every command-line tool (`scripts/*.py`, `python -m modeling_pvt`): a user's mistake is
one `error: …` line on stderr and a non-zero exit, never a traceback, unless `--debug` or `PVT_DEBUG=1` asks for it.

    from modeling_pvt.cli import run_cli
    if __name__ == "__main__":
        sys.exit(run_cli(main))

`main(argv)` raises; `run_cli` decides what the user sees. Library errors already say what was wrong and how to fix
it (ValueError/TypeError/OSError and their subclasses DataError, ConversionError, PublishError), so they are printed
as they are; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager

from .hub import PublishError

DEBUG_FLAG = "--debug"
DEBUG_ENVIRONMENT_VARIABLE = "PVT_DEBUG"
DEBUG_HELP = f"show the full traceback of an error (or set {DEBUG_ENVIRONMENT_VARIABLE}=1)"
INTERRUPTED_EXIT_CODE = 130  # the shell's code for Ctrl-C
EXPECTED_ERRORS = (ValueError, TypeError, OSError, ImportError, PublishError)


class UsageError(Exception):
    """A command line that the argument parser rejected."""


def take_debug_flag(argv: list[str]) -> tuple[bool, list[str]]:
    """(whether a bare `--debug` was given or PVT_DEBUG is set, argv without it). A `--debug` followed by a value is
    left alone: Trainer's own `--debug underflow_overflow` has that name."""
    debug = os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "").lower() not in ("", "0", "false", "no")
    kept = []
    for index, argument in enumerate(argv):
        following = argv[index + 1] if index + 1 < len(argv) else None
        if argument == DEBUG_FLAG and (following is None or following.startswith("-")):
            debug = True
        else:
            kept.append(argument)
    return debug, kept


@contextmanager
def _usage_errors_raise():
    """argparse prints its usage block and exits on a bad flag; raise instead, so it becomes one line like the rest."""

    def error(parser, message):
        raise UsageError(f"{message}. Run {parser.prog} --help for the options.")

    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def run_cli(main: Callable[[list[str]], object], argv: list[str] | None = None, *, interrupted_hint: str = "") -> int:
    """Runs `main(argv)` under the error policy; returns the process exit code (`main`'s int result, else 0).

    `interrupted_hint` is added to the message printed on Ctrl-C (e.g. how to resume)."""
    debug, argv = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    try:
        with _usage_errors_raise():
            result = main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"error: interrupted (Ctrl-C). {interrupted_hint}".rstrip(), file=sys.stderr, flush=True)
        return INTERRUPTED_EXIT_CODE
    except (UsageError, *EXPECTED_ERRORS) as error:
        if debug:
            raise
        hint = "" if isinstance(error, UsageError) else f" (run with {DEBUG_FLAG} for the traceback)"
        print(f"error: {_one_line(error)}{hint}", file=sys.stderr, flush=True)
        return 2 if isinstance(error, UsageError) else 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
