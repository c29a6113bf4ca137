"""User-facing errors: one message with a location, never a raw traceback.

Every error a user can cause (bad IR, bad directive, shapes that do not
divide, an unsupported op during capture) is raised as PiperError with the
most precise location known: a source line:column for parsed IR, the op's
`loc(...)` (module path) for captured IR, a directive's position in the
strategy list for directives.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar


class PiperError(Exception):
    """`op`: the IR op the error is about, when there is one and no location
    was given; a tool that knows where ops were parsed from (piper-opt)
    turns it into file:line:col."""

    def __init__(self, message: str, location: str | None = None, context: str = "",
                 op=None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.context = context
        self.op = op

    def render(self) -> str:
        head = f"{self.location}: error: {self.message}" if self.location else (
            f"error: {self.message}"
        )
        return head + ("\n" + self.context if self.context else "")

    def __str__(self) -> str:
        return self.render()


# Where the ops being worked on were parsed (piper-opt sets it while its
# passes run), for op_location calls that pass no spans of their own.
_SPANS: ContextVar[dict | None] = ContextVar("piper_spans", default=None)


@contextmanager
def parsed_from(spans: dict):
    """Inside: op_location() locates ops by these parse spans (op -> span),
    so a pass's errors point at file:line:col without knowing the file."""
    token = _SPANS.set(spans)
    try:
        yield
    finally:
        _SPANS.reset(token)


def op_location(op, spans: dict | None = None) -> str:
    """Where an op stands: its source position if parsed, else (an op a pass
    made inside a parsed one) the position of the nearest enclosing op that
    was parsed, else its loc(...). `spans` defaults to those of
    `parsed_from`."""
    if spans is None:
        spans = _SPANS.get()
    if spans and op in spans:
        return str(spans[op].get_location())
    from xdsl.dialects.builtin import NameLoc, UnknownLoc

    loc = getattr(op, "location", None)
    if spans:
        parent = op.parent_op()
        while parent is not None and parent not in spans:
            parent = parent.parent_op()
        if parent is not None:
            where = str(spans[parent].get_location())
            if parent.parent_op() is None and isinstance(loc, NameLoc):
                # only the module was parsed around it: say which op, by its source
                where += f' ({op.name} at loc("{loc.desc.data}"))'
            return where

    if isinstance(loc, NameLoc):
        return f'{op.name} at loc("{loc.desc.data}")'
    if loc is not None and not isinstance(loc, UnknownLoc):
        return f"{op.name} at {loc}"
    return op.name


def parse_failure(e) -> PiperError:
    """An xDSL ParseError as one PiperError: file:line:col, message, the line."""
    msg = e.msg
    if msg.strip() == "in block definition":
        # The parser wanted an op, a block label or the '}' closing a region.
        at_end = e.span.start >= len(e.span.input.content.rstrip())
        msg = ("unexpected end of input: a region is not closed with '}'" if at_end
               else "expected an operation, a block label or '}' closing the region")
    elif msg == "Expected suffix identifier after {first_char}":  # xDSL's unformatted message
        msg = f"expected a name after '{e.span.input.content[e.span.start]}'"
    elif msg.startswith("End of file reached before closing string literal"):
        # the string pattern stops at the end of the line, not of the file
        msg = "a string literal is not closed on its line (a missing '\"')"
    lines = e.span.print_with_context(msg).splitlines()[1:]
    while lines and lines[-1].strip() == msg.strip():  # said once, in the head
        lines.pop()
    return PiperError(msg, str(e.span.get_location()), "\n".join(lines))


def first_line(e: Exception) -> str:
    """The message of an xDSL exception without the IR it may print."""
    text = str(e).strip()
    # xDSL sometimes prints the whole module with the message; keep the
    # message, and the reason on the next line of one that ends in ':'.
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if line and not line.startswith(("^", "//", "%", '"', "builtin", "}")):
            if line.endswith(":") and i + 1 < len(lines) and lines[i + 1]:
                return f"{line} {lines[i + 1]}"
            return line
    return lines[0] if text else type(e).__name__


def pass_crash(e: Exception, pass_name: str, spans: dict, fallback: str) -> PiperError:
    """An unexpected exception inside a pass (a bug in Piper) as one located
    line: `pass NAME failed on OP: ExcType: message`. The op is the one the
    innermost frame of the traceback that holds a parsed op (or an op made
    inside one) was working on; without one, the module, and `fallback`
    locates it."""
    from xdsl.ir import Operation  # lazy: this layer itself loads without xdsl
    from xdsl.passes import ModulePass  # lazy: this layer itself loads without xdsl

    op = None
    tb = e.__traceback__
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    inner = next((f.f_locals["self"] for f in reversed(frames)
                  if isinstance(f.f_locals.get("self"), ModulePass)), None)
    if inner is not None and inner.name != pass_name:  # a pass another one runs
        pass_name = f"{inner.name} (in {pass_name})"
    for frame in reversed(frames):  # innermost first
        local = frame.f_locals
        candidates = [local["op"]] if isinstance(local.get("op"), Operation) else []
        candidates += [v for v in local.values() if isinstance(v, Operation)]
        for v in candidates:
            if v in spans or any(p in spans for p in _ancestors(v)):
                op = v
                break
        if op is not None:
            break
    text = " ".join(str(e).split()) or "(no message)"
    if len(text) > 300:
        text = text[:300] + "..."
    on = op.name if op is not None else "builtin.module"
    where = op_location(op, spans) if op is not None else fallback
    return PiperError(f"pass {pass_name} failed on '{on}': {type(e).__name__}: {text}", where)


def _ancestors(op):
    parent = op.parent_op()
    while parent is not None:
        yield parent
        parent = parent.parent_op()
