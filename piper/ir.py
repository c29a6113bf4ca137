"""Reading and writing Piper IR: one context with every dialect registered,
a parser that remembers where each op came from, and verification whose
errors point at that line and column."""

from __future__ import annotations

import dataclasses
import gc
import io
import re
from contextlib import contextmanager

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.parser import Parser
from xdsl.parser.generic_parser import ParserState
from xdsl.utils.lexer import Input
from xdsl.utils.mlir_lexer import MLIRLexer
from xdsl.printer import Printer
from xdsl.utils.exceptions import DiagnosticException, ParseError, VerifyException

from piper.diagnostics import PiperError, first_line, op_location


def sanitize(name: str, numbered: bool = True) -> str:
    """`name` as an SSA name hint: letters, digits and _, not starting with
    a digit. `numbered=False` also drops a `_<digits>` ending: the printer
    numbers equal hints itself, and a hint such as `x_1_1` would print as
    `%x_1`, the name it gives the second `x`."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not numbered:
        s = re.sub(r"(_\d+)+$", "", s)
    return s if s and not s[0].isdigit() else "v" + s


def context() -> Context:
    from piper.dialects import all_dialects

    ctx = Context()
    for name, factory in all_dialects().items():
        ctx.register_dialect(name, factory)
    return ctx


class _Lexer(MLIRLexer):
    """xDSL's lexer with a string-literal pattern that cannot backtrack
    exponentially: xDSL's `"(?:[^"...]+|...)*"` takes 2^n steps on an
    unterminated string followed by n characters on its line (a missing `"`
    hung piper-opt). Possessive quantifiers match the same strings."""

    _unescaped_characters_regex = re.compile(
        r'"(?:[^"\\\n\v\f]++|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*+"')


class SpanParser(Parser):
    """A parser that records the source span where each op starts."""

    def __init__(self, ctx: Context, text: str | bytes, name: str = "<unknown>", *,
                 spans: dict[Operation, object], line_offset: int = 0):
        super().__init__(ctx, "", name)
        if isinstance(text, bytes):
            text = text.decode()
        self._parser_state = ParserState(_Lexer(Input(text, name)))
        self._spans = spans
        self._line_offset = line_offset  # of this chunk in its file (--split-input-file)

    def parse_operation(self) -> Operation:
        span = self._current_token.span
        try:
            op = super().parse_operation()
        except (VerifyException, DiagnosticException) as e:
            # an op's parser built an attribute its own checks reject (a tag
            # of 10^26 in an i64): a syntax error at the op, not a crash
            raise ParseError(dataclasses.replace(span, line_offset=self._line_offset),
                             first_line(e)) from None
        self._spans[op] = (
            dataclasses.replace(span, line_offset=self._line_offset) if self._line_offset else span
        )
        return op


def verify_with_locations(module: Operation, spans: dict, dominance: bool = True) -> None:
    """Verify every op, innermost first, raising PiperError with a location.
    `dominance=False` skips the use-before-definition check: for IR Piper's
    own passes just built in dependency order (each dist-level pass checks
    it as its precondition), where plans of 10^6 instructions make it cost
    seconds; IR read from a file is always checked."""
    from xdsl.dialects import func

    from piper.dialects.graph import value_attr_errors

    for op in module.walk(reverse=True):
        try:
            op.verify(verify_nested_ops=False)
            if isinstance(op, func.FuncOp) and (bad := value_attr_errors(op)):
                raise VerifyException(f"@{op.sym_name.data} {bad[0]}")
        except VerifyException as e:
            message = first_line(e)
            where = getattr(e, "op", None) or _culprit(op, message)
            raise PiperError(f"'{op.name}' op {message}", op_location(where, spans),
                             op=where) from None
    if dominance:
        _verify_dominance(module, spans)


def use_before_definition(block) -> tuple[Operation, SSAValue, Operation] | None:
    """The first (op, value, defining op) of `block` where an op reads a
    value its block defines only later, in block order; None if there is
    none. The verifier (dominance) and the passes that rely on a plan's
    op order (`require_dependency_order`) both ask this."""
    seen: set[Operation] = set()
    for o in block.ops:
        for v in o.operands:
            owner = v.owner
            if isinstance(owner, Operation) and owner.parent is block and owner not in seen:
                return o, v, owner
        seen.add(o)
    return None


def _verify_dominance(module: Operation, spans: dict) -> None:
    """Every op comes after the ops of its block whose results it uses
    (Piper's regions are single blocks, so this is dominance). The error
    points at the first use, in file order."""
    for op in module.walk():
        for region in op.regions:
            for block in region.blocks:
                found = use_before_definition(block)
                if found is not None:
                    o, v, owner = found
                    raise PiperError(
                        f"'{o.name}' op uses %{v.name_hint or '?'} before its definition "
                        f"('{owner.name}' at {op_location(owner, spans)})",
                        op_location(o, spans))


def _culprit(op: Operation, message: str) -> Operation:
    """The op a symbol table's error is about (the second definition of a
    redefined symbol), else `op` itself."""
    found = re.search(r'Redefinition of symbol "([^"]+)"', message)
    if found and op.regions:
        seen = 0
        for child in op.regions[0].ops:
            name = getattr(child, "sym_name", None)
            if name is not None and name.data == found.group(1):
                seen += 1
                if seen == 2:
                    return child
    return op


def parse_module(text: str, name: str = "<string>") -> ModuleOp:
    """Parse IR text and verify it; errors carry line and column."""
    from piper.diagnostics import parse_failure

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
