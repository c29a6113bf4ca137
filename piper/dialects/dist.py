"""The dist dialect: the global training DAG.

One `dist.plan` holds everything one training step does on every device:
loading training state, slicing the global batch per (replica, microbatch),
compute tasks (forward F, backward B or its halves I/W, optimizer OPT) that
call stage functions of the graph level, and every communication as an op
with its group and its byte count. Each value lives on exactly one device;
a value is used on another device only through a communication op. The
device mesh has named axes (pp, dp, ep, tp); device d is its row-major index.

    dist.plan @step mesh [pp = 2, dp = 2] microbatches 4 {
      %w = dist.load "fc1.weight" on 0 : tensor<16x8xf32>
      %x = dist.input "input0" replica 0 mb 0 on 0 : tensor<2x8xf32>
      %a, %s = dist.task F stage 0 mb 0 replica 0 on 0 @F0(%w, %x) : ...
      %b = dist.send %a from 0 to 1 : tensor<2x16xf32>
      %g:2 = dist.all_reduce sum %g0, %g1 group [0, 2] : ...
    }
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

from xdsl.dialects.builtin import (
    ArrayAttr,
    IntAttr,
    StringAttr,
    SymbolRefAttr,
    TensorType,
)
from xdsl.ir import Attribute, Dialect, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    opt_prop_def,
    prop_def,
    region_def,
    result_def,
    traits_def,
    var_operand_def,
    var_result_def,
    operand_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import NoTerminator, SymbolOpInterface, SymbolTable
from xdsl.utils.exceptions import VerifyException

from piper.dialects.common import (  # noqa: F401  (_parse_shard etc.: sched and passes use them from here)
    FillBase,
    InputBase,
    LoadBase,
    OpVerifyException,
    Placed,
    ShardBase,
    StoreBase,
    SumBase,
    _int_array,
    _ints,
    _parse_shard,
    _verify_part,
    require_own_operands,
    _verify_shard,
    part_type,
)
from piper.dialects.opdef import build, f64_attr, lives_in, op_definition

TASK_KINDS = ("F", "B", "I", "W", "OPT")
REDUCE_OPS = ("sum", "avg", "max")


# id of a tensor type -> (the type, its bytes). Types are immutable, and a
# plan's values share few type objects (a cloned op keeps its result
# types), while the simulator and the memory estimates ask for the bytes of
# every value: each type's are computed once. The entry holds the type, so
# its id cannot be reused by another object while it is cached.
_BYTES: dict[int, tuple[TensorType, int]] = {}


def type_bytes(t: Attribute) -> int:
    """Bytes of one tensor value of type t."""
    hit = _BYTES.get(id(t))
    if hit is not None and hit[0] is t:
        return hit[1]
    assert isinstance(t, TensorType)
    width = getattr(t.element_type, "bitwidth", None)
    if width is None:
        width = getattr(t.element_type, "width").data
    n = math.prod(t.get_shape()) * max(1, width // 8)
    if len(_BYTES) >= 65536:
        _BYTES.clear()
    _BYTES[id(t)] = (t, n)
    return n


def _print_ints(printer: Printer, values: Sequence[int]):
    printer.print_string("[" + ", ".join(str(v) for v in values) + "]")


def _parse_ints(parser: Parser) -> list[int]:
    return parser.parse_comma_separated_list(
        parser.Delimiter.SQUARE, lambda: parser.parse_integer(allow_boolean=False)
    )


def _print_types(printer: Printer, values: Sequence[SSAValue]):
    printer.print_list([v.type for v in values], printer.print_attribute)


def device_of(value: SSAValue) -> int | None:
    """The device a value lives on (None for values outside a plan)."""
    op = value.owner
    dev = op.properties.get("device") if isinstance(op, Operation) else None
    if isinstance(dev, IntAttr):  # the common case first: a local op
        return dev.data
    if isinstance(op, CollectiveOp):
        return op.members[value.index]
    if isinstance(op, SendOp):
        return op.dst.data
    dev = getattr(op, "device", None)
    return dev.data if isinstance(dev, IntAttr) else None


# --------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------


@op_definition
class PlanOp(IRDLOperation):
    """One training step on a device mesh, as a DAG of tasks and messages."""

    name = "dist.plan"

    sym_name = prop_def(StringAttr)
    axes = prop_def(ArrayAttr)  # of StringAttr
    shape = prop_def(ArrayAttr)  # of IntAttr
    microbatches = prop_def(IntAttr)
    body = region_def("single_block")

    traits = traits_def(NoTerminator(), SymbolOpInterface())

    def __init__(self, name: str, axes: dict[str, int], microbatches: int, ops=()):
        from xdsl.ir import Block, Region

        super().__init__(
            properties={
                "sym_name": StringAttr(name),
                "axes": ArrayAttr([StringAttr(a) for a in axes]),
                "shape": _int_array(list(axes.values())),
                "microbatches": IntAttr(microbatches),
            },
            regions=[Region(Block(ops))],
        )

    @property
    def mesh(self) -> dict[str, int]:
        return {a.data: s for a, s in zip(self.axes.data, _ints(self.shape), strict=True)}

    @property
    def num_devices(self) -> int:
        return math.prod(_ints(self.shape))

    def print(self, printer: Printer):
        printer.print_string(" @" + self.sym_name.data + " mesh [")
        printer.print_string(", ".join(f"{a} = {n}" for a, n in self.mesh.items()))
        printer.print_string(f"] microbatches {self.microbatches.data} ")
        printer.print_region(self.body, print_entry_block_args=False)

    @classmethod
    def parse(cls, parser: Parser) -> PlanOp:
        name = parser.parse_symbol_name().data
        parser.parse_keyword("mesh")

        axes: dict[str, int] = {}

        def axis():
            at = parser.pos
            a = parser.parse_identifier("mesh axis name expected")
            if a in axes:  # a dict would keep only the last size
                parser.raise_error(f"mesh axis '{a}' given twice", at, parser.pos)
            parser.parse_punctuation("=")
            axes[a] = parser.parse_integer(allow_boolean=False)

        parser.parse_comma_separated_list(parser.Delimiter.SQUARE, axis)
        parser.parse_keyword("microbatches")
        mb = parser.parse_integer(allow_boolean=False)
        region = parser.parse_region()
        op = cls(name, axes, mb)
        if region.blocks:
            op.body.detach_block(0)
            op.body.add_block(region.detach_block(0))
        return op

    def verify_(self) -> None:
        shape = _ints(self.shape)
        if len(shape) != len(self.axes.data) or any(s < 1 for s in shape):
            raise VerifyException("mesh axes and sizes must match and be positive")
        if len({a.data for a in self.axes.data}) != len(self.axes.data):
            raise VerifyException("mesh axis names must be distinct")
        if self.microbatches.data < 1:
            raise VerifyException("microbatches must be at least 1")
        n = self.num_devices
        block = self.body.block
        for op in block.ops:
            require_own_operands(op, block, "plan")
            mine = _devices_of_op(op)
            for d in mine:
                if not 0 <= d < n:
                    raise VerifyException(
                        f"'{op.name}' uses device {d}, outside the mesh of {n} devices"
                    )
            if isinstance(op, CollectiveOp | SendOp):
                continue
            for v in op.operands:
                dv = device_of(v)
                if dv is not None and mine and dv != mine[0]:
                    raise VerifyException(
                        f"'{op.name}' on device {mine[0]} uses a value that lives on "
                        f"device {dv}; cross-device uses need a communication op"
                    )


# The symbols of each symbol table (the module), name -> op, built once and
# checked on each hit: a plan of 10^5 tasks looks up its callees 10^5 times,
# and SymbolTable.lookup_symbol scans every top-level op each time.
_SYMBOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def lookup_symbol(op: Operation, ref: SymbolRefAttr) -> Operation | None:
    """SymbolTable.lookup_symbol(op, ref), from a per-table index."""
    if ref.nested_references.data:
        return SymbolTable.lookup_symbol(op, ref)
    table: Operation | None = op
    while table is not None and not table.has_trait(SymbolTable):
        table = table.parent_op()
    if table is None:
        return SymbolTable.lookup_symbol(op, ref)  # raises as it does
    name = ref.root_reference
    found = _SYMBOLS.get(table, {}).get(name.data)
    if found is not None and found.parent_op() is table and _sym_name(found) == name:
        return found
    index: dict[str, Operation] = {}
    for o in table.regions[0].block.ops:
        sym = _sym_name(o)
        if sym is not None:
            index.setdefault(sym.data, o)
    _SYMBOLS[table] = index
    return index.get(name.data)


def _sym_name(op: Operation) -> StringAttr | None:
    trait = op.get_trait(SymbolOpInterface)
    return None if trait is None else trait.get_sym_attr_name(op)


def device_of_op(op: Operation) -> int:
    """The device a non-communication op runs on."""
    return op.device.data


def _devices_of_op(op: Operation) -> list[int]:
    if isinstance(op, CollectiveOp):
        return list(op.members)
    if isinstance(op, SendOp):
        return [op.src.data, op.dst.data]
    dev = getattr(op, "device", None)
    return [dev.data] if isinstance(dev, IntAttr) else []


# --------------------------------------------------------------------------
# Values entering and leaving the step
# --------------------------------------------------------------------------


@op_definition
class LoadOp(Placed, LoadBase):
    """A persistent training-state tensor (param, buffer, optimizer state)
    as it stands at the start of the step on one device. `shard` k of n
    means the flat slice k of n equal parts."""

    name = "dist.load"

    def __init__(self, name: str, device: int, t: Attribute, shard: tuple[int, int] | None = None):
        props = self._props(name, shard)
        props["device"] = IntAttr(device)
        build(self, result_types=[t], properties=props)


@op_definition
class StoreOp(Placed, StoreBase):
    """The new value of a training-state tensor, or (marked `loss`) the
    step's loss: passes average it over microbatches and replicas, and the
    runtime reports it, whatever its name."""

    name = "dist.store"

    def __init__(self, name: str, device: int, value: SSAValue, shard: tuple[int, int] | None = None,
                 loss: bool = False):
        props = self._props(name, shard, loss)
        props["device"] = IntAttr(device)
        build(self, operands=[value], properties=props)


@op_definition
class InputOp(Placed, InputBase):
    """The slice of a global-batch input for one (replica, microbatch)."""

    name = "dist.input"

    def __init__(self, name: str, replica: int, mb: int, device: int, t: Attribute):
        build(
            self,
            properties={
                "input_name": StringAttr(name),
                "replica": IntAttr(replica),
                "mb": IntAttr(mb),
                "device": IntAttr(device),
            },
            result_types=[t],
        )


@op_definition
class FillOp(Placed, FillBase):
    """A constant tensor (e.g. the loss tangent 1/(microbatches*replicas))."""

    name = "dist.fill"

    def __init__(self, value: float, device: int, t: Attribute):
        build(
            self,
            properties={"value": f64_attr(value), "device": IntAttr(device)},
            result_types=[t],
        )


@op_definition
class SumOp(Placed, SumBase):
    """Local elementwise sum of same-typed tensors times `scale`
    (gradient accumulation over microbatches, loss averaging)."""

    name = "dist.sum"

    def __init__(self, inputs: Sequence[SSAValue], scale: float, device: int):
        build(
            self,
            operands=list(inputs),
            properties={"scale": f64_attr(scale), "device": IntAttr(device)},
            result_types=[inputs[0].type],
        )


@op_definition
class ShardOp(Placed, ShardBase):
    """Local flat slice `part` k of n equal parts of a tensor (ZeRO)."""

    name = "dist.shard"

    def __init__(self, value: SSAValue, k: int, n: int, device: int):
        build(
            self,
            operands=[value],
            properties={"part": _int_array([k, n]), "device": IntAttr(device)},
            result_types=[part_type(value.type, n)],
        )


def _numel(t: Attribute) -> int:
    return math.prod(t.get_shape())


@op_definition
class PackOp(IRDLOperation):
    """Local: flatten tensors of one element type and concatenate them into
    one rank-1 tensor (a gradient bucket, so one collective moves them all).

    With `shards n` the layout is shard-major: chunk 0 (the first 1/n) of
    every tensor, then chunk 1 of every tensor, ...; a reduce_scatter of it
    leaves member k with chunk k of each tensor, packed (ZeRO buckets)."""

    name = "dist.pack"
    inputs = var_operand_def(TensorType)
    device = prop_def(IntAttr)
    shards = opt_prop_def(IntAttr)
    result = result_def(TensorType)

    def __init__(self, inputs: Sequence[SSAValue], device: int,
                 result_type: Attribute | None = None, shards: int = 1):
        if result_type is None:
            total = sum(_numel(v.type) for v in inputs)
            result_type = TensorType(inputs[0].type.element_type, [total])
        props = {"device": IntAttr(device)}
        if shards != 1:
            props["shards"] = IntAttr(shards)
        build(self, operands=list(inputs), result_types=[result_type], properties=props)

    @property
    def num_shards(self) -> int:
        return 1 if self.shards is None else self.shards.data

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_list(self.inputs, printer.print_operand)
        printer.print_string(f" on {self.device.data}")
        if self.shards is not None:
            printer.print_string(f" shards {self.shards.data}")
        printer.print_string(" : ")
        _print_fn_type(printer, self.inputs, [self.result])

    @classmethod
    def parse(cls, parser: Parser) -> PackOp:
        unresolved = [parser.parse_unresolved_operand()]
        while parser.parse_optional_punctuation(","):
            unresolved.append(parser.parse_unresolved_operand())
        parser.parse_keyword("on")
        dev = parser.parse_integer(allow_boolean=False)
        shards = _parse_shards(parser)
        parser.parse_punctuation(":")
        ft = parser.parse_function_type()
        if len(ft.inputs.data) != len(unresolved) or len(ft.outputs.data) != 1:
            parser.raise_error(f"expected {len(unresolved)} operand types and one result type")
        return cls([parser.resolve_operand(u, t) for u, t in zip(unresolved, ft.inputs.data)],
                   dev, ft.outputs.data[0], shards)

    def verify_(self) -> None:
        _verify_flat(self, list(self.inputs), self.result.type, self.num_shards)


@op_definition
class UnpackOp(IRDLOperation):
    """Local: the inverse of dist.pack, a rank-1 tensor cut back into
    consecutive pieces of the result types; with `shards n`, the inverse of
    a shard-major pack (what an all_gather of packed shards gives)."""

    name = "dist.unpack"
    value = operand_def(TensorType)
    device = prop_def(IntAttr)
    shards = opt_prop_def(IntAttr)
    outputs = var_result_def(TensorType)

    def __init__(self, value: SSAValue, device: int, result_types: Sequence[Attribute],
                 shards: int = 1):
        props = {"device": IntAttr(device)}
        if shards != 1:
            props["shards"] = IntAttr(shards)
        build(self, operands=[value], result_types=list(result_types), properties=props)

    @property
    def num_shards(self) -> int:
        return 1 if self.shards is None else self.shards.data

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_operand(self.value)
        printer.print_string(f" on {self.device.data}")
        if self.shards is not None:
            printer.print_string(f" shards {self.shards.data}")
        printer.print_string(" : ")
        _print_fn_type(printer, [self.value], self.outputs)

    @classmethod
    def parse(cls, parser: Parser) -> UnpackOp:
        u = parser.parse_unresolved_operand()
        parser.parse_keyword("on")
        dev = parser.parse_integer(allow_boolean=False)
        shards = _parse_shards(parser)
        parser.parse_punctuation(":")
        ft = parser.parse_function_type()
        if len(ft.inputs.data) != 1:
            parser.raise_error("expected one operand type")
        return cls(parser.resolve_operand(u, ft.inputs.data[0]), dev, ft.outputs.data, shards)

    def verify_(self) -> None:
        _verify_flat(self, list(self.outputs), self.value.type, self.num_shards)


def _parse_shards(parser: Parser) -> int:
    if not parser.parse_optional_keyword("shards"):
        return 1
    n = parser.parse_integer(allow_boolean=False)
    if n < 2:
        parser.raise_error(f"shards must be at least 2, got {n}")
    return n


def _verify_flat(op: Operation, pieces: Sequence[SSAValue], flat: Attribute,
                 shards: int = 1) -> None:
    if not pieces:
        raise VerifyException(f"'{op.name}' needs at least one tensor")
    for v in pieces:
        if _numel(v.type) % shards:
            raise VerifyException(
                f"'{op.name}' with shards {shards}: {v.type} has {_numel(v.type)} elements, "
                f"which do not divide into {shards} chunks")
    if len(flat.get_shape()) != 1:
        raise VerifyException(f"'{op.name}' packed tensor must be rank 1, got {flat}")
    for v in pieces:
        if v.type.element_type != flat.element_type:
            raise VerifyException(
                f"'{op.name}' tensors must all have element type {flat.element_type}, "
                f"got {v.type}")
    total = sum(_numel(v.type) for v in pieces)
    if flat.get_shape()[0] != total:
        raise VerifyException(
            f"'{op.name}' packed tensor has {flat.get_shape()[0]} elements, "
            f"the tensors hold {total}")


# --------------------------------------------------------------------------
# Compute tasks
# --------------------------------------------------------------------------


@op_definition
class TaskOp(IRDLOperation):
    """One compute task: a call of a stage function on one device."""

    name = "dist.task"
    kind = prop_def(StringAttr)
    stage = prop_def(IntAttr)
    mb = prop_def(IntAttr)
    replica = prop_def(IntAttr)
    device = prop_def(IntAttr)
    callee = prop_def(SymbolRefAttr)
    stream = opt_prop_def(StringAttr)  # absent: the default compute stream
    # set by `order` on both tasks of an overlapped pair (`a&b`): the same
    # number on one device means "overlap these two" (passes/overlap_pairs.py)
    pair = opt_prop_def(IntAttr)
    args = var_operand_def(TensorType)
    res = var_result_def(TensorType)

    def __init__(self, kind: str, stage: int, mb: int, replica: int, device: int,
                 callee: str, args: Sequence[SSAValue], result_types: Sequence[Attribute],
                 stream: str | None = None, pair: int | None = None):
        props: dict[str, Attribute] = {
            "kind": StringAttr(kind),
            "stage": IntAttr(stage),
            "mb": IntAttr(mb),
            "replica": IntAttr(replica),
            "device": IntAttr(device),
            "callee": SymbolRefAttr(callee),
        }
        if stream is not None:
            props["stream"] = StringAttr(stream)
        if pair is not None:
            props["pair"] = IntAttr(pair)
        build(self, operands=list(args), result_types=list(result_types), properties=props)

    def inherit_schedule(self, old: TaskOp) -> TaskOp:
        """A task cut out of `old` (a piece, a replica) runs where `old` ran:
        on its stream, in its overlapped pair."""
        for key in ("stream", "pair"):
            v = old.properties.get(key)
            if v is not None:
                self.properties[key] = v
        return self

    @property
    def label(self) -> str:
        """Short form used in schedules: stage, kind, microbatch (`1F3`)."""
        return f"{self.stage.data}{self.kind.data}{self.mb.data}"

    def print(self, printer: Printer):
        printer.print_string(
            f" {self.kind.data} stage {self.stage.data} mb {self.mb.data} "
            f"replica {self.replica.data} on {self.device.data} "
        )
        if self.pair is not None:
            printer.print_string(f"pair {self.pair.data} ")
        _print_stream(printer, self.stream, after=True)
        printer.print_attribute(self.callee)
        printer.print_string("(")
        printer.print_list(self.args, printer.print_operand)
        printer.print_string(") : ")
        _print_fn_type(printer, self.args, self.res)

    @classmethod
    def parse(cls, parser: Parser) -> TaskOp:
        kind = parser.parse_identifier("task kind expected (F, B, I, W, OPT)")
        vals = {}
        for key in ("stage", "mb", "replica", "on"):
            parser.parse_keyword(key)
            vals[key] = parser.parse_integer(allow_boolean=False)
        pair = (parser.parse_integer(allow_boolean=False)
                if parser.parse_optional_keyword("pair") else None)
        stream = _parse_stream(parser)
        callee = parser.parse_attribute()
        if not isinstance(callee, SymbolRefAttr):
            parser.raise_error("expected a function symbol like @F0")
        unresolved = parser.parse_comma_separated_list(
            parser.Delimiter.PAREN, parser.parse_unresolved_operand
        )
        parser.parse_punctuation(":")
        ft = parser.parse_function_type()
        if len(ft.inputs.data) != len(unresolved):
            parser.raise_error(f"expected {len(unresolved)} argument types")
        args = [parser.resolve_operand(u, t) for u, t in zip(unresolved, ft.inputs.data)]
        return cls(kind, vals["stage"], vals["mb"], vals["replica"], vals["on"],
                   callee.root_reference.data, args, ft.outputs.data, stream, pair)

    def verify_(self) -> None:
        _verify_stream(self.stream)
        if self.pair is not None and self.pair.data < 0:
            raise VerifyException(f"pair must be >= 0, got {self.pair.data}")
        if self.kind.data not in TASK_KINDS:
            raise VerifyException(
                f"task kind '{self.kind.data}' is not one of {', '.join(TASK_KINDS)}"
            )
        from xdsl.dialects.func import FuncOp

        fn = lookup_symbol(self, self.callee)
        if fn is None:
            raise VerifyException(f"task calls unknown function {self.callee}")
        if not isinstance(fn, FuncOp):
            raise VerifyException(f"task callee {self.callee} is not a function")
        ft = fn.function_type
        if list(ft.inputs.data) != [a.type for a in self.args] or list(
            ft.outputs.data
        ) != [r.type for r in self.res]:
            raise VerifyException(
                f"task types do not match the signature of {self.callee}"
            )


def _print_stream(printer: Printer, stream: StringAttr | None, after: bool = False):
    """` stream "name"` (or `stream "name" ` before what follows), if set."""
    if stream is not None:
        printer.print_string("stream " if after else " stream ")
        printer.print_string_literal(stream.data)
        if after:
            printer.print_string(" ")


def _parse_stream(parser: Parser) -> str | None:
    if parser.parse_optional_keyword("stream"):
        return parser.parse_str_literal()
    return None


def _verify_stream(stream: StringAttr | None) -> None:
    if stream is not None and not stream.data.strip():
        raise VerifyException("stream name must not be empty")


def _print_fn_type(printer: Printer, ins, outs):
    printer.print_string("(")
    _print_types(printer, ins)
    printer.print_string(") -> (")
    _print_types(printer, outs)
    printer.print_string(")")


# --------------------------------------------------------------------------
# Communication
# --------------------------------------------------------------------------


@op_definition
class SendOp(IRDLOperation):
    """Point-to-point transfer: the value on `src` becomes a value on `dst`."""

    name = "dist.send"
    value = operand_def(TensorType)
    src = prop_def(IntAttr)
    dst = prop_def(IntAttr)
    bytes = prop_def(IntAttr)
    result = result_def(TensorType)

    def __init__(self, value: SSAValue, src: int, dst: int):
        build(
            self,
            operands=[value],
            properties={
                "src": IntAttr(src),
                "dst": IntAttr(dst),
                "bytes": IntAttr(type_bytes(value.type)),
            },
            result_types=[value.type],
        )

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_operand(self.value)
        printer.print_string(
            f" from {self.src.data} to {self.dst.data} bytes {self.bytes.data} : "
        )
        printer.print_attribute(self.result.type)

    @classmethod
    def parse(cls, parser: Parser) -> SendOp:
        u = parser.parse_unresolved_operand()
        vals = {}
        for key in ("from", "to", "bytes"):
            parser.parse_keyword(key)
            vals[key] = parser.parse_integer(allow_boolean=False)
        parser.parse_punctuation(":")
        op = cls(parser.resolve_operand(u, parser.parse_type()), vals["from"], vals["to"])
        op.bytes = IntAttr(vals["bytes"])
        return op

    def verify_(self) -> None:
        if self.src.data == self.dst.data:
            raise VerifyException(f"send from device {self.src.data} to itself")
        if self.value.type != self.result.type:
            raise VerifyException("send result type must equal its operand type")
        _verify_bytes(self, [self.value])
        dv = device_of(self.value)
        if dv is not None and dv != self.src.data:
            raise VerifyException(
                f"send from device {self.src.data} of a value that lives on device {dv}"
            )


def _verify_bytes(op, values):
    expected = sum(type_bytes(v.type) for v in values)
    if op.bytes.data != expected:
        raise VerifyException(
            f"'{op.name}' declares {op.bytes.data} bytes, its operands hold {expected}"
        )


class CollectiveOp(IRDLOperation):
    """Base of collectives: one operand and one result per group member,
    member i's operand lives on (and its result goes to) group[i]."""

    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)
    group = prop_def(ArrayAttr)
    bytes = prop_def(IntAttr)
    # Absent: the default communication stream.
    stream = opt_prop_def(StringAttr)
    # Absent: start as early as the inputs allow. k: start it no earlier
    # than k compute tasks before the first task that uses a result, on
    # each member (ZeRO-3 parameter prefetch).
    prefetch = opt_prop_def(IntAttr)

    @property
    def members(self) -> list[int]:
        return _ints(self.group)

    def __init__(self, inputs: Sequence[SSAValue], group: Sequence[int],
                 result_types: Sequence[Attribute], extra: dict | None = None):
        props = {
            "group": _int_array(group),
            "bytes": IntAttr(sum(type_bytes(v.type) for v in inputs)),
        }
        props.update(extra or {})
        build(self, operands=list(inputs), result_types=list(result_types), properties=props)

    def _print_head(self, printer: Printer):
        pass

    def print(self, printer: Printer):
        self._print_head(printer)
        printer.print_string(" ")
        printer.print_list(self.inputs, printer.print_operand)
        printer.print_string(" group ")
        _print_ints(printer, self.members)
        printer.print_string(f" bytes {self.bytes.data}")
        if self.prefetch is not None:
            printer.print_string(f" prefetch {self.prefetch.data}")
        _print_stream(printer, self.stream)
        printer.print_string(" : ")
        _print_fn_type(printer, self.inputs, self.outputs)

    @classmethod
    def _parse_head(cls, parser: Parser) -> dict:
        return {}

    @classmethod
    def parse(cls, parser: Parser):
        extra = cls._parse_head(parser)
        unresolved = [parser.parse_unresolved_operand()]
        while parser.parse_optional_punctuation(","):
            unresolved.append(parser.parse_unresolved_operand())
        parser.parse_keyword("group")
        group = _parse_ints(parser)
        parser.parse_keyword("bytes")
        nbytes = parser.parse_integer(allow_boolean=False)
        if parser.parse_optional_keyword("prefetch"):
            extra["prefetch"] = IntAttr(parser.parse_integer(allow_boolean=False))
        stream = _parse_stream(parser)
        if stream is not None:
            extra["stream"] = StringAttr(stream)
        parser.parse_punctuation(":")
        ft = parser.parse_function_type()
        if len(ft.inputs.data) != len(unresolved):
            parser.raise_error(f"expected {len(unresolved)} operand types")
        ins = [parser.resolve_operand(u, t) for u, t in zip(unresolved, ft.inputs.data)]
        op = cls(ins, group, ft.outputs.data, extra)
        op.bytes = IntAttr(nbytes)
        return op

    def verify_(self) -> None:
        _verify_stream(self.stream)
        if self.prefetch is not None and self.prefetch.data < 0:
            raise VerifyException(f"prefetch must be at least 0, got {self.prefetch.data}")
        g = self.members
        if len(set(g)) != len(g) or len(g) < 1:
            raise VerifyException(f"group {g} must list distinct devices")
        if len(self.inputs) != len(g) or len(self.outputs) != len(g):
            raise VerifyException(
                f"'{self.name}' over a group of {len(g)} needs {len(g)} operands and "
                f"results, got {len(self.inputs)} and {len(self.outputs)}"
            )
        for i, v in enumerate(self.inputs):
            dv = device_of(v)
            if dv is not None and dv != g[i]:
                raise VerifyException(
                    f"operand {i} of '{self.name}' lives on device {dv}, "
                    f"but group member {i} is device {g[i]}"
                )
        _verify_bytes(self, self.inputs)
        self.verify_types()

    def verify_types(self) -> None:
        pass

    def _same_types(self):
        t = self.inputs[0].type
        for v in list(self.inputs) + list(self.outputs):
            if v.type != t:
                raise VerifyException(f"'{self.name}' operands and results must all be {t}")


def _parse_reduce(parser: Parser) -> dict:
    at = parser.pos
    op = parser.parse_identifier("reduction (sum, avg, max) expected")
    if op not in REDUCE_OPS:
        parser.raise_error(f"reduction must be one of {', '.join(REDUCE_OPS)}", at, parser.pos)
    return {"reduce": StringAttr(op)}


def _verify_reduce(reduce: StringAttr) -> None:
    if reduce.data not in REDUCE_OPS:
        raise VerifyException(f"reduction must be one of {', '.join(REDUCE_OPS)}")


@op_definition
class AllReduceOp(CollectiveOp):
    """Every member gets the reduction of all members' tensors."""

    name = "dist.all_reduce"
    reduce = prop_def(StringAttr)

    def _print_head(self, printer):
        printer.print_string(" " + self.reduce.data)

    @classmethod
    def _parse_head(cls, parser):
        return _parse_reduce(parser)

    def verify_types(self):
        _verify_reduce(self.reduce)
        self._same_types()


@op_definition
class ReduceScatterOp(CollectiveOp):
    """Member i gets flat shard i (numel/n) of the reduction."""

    name = "dist.reduce_scatter"
    reduce = prop_def(StringAttr)

    def _print_head(self, printer):
        printer.print_string(" " + self.reduce.data)

    @classmethod
    def _parse_head(cls, parser):
        return _parse_reduce(parser)

    def verify_types(self):
        _verify_reduce(self.reduce)
        n = len(self.members)
        t = self.inputs[0].type
        numel = math.prod(t.get_shape())
        if numel % n:
            raise VerifyException(f"reduce_scatter of {numel} elements over {n} devices does not divide")
        shard = TensorType(t.element_type, [numel // n])
        for v in self.inputs:
            if v.type != t:
                raise VerifyException("reduce_scatter operands must have one type")
        for r in self.outputs:
            if r.type != shard:
                raise VerifyException(f"reduce_scatter results must be {shard}, got {r.type}")


@op_definition
class AllGatherOp(CollectiveOp):
    """Every member gets the concatenation of all members' flat shards,
    reshaped to the result type."""

    name = "dist.all_gather"

    def verify_types(self):
        n = len(self.members)
        t = self.inputs[0].type
        if len(t.get_shape()) != 1:
            raise VerifyException("all_gather operands must be flat shards (rank 1)")
        out = self.outputs[0].type
        if out.element_type != t.element_type or math.prod(out.get_shape()) != n * t.get_shape()[0]:
            raise VerifyException(f"all_gather of {n} shards of {t} cannot give {out}")
        for v in self.inputs:
            if v.type != t:
                raise VerifyException("all_gather operands must have one type")
        for r in self.outputs:
            if r.type != out:
                raise VerifyException("all_gather results must have one type")


@op_definition
class AllToAllOp(CollectiveOp):
    """Member i sends chunk j (dim 0 split in n) of its tensor to member j
    and receives chunk i of every member's, concatenated along dim 0."""

    name = "dist.all_to_all"

    def verify_types(self):
        self._same_types()
        n = len(self.members)
        shape = self.inputs[0].type.get_shape()
        if not shape or shape[0] % n:
            raise VerifyException(f"all_to_all dim 0 ({shape[0] if shape else 0}) must divide by {n}")


@op_definition
class BroadcastOp(CollectiveOp):
    """Every member gets the tensor of member `root` (operands of the other
    members only fix the buffer shape)."""

    name = "dist.broadcast"
    root = prop_def(IntAttr)

    def _print_head(self, printer):
        printer.print_string(f" root {self.root.data}")

    @classmethod
    def _parse_head(cls, parser):
        parser.parse_keyword("root")
        return {"root": IntAttr(parser.parse_integer(allow_boolean=False))}

    def verify_types(self):
        self._same_types()
        if self.root.data not in self.members:
            raise VerifyException(f"broadcast root {self.root.data} is not in the group")


# Every op but the plan lives directly in a dist.plan (one at module level
# would be skipped by every pass).
lives_in(PlanOp, LoadOp, StoreOp, InputOp, FillOp, SumOp, ShardOp, PackOp, UnpackOp, TaskOp,
         SendOp, AllReduceOp, ReduceScatterOp, AllGatherOp, AllToAllOp, BroadcastOp)

Dist = Dialect(
    "dist",
    [
        PlanOp,
        LoadOp,
        StoreOp,
        InputOp,
        FillOp,
        SumOp,
        ShardOp,
        PackOp,
        UnpackOp,
        TaskOp,
        SendOp,
        AllReduceOp,
        ReduceScatterOp,
        AllGatherOp,
        AllToAllOp,
        BroadcastOp,
    ],
    [],
)
