"""How every `python -m flame.<step>` reports bad input: one line and exit status 2.

    if __name__ == "__main__":
        run(main)

Bad input is a ValueError (RecordError, CountError, json errors), an OSError (a missing or
unreadable file) or a SystemExit carrying a message; it prints `error: <message>` (the message
names the file:line or option and how to fix it) and exits with status 2, as argparse does for
a bad command line. The traceback is printed above that line with --debug (taken out of argv
before the step parses it) or FLAME_DEBUG=1 in the environment, which the workflow sets so
that every rule's log keeps it. Any other exception is a bug: its traceback and status 1.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn

BAD_INPUT = (ValueError, OSError)
DEBUG_ENV = "FLAME_DEBUG"


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def error_line(err: BaseException) -> str:
    """`error: <message>`; a message that already starts with "error:" keeps it once."""
    text = str(err.code if isinstance(err, SystemExit) else err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.filename and err.strerror:  # "[Errno 2] ...: 'path'"
        text = f"{err.filename}: {err.strerror}"
    first, *rest = text.splitlines()
    text = " ".join([first, *(line.strip() for line in rest)])
    return text if text.startswith("error:") else f"error: {text}"


def fail(err: BaseException, debug: bool = False) -> NoReturn:
    if debug or debugging():
        traceback.print_exception(err, file=sys.stderr)
    print(error_line(err), file=sys.stderr, flush=True)
    sys.exit(2)


def run(main: Callable[..., Any], argv: list[str] | None = None) -> None:
    """Call main(argv) (argv None: sys.argv[1:], without --debug) and turn bad input into an
    error line and exit status 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    if debug:
        args = [a for a in args if a != "--debug"]
        if argv is None:
            sys.argv[1:] = args
    try:
        main(args if argv is not None else None)
    except SystemExit as err:
        if isinstance(err.code, str):  # sys.exit("message"): bad input found by the step
            fail(err, debug)
        raise
    except BAD_INPUT as err:
        fail(err, debug)
