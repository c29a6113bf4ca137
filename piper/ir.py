"""Reading and writing Piper IR: one context with every dialect registered."""

from __future__ import annotations

import gc
import io
from contextlib import contextmanager

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.printer import Printer


def context() -> Context:
    from piper.dialects import all_dialects

    ctx = Context()
    for name, factory in all_dialects().items():
        ctx.register_dialect(name, factory)
    return ctx


def parse_module(text: str, name: str = "<string>") -> ModuleOp:
    """Parse IR text and verify it; errors carry line and column."""
    from xdsl.utils.exceptions import ParseError

    from piper.diagnostics import parse_failure
    from piper.tools.piper_opt import SpanParser, verify_with_locations

    spans: dict = {}
    try:
        module = SpanParser(context(), text, name, spans=spans).parse_module()
    except ParseError as e:
        raise parse_failure(e) from None
    verify_with_locations(module, spans)
    return module


def print_module(module, locations: bool = False) -> str:
    out = io.StringIO()
    Printer(stream=out, print_debuginfo=locations).print_op(module)
    out.write("\n")
    return out.getvalue()


@contextmanager
def gc_paused():
    """No cyclic garbage collection inside: capturing a step and compiling
    a plan build 10^5 to 10^6 live objects, which every full collection
    would walk again (a fifth of capture, a third of compiling). The
    garbage they leave (such as the erased dist.plan) is collected after,
    as usual."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
