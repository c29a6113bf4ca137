"""The sched dialect: one program per device.

A `sched.program` is the ordered instruction list one rank executes. Compute
instructions call stage functions on a named stream; communication starts
asynchronously and yields a `!sched.handle` that a later `sched.wait`
completes (the wait of a receive or collective yields the received tensor).
Point-to-point messages match by (source, destination, tag); collectives
carry their group and a tag that must appear in the same order on every
member. `sched.free` ends a buffer's life, so peak memory can be read off
the plan.

    sched.program @rank1 device 1 {
      %h = sched.recv from 0 tag 3 stream "comm" : tensor<2x16xf32>
      %a = sched.wait %h : tensor<2x16xf32>
      %o, %s = sched.call @F1(%w, %a) task "1F0" stream "compute" : ...
      sched.free %a
    }
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects.builtin import (
    ArrayAttr,
    IntAttr,
    StringAttr,
    SymbolRefAttr,
    TensorType,
    UnitAttr,
)
from xdsl.ir import Operation, Attribute, Dialect, ParametrizedAttribute, SSAValue, TypeAttribute
from xdsl.irdl import (
    IRDLOperation,
    irdl_attr_definition,
    operand_def,
    opt_prop_def,
    opt_result_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import NoTerminator, SymbolOpInterface
from xdsl.utils.exceptions import VerifyException

from piper.dialects.common import (
    FillBase,
    InputBase,
    LoadBase,
    OpVerifyException,
    ShardBase,
    StoreBase,
    SumBase,
    _int_array,
    _ints,
    part_type,
    require_own_operands,
)
from piper.dialects.dist import REDUCE_OPS, _verify_stream, lookup_symbol, type_bytes
from piper.dialects.opdef import build, f64_attr, lives_in, op_definition


@irdl_attr_definition
class HandleType(ParametrizedAttribute, TypeAttribute):
    """An in-flight asynchronous communication."""

    name = "sched.handle"


HANDLE = HandleType()  # one instance: ops that share a signature verify once


def _kw_ints(parser: Parser, keys: Sequence[str]) -> dict[str, int]:
    out = {}
    for k in keys:
        parser.parse_keyword(k)
        out[k] = parser.parse_integer(allow_boolean=False)
    return out


def _parse_stream(parser: Parser) -> str:
    parser.parse_keyword("stream")
    return parser.parse_str_literal()


@op_definition
class ProgramOp(IRDLOperation):
    """The instruction list of one device, in execution order."""

    name = "sched.program"
    sym_name = prop_def(StringAttr)
    device = prop_def(IntAttr)
    body = region_def("single_block")
    traits = traits_def(NoTerminator(), SymbolOpInterface())

    def __init__(self, name: str, device: int, ops=()):
        from xdsl.ir import Block, Region

        super().__init__(
            properties={"sym_name": StringAttr(name), "device": IntAttr(device)},
            regions=[Region(Block(ops))],
        )

    def print(self, printer: Printer):
        printer.print_string(f" @{self.sym_name.data} device {self.device.data} ")
        printer.print_region(self.body, print_entry_block_args=False)

    @classmethod
    def parse(cls, parser: Parser) -> ProgramOp:
        name = parser.parse_symbol_name().data
        dev = _kw_ints(parser, ["device"])["device"]
        region = parser.parse_region()
        op = cls(name, dev)
        if region.blocks:
            op.body.detach_block(0)
            op.body.add_block(region.detach_block(0))
        return op

    def verify_(self) -> None:
        """One pass over the instructions: every started communication is
        waited on once, and a buffer lives from its definition to its
        sched.free (nothing uses it after; it is freed once)."""
        waited: set[SSAValue] = set()
        started: list[tuple[Operation, SSAValue]] = []
        freed: set[SSAValue] = set()
        block = self.body.block
        for op in block.ops:
            require_own_operands(op, block, "program")
            kind = type(op)
            if kind is WaitOp:
                if op.handle in waited:
                    raise VerifyException("a handle is waited on twice")
                waited.add(op.handle)
            elif kind in _STARTS:
                started.append((op, op.handle))
            if freed:
                for v in op.operands:
                    if v in freed:
                        what = "frees" if kind is FreeOp else "uses"
                        raise OpVerifyException(
                            f"'{op.name}' {what} %{v.name_hint or '?'} after its sched.free "
                            f"(a buffer is freed once, after its last use)", op)
            if kind is FreeOp:
                freed.add(op.value)
        for op, h in started:
            if h not in waited:
                raise VerifyException(
                    f"'{op.name}' starts a communication that is never waited on")


@op_definition
class LoadOp(LoadBase):
    """A training-state tensor; marked `host`, it lives in host memory
    (offloaded optimizer state), else on the device."""

    name = "sched.load"
    host = opt_prop_def(UnitAttr)

    def __init__(self, name: str, t: Attribute, shard=None, host: bool = False):
        props = self._props(name, shard)
        if host:
            props["host"] = UnitAttr()
        build(self, result_types=[t], properties=props)

    def print(self, printer: Printer):
        if self.host is not None:
            printer.print_string(" host")
        super().print(printer)

    @classmethod
    def parse(cls, parser: Parser):
        host = parser.parse_optional_keyword("host") is not None
        op = super().parse(parser)
        if host:
            op.host = UnitAttr()
        return op


# Where a sched.copy moves its tensor: host memory or the device's own.
COPY_TARGETS = ("host", "device")
# The stream a call runs on when it runs on the host (offload's optimizer).
HOST_STREAM = "host"


@op_definition
class CopyOp(IRDLOperation):
    """A copy of a tensor into host memory or into the device's memory, on
    its own stream (offload: `d2h` / `h2d`); the copy is a new buffer with
    its own sched.free.

        %g_h = sched.copy %g to "host" stream "d2h" : tensor<8xf32>
    """

    name = "sched.copy"
    value = operand_def(TensorType)
    result = result_def(TensorType)
    to = prop_def(StringAttr)
    stream = prop_def(StringAttr)

    def __init__(self, value: SSAValue, to: str, stream: str):
        build(self, operands=[value], result_types=[value.type],
              properties={"to": StringAttr(to), "stream": StringAttr(stream)})

    @property
    def to_host(self) -> bool:
        return self.to.data == "host"

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_operand(self.value)
        printer.print_string(" to ")
        printer.print_string_literal(self.to.data)
        printer.print_string(" stream ")
        printer.print_string_literal(self.stream.data)
        printer.print_string(" : ")
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser) -> CopyOp:
        u = parser.parse_unresolved_operand()
        parser.parse_keyword("to")
        to = parser.parse_str_literal()
        stream = _parse_stream(parser)
        parser.parse_punctuation(":")
        t = parser.parse_type()
        return cls(parser.resolve_operand(u, t), to, stream)

    def verify_(self) -> None:
        _verify_stream(self.stream)
        if self.to.data not in COPY_TARGETS:
            raise VerifyException(f"sched.copy goes to one of {', '.join(COPY_TARGETS)}, "
                                  f"not '{self.to.data}'")
        if self.value.type != self.result.type:
            raise VerifyException("sched.copy's result must have its operand's type")


@op_definition
class StoreOp(StoreBase):
    name = "sched.store"

    def __init__(self, name: str, value: SSAValue, shard=None, loss: bool = False):
        build(self, operands=[value], properties=self._props(name, shard, loss))


@op_definition
class InputOp(InputBase):
    """This rank's slice of a global-batch input."""

    name = "sched.input"

    def __init__(self, name: str, replica: int, mb: int, t: Attribute):
        build(
            self,
            properties={
                "input_name": StringAttr(name),
                "replica": IntAttr(replica),
                "mb": IntAttr(mb),
            },
            result_types=[t],
        )


@op_definition
class FillOp(FillBase):
    name = "sched.fill"

    def __init__(self, value: float, t: Attribute):
        build(self, result_types=[t], properties={"value": f64_attr(value)})


@op_definition
class SumOp(SumBase):
    name = "sched.sum"

    def __init__(self, inputs: Sequence[SSAValue], scale: float):
        build(
            self,
            operands=list(inputs),
            properties={"scale": f64_attr(scale)},
            result_types=[inputs[0].type],
        )


@op_definition
class ShardOp(ShardBase):
    """Local flat slice `part` k of n equal parts of a tensor."""

    name = "sched.shard"

    def __init__(self, value: SSAValue, k: int, n: int):
        build(
            self,
            operands=[value],
            properties={"part": _int_array([k, n])},
            result_types=[part_type(value.type, n)],
        )


@op_definition
class CallOp(IRDLOperation):
    """Run a stage function (a compute task) on a stream."""

    name = "sched.call"
    callee = prop_def(SymbolRefAttr)
    task = prop_def(StringAttr)
    stream = prop_def(StringAttr)
    args = var_operand_def(TensorType)
    res = var_result_def(TensorType)

    def __init__(self, callee: str, task: str, stream: str, args, result_types):
        build(
            self,
            operands=list(args),
            result_types=list(result_types),
            properties={
                "callee": SymbolRefAttr(callee),
                "task": StringAttr(task),
                "stream": StringAttr(stream),
            },
        )

    def print(self, printer):
        printer.print_string(" ")
        printer.print_attribute(self.callee)
        printer.print_string("(")
        printer.print_list(self.args, printer.print_operand)
        printer.print_string(") task ")
        printer.print_string_literal(self.task.data)
        printer.print_string(" stream ")
        printer.print_string_literal(self.stream.data)
        printer.print_string(" : (")
        printer.print_list([a.type for a in self.args], printer.print_attribute)
        printer.print_string(") -> (")
        printer.print_list([r.type for r in self.res], printer.print_attribute)
        printer.print_string(")")

    @classmethod
    def parse(cls, parser):
        at = parser.pos
        callee = parser.parse_attribute()
        if not isinstance(callee, SymbolRefAttr):
            parser.raise_error("expected a function symbol like @F0", at, parser.pos)
        us = parser.parse_comma_separated_list(
            parser.Delimiter.PAREN, parser.parse_unresolved_operand
        )
        parser.parse_keyword("task")
        task = parser.parse_str_literal()
        stream = _parse_stream(parser)
        parser.parse_punctuation(":")
        at = parser.pos
        ft = parser.parse_function_type()
        if len(ft.inputs.data) != len(us):
            parser.raise_error(f"expected {len(us)} argument types", at, parser.pos)
        args = [parser.resolve_operand(u, t) for u, t in zip(us, ft.inputs.data)]
        return cls(callee.root_reference.data, task, stream, args, ft.outputs.data)

    def verify_(self):
        from xdsl.dialects.func import FuncOp

        _verify_stream(self.stream)
        fn = lookup_symbol(self, self.callee)
        if not isinstance(fn, FuncOp):
            raise VerifyException(f"call of unknown function {self.callee}")
        ft = fn.function_type
        if list(ft.inputs.data) != [a.type for a in self.args] or list(
            ft.outputs.data
        ) != [r.type for r in self.res]:
            raise VerifyException(f"call types do not match the signature of {self.callee}")


class _CommOp(IRDLOperation):
    """Common parts of asynchronous communication starts."""

    def _print_tail(self, printer: Printer):
        printer.print_string(f" tag {self.tag.data} stream ")
        printer.print_string_literal(self.stream.data)

    def _verify_peer(self, verb: str) -> None:
        _verify_stream(self.stream)
        prog = self.parent_op()
        if isinstance(prog, ProgramOp) and prog.device.data == self.peer.data:
            raise VerifyException(f"device {self.peer.data} {verb} itself")


@op_definition
class SendOp(_CommOp):
    name = "sched.send"
    value = operand_def(TensorType)
    peer = prop_def(IntAttr)
    tag = prop_def(IntAttr)
    stream = prop_def(StringAttr)
    handle = result_def(HandleType)

    def __init__(self, value: SSAValue, peer: int, tag: int, stream: str = "comm"):
        build(
            self,
            operands=[value],
            result_types=[HANDLE],
            properties={"peer": IntAttr(peer), "tag": IntAttr(tag), "stream": StringAttr(stream)},
        )

    def print(self, printer):
        printer.print_string(" ")
        printer.print_operand(self.value)
        printer.print_string(f" to {self.peer.data}")
        self._print_tail(printer)
        printer.print_string(" : ")
        printer.print_attribute(self.value.type)

    @classmethod
    def parse(cls, parser):
        u = parser.parse_unresolved_operand()
        v = _kw_ints(parser, ["to", "tag"])
        stream = _parse_stream(parser)
        parser.parse_punctuation(":")
        return cls(parser.resolve_operand(u, parser.parse_type()), v["to"], v["tag"], stream)

    def verify_(self):
        self._verify_peer("sends to")


@op_definition
class RecvOp(_CommOp):
    name = "sched.recv"
    peer = prop_def(IntAttr)
    tag = prop_def(IntAttr)
    stream = prop_def(StringAttr)
    result_type = prop_def(TensorType)
    handle = result_def(HandleType)

    def __init__(self, peer: int, tag: int, t: Attribute, stream: str = "comm"):
        build(
            self,
            result_types=[HANDLE],
            properties={
                "peer": IntAttr(peer),
                "tag": IntAttr(tag),
                "stream": StringAttr(stream),
                "result_type": t,
            },
        )

    def print(self, printer):
        printer.print_string(f" from {self.peer.data}")
        self._print_tail(printer)
        printer.print_string(" : ")
        printer.print_attribute(self.result_type)

    @classmethod
    def parse(cls, parser):
        v = _kw_ints(parser, ["from", "tag"])
        stream = _parse_stream(parser)
        parser.parse_punctuation(":")
        return cls(v["from"], v["tag"], parser.parse_type(), stream)

    def verify_(self):
        self._verify_peer("receives from")


COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "broadcast")

# id of a group attribute -> (the attribute, its members, their set). A
# collective over n replicas has n instructions that share the group, so
# reading it once keeps verification linear in n.
_GROUPS: dict[int, tuple[ArrayAttr, tuple[int, ...], frozenset[int]]] = {}


def group_facts(group: ArrayAttr) -> tuple[tuple[int, ...], frozenset[int]]:
    hit = _GROUPS.get(id(group))
    if hit is None or hit[0] is not group:
        if len(_GROUPS) >= 4096:
            _GROUPS.clear()
        members = tuple(_ints(group))
        hit = _GROUPS[id(group)] = (group, members, frozenset(members))
    return hit[1], hit[2]


@op_definition
class CollectiveOp(_CommOp):
    """Start a collective over `group` (this device's part of it)."""

    name = "sched.collective"
    kind = prop_def(StringAttr)
    reduce = opt_prop_def(StringAttr)
    root = opt_prop_def(IntAttr)
    value = operand_def(TensorType)
    group = prop_def(ArrayAttr)
    tag = prop_def(IntAttr)
    stream = prop_def(StringAttr)
    result_type = prop_def(TensorType)
    handle = result_def(HandleType)

    def __init__(self, kind: str, value: SSAValue, group: Sequence[int] | ArrayAttr, tag: int,
                 result_type: Attribute, stream: str = "comm", reduce: str | None = None,
                 root: int | None = None):
        props: dict[str, Attribute] = {
            "kind": StringAttr(kind),
            # the members' instructions may share one group attribute
            "group": group if isinstance(group, ArrayAttr) else _int_array(group),
            "tag": IntAttr(tag),
            "stream": StringAttr(stream),
            "result_type": result_type,
        }
        if reduce is not None:
            props["reduce"] = StringAttr(reduce)
        if root is not None:
            props["root"] = IntAttr(root)
        build(self, operands=[value], result_types=[HANDLE], properties=props)

    @property
    def members(self) -> list[int]:
        return _ints(self.group)

    @property
    def member_set(self) -> tuple[tuple[int, ...], frozenset[int]]:
        """The group as a tuple and a set, computed once per group attribute
        (every member's instruction of a collective shares it)."""
        return group_facts(self.group)

    @property
    def bytes(self) -> int:
        return type_bytes(self.value.type)

    def print(self, printer):
        printer.print_string(" " + self.kind.data)
        if self.reduce is not None:
            printer.print_string(" " + self.reduce.data)
        if self.root is not None:
            printer.print_string(f" root {self.root.data}")
        printer.print_string(" ")
        printer.print_operand(self.value)
        printer.print_string(" group [" + ", ".join(map(str, self.members)) + "]")
        self._print_tail(printer)
        printer.print_string(" : ")
        printer.print_attribute(self.value.type)
        printer.print_string(" -> ")
        printer.print_attribute(self.result_type)

    @classmethod
    def parse(cls, parser):
        at = parser.pos
        kind = parser.parse_identifier("collective kind expected")
        if kind not in COLLECTIVES:
            parser.raise_error(f"collective must be one of {', '.join(COLLECTIVES)}", at, parser.pos)
        reduce = root = None
        if kind in ("all_reduce", "reduce_scatter"):
            reduce = parser.parse_identifier("reduction expected")
        if kind == "broadcast":
            root = _kw_ints(parser, ["root"])["root"]
        u = parser.parse_unresolved_operand()
        parser.parse_keyword("group")
        group = parser.parse_comma_separated_list(
            parser.Delimiter.SQUARE, lambda: parser.parse_integer(allow_boolean=False)
        )
        tag = _kw_ints(parser, ["tag"])["tag"]
        stream = _parse_stream(parser)
        parser.parse_punctuation(":")
        t_in = parser.parse_type()
        parser.parse_punctuation("->")
        t_out = parser.parse_type()
        return cls(kind, parser.resolve_operand(u, t_in), group, tag, t_out, stream, reduce, root)

    def verify_(self):
        if self.kind.data not in COLLECTIVES:
            raise VerifyException(f"unknown collective '{self.kind.data}'")
        needs_reduce = self.kind.data in ("all_reduce", "reduce_scatter")
        if needs_reduce != (self.reduce is not None):
            raise VerifyException(f"{self.kind.data} {'needs' if needs_reduce else 'takes no'} reduction")
        if self.reduce is not None and self.reduce.data not in REDUCE_OPS:
            raise VerifyException(f"reduction must be one of {', '.join(REDUCE_OPS)}")
        if (self.kind.data == "broadcast") != (self.root is not None):
            raise VerifyException("only broadcast has a root")
        g, members = group_facts(self.group)
        if len(members) != len(g):
            raise VerifyException(f"group {list(g)} must list distinct devices")
        if self.root is not None and self.root.data not in members:
            raise VerifyException(f"broadcast root {self.root.data} is not in the group")
        self._verify_result_type(len(g))
        _verify_stream(self.stream)
        prog = self.parent_op()
        if isinstance(prog, ProgramOp) and prog.device.data not in members:
            raise VerifyException(
                f"device {prog.device.data} runs a collective of group {list(g)} it is not in"
            )

    def _verify_result_type(self, n: int) -> None:
        """This member's part of the collective: the result type the kind
        gives from the operand type (dist's collectives check the same on
        all members' operands and results)."""
        kind, t, out = self.kind.data, self.value.type, self.result_type
        numel = math.prod(t.get_shape())
        if kind == "reduce_scatter":
            if numel % n:
                raise VerifyException(
                    f"reduce_scatter of {numel} elements over {n} devices does not divide")
            expected = TensorType(t.element_type, [numel // n])
        elif kind == "all_gather":
            if len(t.get_shape()) != 1:
                raise VerifyException("all_gather operand must be a flat shard (rank 1)")
            if out.element_type != t.element_type or math.prod(out.get_shape()) != n * numel:
                raise VerifyException(f"all_gather of {n} shards of {t} cannot give {out}")
            return
        else:
            if kind == "all_to_all":
                shape = t.get_shape()
                if not shape or shape[0] % n:
                    raise VerifyException(
                        f"all_to_all dim 0 ({shape[0] if shape else 0}) must divide by {n}")
            expected = t
        if out != expected:
            raise VerifyException(f"{kind} of {t} over {n} devices gives {expected}, not {out}")


@op_definition
class WaitOp(IRDLOperation):
    """Complete a communication; receives and collectives yield the tensor."""

    name = "sched.wait"
    handle = operand_def(HandleType)
    result = opt_result_def(TensorType)

    def __init__(self, handle: SSAValue, result_type: Attribute | None = None):
        build(self, operands=[handle], result_types=[result_type] if result_type else [])

    # Hand-written, though `assembly_format = "$handle (`:` type($result)^)?
    # attr-dict"` gives the same text: with it, a program of sends, receives
    # and their waits parsed ~13% and printed ~12% slower (xDSL 0.74), and
    # waits are among the most frequent instructions of a plan.
    def print(self, printer):
        printer.print_string(" ")
        printer.print_operand(self.handle)
        if self.result is not None:
            printer.print_string(" : ")
            printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser):
        u = parser.parse_unresolved_operand()
        t = parser.parse_type() if parser.parse_optional_punctuation(":") else None
        return cls(parser.resolve_operand(u, HANDLE), t)

    def verify_(self):
        start = self.handle.owner
        if not isinstance(start, SendOp | RecvOp | CollectiveOp):
            raise VerifyException("waits on a handle that no sched.send, recv or collective started")
        expected = getattr(start, "result_type", None)
        got = self.result.type if self.result is not None else None
        if expected != got:
            raise VerifyException(
                f"wait on '{start.name}' must yield {expected or 'nothing'}, yields {got or 'nothing'}"
            )


@op_definition
class FreeOp(IRDLOperation):
    """End of a buffer's life on this device."""

    name = "sched.free"
    value = operand_def(TensorType)

    assembly_format = "$value attr-dict `:` type($value)"

    def __init__(self, value: SSAValue):
        build(self, operands=[value])


# the instructions that start a communication (their result is its handle)
_STARTS = (SendOp, RecvOp, CollectiveOp)

# Every instruction lives directly in a sched.program.
lives_in(ProgramOp, LoadOp, StoreOp, InputOp, FillOp, SumOp, ShardOp, CallOp, SendOp, RecvOp,
         CollectiveOp, WaitOp, FreeOp)

Sched = Dialect(
    "sched",
    [ProgramOp, LoadOp, StoreOp, InputOp, FillOp, SumOp, ShardOp, CallOp, SendOp, RecvOp,
     CollectiveOp, WaitOp, FreeOp, CopyOp],
    [HandleType],
)
