"""What the command-line tools share: usage errors and one way to end.

Every tool reports a bad input as one line on stderr and exits 1: its own
usage errors (`UsageError`, raised by `Parser` for argparse's too) as
`PROG: error: ...`, a PiperError rendered with its location, a file that
cannot be read as `PROG: error: STRERROR: FILE`. Anything else is a bug in
Piper: exit 2 with one line, or the traceback when PIPER_DEBUG is set.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 1 (argparse would print usage, exit 2)
        raise UsageError(message)


def run_main(prog: str, run: Callable[[list[str] | None], None],
             argv: list[str] | None = None) -> int:
    """Call `run(argv)` and turn what it raises into the tool's exit status."""
    from piper.diagnostics import PiperError  # lazy: start-up time

    try:
        run(argv)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except PiperError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{prog}: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in Piper, not in the input
        if os.environ.get("PIPER_DEBUG"):
            raise
        print(f"{prog}: internal error: {type(e).__name__}: {e} "
              "(set PIPER_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2
    return 0
