"""Filters: which tasks (or stages) a directive applies to.

A filter maps tag names to the values it accepts:

    {"PP": 1, "PASS": "F"}          forward tasks of pipeline stage 1
    {"PP": [0, 2], "MB": "*"}       every task of stages 0 and 2
    {"EP": 1}                       tasks whose function runs EP region 1
    "*"                             everything

Keys are the annotation tags of the model (`PP`, `EP`, ... as
`piper.annotate` wrote them on the captured ops) plus two that every task
has: `PASS`, its kind, and `MB`, its microbatch. A value is an integer, a
list of integers, or `"*"` (any value, but the tag must be there). PASS
values are

    F    forward                      BI   input-gradient half of a backward
    B    backward (a whole one, or    BW   weight-gradient half
         both halves where split)     OPT  optimizer step

with `I` and `W` accepted for BI and BW. A task carries `PP` = its stage,
its PASS and MB (optimizer tasks run once per step and have no MB; the
label `0OPT0` still names one), and every other tag some op of its stage
function carries.

`Filter.matches` is the one matching rule every directive and pass uses.
The text form (used in pass options and printed schedules) is either an
action label, `1F3` = {"PP": 1, "PASS": "F", "MB": 3} (kinds F, B, I, W,
OPT), or a bracketed list, `[PP=1 PASS=F MB=0|1]`, `[*]` for everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from piper.diagnostics import PiperError

PASSES = ("F", "B", "BI", "BW", "OPT")
PASS_ALIASES = {"I": "BI", "W": "BW"}
# Which task kinds (the dist.task kinds) a PASS value selects.
KINDS_OF_PASS = {"F": ("F",), "B": ("B", "I", "W"), "BI": ("I",), "BW": ("W",), "OPT": ("OPT",)}
# The letter a task kind has in an action label (`0I3`).
LABEL_KIND = {"F": "F", "B": "B", "BI": "I", "BW": "W", "OPT": "OPT"}
TASK_KEYS = ("PASS", "MB")  # what every task carries besides its stage
STAGE_TAG = "PP"

ANY = "*"
_LABEL = re.compile(r"^(\d+)(F|B|I|W|OPT)(\d+)$", re.ASCII)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _ints(name: str, value) -> tuple[int, ...]:
    vals = value if isinstance(value, list | tuple) else [value]
    out = []
    for v in vals:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise PiperError(
                f"filter: {name} takes a non-negative integer, a list of them or \"*\"; got {v!r}")
        out.append(v)
    if not out:
        raise PiperError(f"filter: {name} has an empty list of values")
    return tuple(dict.fromkeys(out))


def _passes(value) -> tuple[str, ...]:
    vals = value if isinstance(value, list | tuple) else [value]
    out = []
    for v in vals:
        p = PASS_ALIASES.get(v, v) if isinstance(v, str) else v
        if p not in PASSES:
            raise PiperError(
                f"filter: PASS {v!r} is not one of {', '.join(PASSES)} (I and W are accepted "
                "for BI and BW)")
        out.append(p)
    if not out:
        raise PiperError("filter: PASS has an empty list of values")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Filter:
    """Tag name -> accepted values (a tuple) or ANY; no entry: no condition."""

    items: tuple[tuple[str, tuple | str], ...] = ()

    # ------------------------------------------------------------ building

    @staticmethod
    def of(spec) -> Filter:
        """A filter from a dict, `"*"`, an action label / text form, or a Filter."""
        if isinstance(spec, Filter):
            return spec
        if spec is None or spec == ANY:
            return Filter()
        if isinstance(spec, str):
            return parse_text(spec)
        if not isinstance(spec, Mapping):
            raise PiperError(
                f"filter: expected a dict such as {{\"PP\": 1, \"PASS\": \"F\"}} or \"*\"; "
                f"got {spec!r}")
        items = []
        for name, value in spec.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise PiperError(f"filter: tag name {name!r} is not an identifier")
            if value == ANY:
                items.append((name, ANY))
            elif name == "PASS":
                items.append((name, _passes(value)))
            else:
                items.append((name, _ints(name, value)))
        order = {STAGE_TAG: 0, "PASS": 1, "MB": 2}
        items.sort(key=lambda kv: (order.get(kv[0], 3), kv[0]))
        return Filter(tuple(items))

    @staticmethod
    def task(stage: int, pass_: str, mb: int) -> Filter:
        """The filter of exactly one task (what an action label stands for)."""
        return Filter((("PP", (stage,)), ("PASS", (PASS_ALIASES.get(pass_, pass_),)), ("MB", (mb,))))

    # ------------------------------------------------------------ reading

    def get(self, name: str):
        for k, v in self.items:
            if k == name:
                return v
        return None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.items)

    def kinds(self) -> tuple[str, ...] | None:
        """Task kinds the PASS entry selects (None: any kind)."""
        p = self.get("PASS")
        if p is None or p == ANY:
            return None
        return tuple(dict.fromkeys(k for x in p for k in KINDS_OF_PASS[x]))

    def exact(self) -> tuple[int, str, int] | None:
        """(stage, PASS, mb) when the filter names exactly one task by label."""
        if set(self.names) != {"PP", "PASS", "MB"}:
            return None
        pp, ps, mb = self.get("PP"), self.get("PASS"), self.get("MB")
        if ANY in (pp, ps, mb) or len(pp) != 1 or len(ps) != 1 or len(mb) != 1:
            return None
        return pp[0], ps[0], mb[0]

    def matches(self, stage: int, kind: str | None = None, mb: int | None = None,
                tags: Mapping[str, Iterable[int]] | None = None) -> bool:
        """Does a task (stage, dist kind F/B/I/W/OPT, microbatch, other tags)
        match? With kind/mb None (a stage, not a task) PASS and MB must be
        absent; `tags` maps each further tag name to the values the task's
        function carries."""
        for name, want in self.items:
            if name == STAGE_TAG:
                have: Iterable = (stage,)
            elif name == "PASS":
                if kind is None:
                    return False
                if want == ANY:
                    continue
                if kind not in self.kinds():
                    return False
                continue
            elif name == "MB":
                if mb is None:
                    return False
                have = (mb,)
            else:
                have = (tags or {}).get(name, ())
            if want == ANY:
                if not have:
                    return False
            elif not any(v in want for v in have):
                return False
        return True

    # ------------------------------------------------------------ printing

    def to_json(self):
        """The JSON value: "*" or a dict with single values unwrapped."""
        if not self.items:
            return ANY
        return {k: (v if v == ANY else (v[0] if len(v) == 1 else list(v))) for k, v in self.items}

    def text(self) -> str:
        """`1F3` for one task, else `[PP=1 PASS=F MB=0|1]` (`[*]`: everything)."""
        ex = self.exact()
        if ex is not None:
            return f"{ex[0]}{LABEL_KIND[ex[1]]}{ex[2]}"
        if not self.items:
            return "[*]"
        parts = [f"{k}={v if v == ANY else '|'.join(map(str, v))}" for k, v in self.items]
        return "[" + " ".join(parts) + "]"

    def __str__(self) -> str:
        import json

        return json.dumps(self.to_json())


ALL = Filter()


def parse_text(text: str) -> Filter:
    """A filter from its text form: `1F3`, `[PP=1 PASS=F]`, `[*]` or `*`."""
    t = text.strip()
    if t in (ANY, "[*]"):
        return ALL
    m = _LABEL.match(t)
    if m:
        return Filter.task(int(m.group(1)), m.group(2), int(m.group(3)))
    if t.startswith("[") and t.endswith("]"):
        spec: dict = {}
        for part in t[1:-1].split():
            name, eq, value = part.partition("=")
            if not eq or not value:
                raise PiperError(f"filter: '{part}' in '{text}' is not NAME=VALUE")
            if name in spec:
                raise PiperError(f"filter: '{text}' names {name} twice")
            if value == ANY:
                spec[name] = ANY
            elif name == "PASS":
                spec[name] = value.split("|")
            else:
                values = value.split("|")
                if not all(v.isascii() and v.isdigit() for v in values):
                    raise PiperError(
                        f"filter: '{part}' in '{text}': {name} takes integers joined by '|'")
                spec[name] = [int(v) for v in values]
        return Filter.of(spec)
    raise PiperError(
        f"filter: '{text}' is neither an action like 1F3 (stage, F/B/I/W/OPT, microbatch) nor "
        "a bracketed filter like [PP=1 PASS=F]")


def split_tokens(text: str) -> list[str]:
    """Whitespace-separated tokens of an order line; brackets keep their spaces."""
    out = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        start = pos
        while pos < len(text) and not text[pos].isspace():
            if text[pos] == "[":
                end = text.find("]", pos)
                if end < 0:
                    raise PiperError(f"filter: unclosed '[' in '{text[start:]}'")
                pos = end + 1
            else:
                pos += 1
        out.append(text[start:pos])
    return out


def check_names(f: Filter, known: Iterable[str], where: str) -> None:
    """Reject tag names the model does not have (PASS and MB always exist)."""
    known = set(known) | {STAGE_TAG, *TASK_KEYS}
    for name in f.names:
        if name not in known:
            have = ", ".join(sorted(known - {STAGE_TAG, *TASK_KEYS}))
            raise PiperError(
                f"{where}: filter {f} names tag '{name}', which the model does not have "
                f"(tags: PP{', ' + have if have else ''}; and PASS, MB)")


def function_tags(fn) -> dict[str, frozenset[int]]:
    """The values of every non-PP tag the ops of one function carry."""
    from piper.dialects.graph import AtenOp

    acc: dict[str, set[int]] = {}
    for inner in fn.body.walk():
        if isinstance(inner, AtenOp) and inner.tags is not None:
            for k, v in inner.tags.data.items():
                if k != STAGE_TAG:
                    acc.setdefault(k, set()).add(v.value.data)
    return {k: frozenset(v) for k, v in acc.items()}


_STAGE_FN = re.compile(r"^(F|B|I|W|OPT)(\d+)$")


def stage_tags(module) -> dict[int, dict[str, frozenset[int]]]:
    """Per stage (from its functions @F{s}, @B{s}, ...), the union of their tags."""
    from xdsl.dialects import func

    acc: dict[int, dict[str, frozenset[int]]] = {}
    for op in module.body.block.ops:
        if not isinstance(op, func.FuncOp):
            continue
        m = _STAGE_FN.match(op.sym_name.data)
        if not m:
            continue
        tags = acc.setdefault(int(m.group(2)), {})
        for k, v in function_tags(op).items():
            tags[k] = tags.get(k, frozenset()) | v
    return acc
