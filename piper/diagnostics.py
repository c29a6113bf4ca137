"""User-facing errors: one message with a location, never a raw traceback.

Every error a user can cause (bad IR, bad directive, shapes that do not
divide, an unsupported op during capture) is raised as PiperError with the
most precise location known: a source line:column for parsed IR, the op's
`loc(...)` (module path) for captured IR, a directive's position in the
strategy list for directives.
"""

from __future__ import annotations


class PiperError(Exception):
    def __init__(self, message: str, location: str | None = None, context: str = ""):
        super().__init__(message)
        self.message = message
        self.location = location
        self.context = context

    def render(self) -> str:
        head = f"{self.location}: error: {self.message}" if self.location else (
            f"error: {self.message}"
        )
        return head + ("\n" + self.context if self.context else "")

    def __str__(self) -> str:
        return self.render()


def op_location(op, spans: dict | None = None) -> str:
    """Where an op stands: its source position if parsed, else its loc(...)."""
    if spans and op in spans:
        return str(spans[op].get_location())
    from xdsl.dialects.builtin import NameLoc, UnknownLoc

    loc = getattr(op, "location", None)
    if isinstance(loc, NameLoc):
        return f'{op.name} at loc("{loc.desc.data}")'
    if loc is not None and not isinstance(loc, UnknownLoc):
        return f"{op.name} at {loc}"
    return op.name


def parse_failure(e) -> PiperError:
    """An xDSL ParseError as one PiperError: file:line:col, message, the line."""
    lines = e.span.print_with_context(e.msg).splitlines()
    return PiperError(e.msg, str(e.span.get_location()), "\n".join(lines[1:]))
