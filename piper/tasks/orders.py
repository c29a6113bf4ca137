"""The order text grammar, the one every order is written in.

An order says, per pipeline rank, the sequence of its entries:

    rank0: 0F0 0F1 [PP=0 PASS=B] 0F2&1B0    # a comment
    rank1: ...

Ranks are separated by newlines or `;`; `#` starts a comment. An entry is a
filter (piper/tasks/filters.py: `0F3`, `[PP=1 PASS=F MB=2|3]`) or two of them
joined by `&`, an overlapped pair. The `order` directive and pass read
entries as filters (`parse_orders`); a schedule's actions are the exact
entries (`0F3`), read by piper/tasks/schedules.py through `rank_lines`.
"""

from __future__ import annotations

import re

from piper.diagnostics import PiperError
from piper.tasks.filters import Filter, split_tokens

# An order: per rank, its entries; an entry is one filter or an overlapped pair.
Orders = dict[int, list[tuple[Filter, ...]]]

_RANK = re.compile(r"rank\s*([0-9]+)", re.ASCII)


def rank_lines(text: str, what: str = "order") -> dict[int, list[str]]:
    """The tokens of each `rankN:` line (brackets keep their spaces); an
    entry `a&b` stays one token. Errors name the line."""
    out: dict[int, list[str]] = {}
    for line in re.split(r"[;\n]", text):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        head, sep, rest = line.partition(":")
        m = _RANK.fullmatch(head.strip())
        if not sep or not m:
            raise PiperError(f"{what}: expected 'rankN: entries', got '{line}'")
        rank = int(m.group(1))
        if rank in out:
            raise PiperError(f"{what}: rank {rank} is given two orders")
        out[rank] = split_tokens(rest)
    if not out:
        raise PiperError(f"{what}: no 'rankN: ...' line in the order text")
    return out


def split_pair(tok: str) -> list[str]:
    """`a&b` -> [a, b]; a `&` inside brackets is part of its filter."""
    parts, depth, cur = [], 0, ""
    for ch in tok:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "&" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def parse_entry(tok: str) -> tuple[Filter, ...]:
    """One entry: a filter, or an overlapped pair of two."""
    parts = split_pair(tok)
    if len(parts) > 2:
        raise PiperError(f"order: an overlapped pair has two tasks, got '{tok}'")
    return tuple(Filter.of(p) for p in parts)


def parse_orders(text: str) -> Orders:
    """Each rank's entries, as filters."""
    out: Orders = {}
    for rank, toks in rank_lines(text).items():
        try:
            out[rank] = [parse_entry(t) for t in toks]
        except PiperError as e:
            raise PiperError(f"order: rank {rank}: {e.message}") from None
    return out


def format_orders(orders: Orders) -> str:
    """The text `parse_orders` reads back to the same orders."""
    return "; ".join(f"rank{r}: " + " ".join("&".join(f.text() for f in e) for e in orders[r])
                     for r in sorted(orders))

