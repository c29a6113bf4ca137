"""Checking a directive's options where the directive is made.

Every builder (`piper.place(...)`, ..., and the JSON form, which goes
through the same builders) checks each option's type and range here, so a
bad value is one PiperError naming the directive, the option, the value and
what is allowed: `split: n must be an integer >= 1, got '4'`. A bool is not
an integer, a float is not an integer, a string is not a number; names
(mesh axes, streams) are ASCII identifiers, because they are written into
pass options and IR text.
"""

from __future__ import annotations

import re

from piper.diagnostics import PiperError
from piper.tasks.filters import Filter

# Counts a plan is built from one by one: beyond these a typo (10**9) would
# allocate or loop for hours before any error.
MAX_COUNT = 4096

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


def integer(what: str, v, low: int = 0, high: int | None = None) -> int:
    """`v` as an int in [low, high]; `what` is "directive: option"."""
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise PiperError(f"{what} must be an integer >= {low}, got {v!r}")
    if high is not None and v > high:
        raise PiperError(f"{what} must be at most {high}, got {v}")
    return v


def identifier(what: str, v) -> str:
    """A mesh axis or stream name: an ASCII identifier."""
    if not isinstance(v, str) or not _NAME.fullmatch(v):
        raise PiperError(f"{what} must be a name (ASCII letters, digits and _, not starting "
                         f"with a digit), got {v!r}")
    return v


def choice(what: str, v, allowed) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise PiperError(f"{what} must be one of {', '.join(map(repr, allowed))}, got {v!r}")
    return v


def flag(what: str, v) -> bool:
    if not isinstance(v, bool):
        raise PiperError(f"{what} must be true or false, got {v!r}")
    return v


def filter_of(what: str, spec) -> Filter:
    """Filter.of(spec) with errors naming the directive and option."""
    try:
        return Filter.of(spec)
    except PiperError as e:
        raise PiperError(f"{what}: {e.message.removeprefix('filter: ')}") from None

