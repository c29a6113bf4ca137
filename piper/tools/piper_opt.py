"""piper-opt: run Piper passes on IR files, like mlir-opt / xdsl-opt.

A thin subclass of xDSLOptMain: it registers Piper's dialects and passes
(and `--strategy FILE`, which compiles a captured step with a JSON strategy,
piper/directives/strategy.py),
remembers where each op came from in the source so verifier errors point at
a line and column, and turns every user-caused failure into one diagnostic
on stderr with a non-zero exit (no Python traceback).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import time
import traceback
from typing import IO

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.utils.exceptions import (
    DiagnosticException,
    ParseError,
    PassFailedException,
    VerifyException,
)
from xdsl.xdsl_opt_main import ShrinkException, xDSLOptMain

from piper.diagnostics import (
    PiperError,
    first_line,
    op_location,
    parse_failure,
    parsed_from,
    pass_crash,
)
from piper.ir import SpanParser, verify_with_locations


def _pass_spec_message(e: ValueError) -> str:
    """xDSL's pipeline errors in Piper's words."""
    text = str(e)
    if text.startswith("Unrecognized passes:"):
        from piper.passes import all_passes

        return (f"unknown pass {text.split(':', 1)[1].strip()}; "
                f"available: {', '.join(sorted(all_passes()))}")
    if text.startswith("Provided arguments"):
        given, expected = (json.loads(m) for m in re.findall(r"\[[^\]]*\]", text)[:2])
        return (f"unknown option {', '.join(given)}; the pass takes "
                f"{', '.join(expected) or 'no options'}")
    if text.startswith("Incompatible types"):
        return "option of the wrong type: " + text.split(":", 1)[1].strip()
    return text


def pass_catalogue() -> str:
    """The --help text on passes: each directive's pass under the
    directive's name with its options, then the lowering passes, then the
    old names. Imports every pass module, so it is built only for --help."""
    from dataclasses import MISSING, fields

    from piper.passes import ALIASES, DIRECTIVE_PASSES, LOWERING_PASSES, pass_class

    def shown(v) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, tuple):  # a list option: comma-separated, e.g. stages=0,2
            return ",".join(map(str, v))
        return f'"{v}"' if isinstance(v, str) else str(v)

    def line(name: str) -> str:
        opts = [f"{f.name}={shown(f.default)}" if f.default is not MISSING else f.name
                for f in fields(pass_class(name))]
        return f"  {name}{'{' + ' '.join(opts) + '}' if opts else ''}"

    return "\n".join(
        ["directive passes (the directive of the same name, docs/directives.md):"]
        + [line(n) for n in DIRECTIVE_PASSES]
        + ["", "lowering and analysis passes:"] + [line(n) for n in LOWERING_PASSES]
        + ["", "old names, kept for one release:"]
        + [f"  {old} -> {new}" for old, (_, _, new) in ALIASES.items()]
        + ["", "example: piper-opt step.mlir -p 'place{pp=2},split{n=4},replicate{n=2},"
               "shard{stage=1},order{schedule=\"1f1b\"},lower-dist-to-sched'"])


class PiperOptMain(xDSLOptMain):
    def __init__(self, args=None):
        self.spans: dict[Operation, object] = {}
        self.line_offset = 0
        self.expanded: list | None = None
        argv = sys.argv[1:] if args is None else args
        self.wants_help = any(a in ("-h", "--help") for a in argv)
        super().__init__(description="Piper modular optimizer driver", args=args)

    def register_all_arguments(self, arg_parser):
        super().register_all_arguments(arg_parser)
        if self.wants_help:
            import argparse

            arg_parser.formatter_class = argparse.RawDescriptionHelpFormatter
            arg_parser.epilog = pass_catalogue()
        arg_parser.add_argument(
            "--strategy", type=str, default=None, metavar="FILE",
            help="compile a captured step with the strategy in this JSON file "
                 "(docs/directives.md) before the -p passes")
        arg_parser.add_argument(
            "--load", action="append", default=[], metavar="MODULE",
            help="import MODULE first: it registers the custom operators (torch.library) "
                 "the input calls")
        arg_parser.add_argument(
            "--print-strategy", action="store_true",
            help="with --strategy: print the expanded core directives (JSON) instead of the IR")
        arg_parser.add_argument(
            "--debug", action="store_true", default=bool(os.environ.get("PIPER_DEBUG")),
            help="print the Python traceback of an internal error (a bug in Piper) "
                 "besides its one-line diagnostic; PIPER_DEBUG=1 does the same")

    def register_all_dialects(self):
        from piper.dialects import all_dialects

        for name, factory in all_dialects().items():
            self.ctx.register_dialect(name, factory)

    def register_all_passes(self):
        from piper.passes import all_passes

        for name, factory in all_passes().items():
            self.register_pass(name, factory)

    def register_all_frontends(self):
        def parse_mlir(io: IO[bytes]):
            data = io.read()
            try:
                text = data.decode() if isinstance(data, bytes) else data
            except UnicodeDecodeError as e:
                line = data.count(b"\n", 0, e.start) + 1 + self.line_offset
                raise PiperError(
                    f"the input is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line})",
                    self.get_input_name()) from None
            parser = SpanParser(
                self.ctx, text, self.get_input_name(), spans=self.spans,
                line_offset=self.line_offset,
            )
            return parser.parse_module(not self.args.no_implicit_module)

        self.available_frontends["mlir"] = parse_mlir

    def get_input_stream(self):
        # Piper IR has one textual form, whatever the file is called
        # (lit's %t, .ir, ...), as with mlir-opt.
        f, ext = super().get_input_stream()
        return f, ext if ext in self.available_frontends else "mlir"

    def parse_chunk(self, chunk, file_extension, start_offset=0):
        # Where the chunk starts in its file, so diagnostics count lines of
        # the file (--split-input-file).
        self.line_offset = start_offset
        return super().parse_chunk(chunk, file_extension, start_offset)

    def setup_pipeline(self):
        try:
            super().setup_pipeline()
        except ValueError as e:
            # An unknown pass, an unknown option or an option of the wrong
            # type: the user's pipeline, not a bug.
            raise PiperError(f"in pass pipeline '{self.args.passes}': {_pass_spec_message(e)}",
                             "-p") from None

    def apply_passes(self, prog: ModuleOp) -> None:
        """The pass manager: verify the input, compile --strategy, then run
        each pass and verify after it (with locations; xDSL's own callback
        prints the whole module instead). An error a pass raises is located
        (at its op, else the input); an unexpected exception in a pass is a
        bug in Piper, reported as one located line naming the pass and the
        op it was working on (the traceback only under --debug)."""
        with parsed_from(self.spans):
            self._apply_passes(prog)

    def _apply_passes(self, prog: ModuleOp) -> None:
        if not self.args.disable_verify:
            verify_with_locations(prog, self.spans)
        if self.args.strategy:
            from piper.directives.strategy import compile_strategy, load

            directives, source = load(self.args.strategy)
            with self.guard("strategy", prog):
                self.expanded = compile_strategy(prog, directives, source)
        timing = self.args.time_passes
        for p in self.pipeline.passes:
            started = time.perf_counter()
            with self.guard(p.name, prog):
                p.apply(self.ctx, prog)
            if timing:
                print(f"Pass {p.name} took {time.perf_counter() - started:.3f} seconds",
                      file=sys.stderr)
            if not self.args.disable_verify:
                try:
                    verify_with_locations(prog, self.spans)
                except PiperError as e:
                    e.message = f"after pass '{p.name}': {e.message}"
                    if e.op is not None and not self.parsed(e.op):
                        # an op the pass made outside what was parsed: the input
                        if e.location and e.location != e.op.name:
                            e.message += f" ({e.location})"
                        e.location = self.module_location(prog)
                    raise

    def parsed(self, op: Operation) -> bool:
        """Whether `op`, or an op around it, was read from the input."""
        while op is not None:
            if op in self.spans:
                return True
            op = op.parent_op()
        return False

    def module_location(self, prog: ModuleOp) -> str:
        """Where an error about the whole input points: the module if it was
        written out, the chunk's first op under --split-input-file, else the
        file."""
        if prog in self.spans:
            return op_location(prog, self.spans)
        first = next(iter(prog.ops), None)
        if self.args.split_input_file and first in self.spans:
            return op_location(first, self.spans)
        return self.get_input_name()

    @contextlib.contextmanager
    def guard(self, pass_name: str, prog: ModuleOp):
        try:
            yield
        except PiperError as e:
            if e.location is None:
                e.location = (op_location(e.op, self.spans)
                              if e.op is not None and self.parsed(e.op)
                              else self.module_location(prog))
            raise
        except (DiagnosticException, VerifyException, PassFailedException) as e:
            raise PiperError(f"pass {pass_name}: {first_line(e)}",
                             self.module_location(prog)) from None
        except Exception as e:
            if self.args.debug:
                traceback.print_exc()
            raise pass_crash(e, pass_name, self.spans, self.module_location(prog)) from None

    def run(self):
        """xDSL's driver loop, with mlir-opt's handling of errors per chunk:
        under --split-input-file every chunk runs, each failing one prints
        its diagnostic and the exit status is 1 if any failed; under
        --verify-diagnostics (or --parsing-diagnostics for syntax errors)
        the diagnostic goes to stdout, for FileCheck, and the run goes on.
        Without either, the first error ends the run (main prints it)."""
        if self.args.load:
            from piper.libraries import load

            load(self.args.load)
        chunks, file_extension = self.prepare_input()
        output_stream = self.prepare_output()
        self.failed_chunks = 0
        try:
            for i, (chunk, offset) in enumerate(chunks):
                try:
                    if i > 0:
                        output_stream.write("// -----\n")
                    module = self.parse_chunk(chunk, file_extension, offset)
                    if module is not None:
                        self.apply_passes(module)
                        output_stream.write(self.output_resulting_program(module))
                    output_stream.flush()
                except Exception as e:
                    if isinstance(e, ParseError):
                        e.span = dataclasses.replace(e.span, line_offset=offset)
                    message = user_error(e)
                    if message is None:
                        raise
                    output_stream.flush()  # the chunks before it come first
                    if self.args.verify_diagnostics or (
                            self.args.parsing_diagnostics and isinstance(e, ParseError)):
                        print(message)
                    elif self.args.split_input_file and len(chunks) > 1:
                        print(message, file=sys.stderr)
                        self.failed_chunks += 1
                    else:
                        raise
                finally:
                    chunk.close()
        except ShrinkException:
            assert self.args.shrink
            print("Success, can shrink")
            sys.exit(0)  # tells shrinkray it can shrink
        finally:
            if output_stream is not sys.stdout:
                output_stream.close()
        if self.args.shrink:
            print("Failure, can't shrink")
            sys.exit(1)

    def output_resulting_program(self, prog: ModuleOp) -> str:
        if self.args.print_strategy:
            if self.expanded is None:
                raise PiperError("--print-strategy needs --strategy FILE")
            from piper.directives.strategy import to_json

            return to_json(self.expanded)
        return super().output_resulting_program(prog)


def user_error(e: Exception) -> str | None:
    """The diagnostic for an error the input or the command line caused,
    or None for a bug in Piper."""
    if isinstance(e, ParseError):
        return parse_failure(e).render()
    if isinstance(e, PiperError):
        return e.render()
    if isinstance(e, DiagnosticException | VerifyException | PassFailedException):
        return f"error: {first_line(e)}"
    if isinstance(e, FileNotFoundError | IsADirectoryError | PermissionError):
        return f"error: {e.strerror}: {e.filename}"
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        tool = PiperOptMain(args=argv)
        tool.run()
        return 1 if tool.failed_chunks else 0
    except Exception as e:
        message = user_error(e)
        if message is not None:
            print(message, file=sys.stderr)
            return 1
        # a bug in Piper, not in the input
        argv = sys.argv[1:] if argv is None else argv
        if "--debug" in argv or os.environ.get("PIPER_DEBUG"):
            raise
        print(f"piper-opt: internal error: {type(e).__name__}: {e} "
              "(run with --debug for a traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
