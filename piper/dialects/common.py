"""Op definitions the dist and sched dialects share.

dist and sched both have local ops that bring values into the step
(load, input, fill), combine them (sum, shard) and write them back (store).
They are one definition each here: operands, properties, verifier and
textual form. Each dialect subclasses them with its own `name` (and
constructor, whose signature the passes use):

- dist's ops also say where they run: `Placed` adds the `device` property,
  printed ` on D` just before the ` : type` that ends every one of these
  forms. The plan (`dist.plan`) checks that the device is in the mesh and
  that operands live there; the ops here do not.
- sched's ops have no device: a program runs on one device, all of its
  instructions there.

Otherwise the verifiers are the same on both levels, deliberately: a sched
op is the dist op it was lowered from, minus its placement.

    dist.load "w" shard 0 of 2 on 1 : tensor<8xf32>
    sched.load "w" shard 0 of 2 : tensor<8xf32>
    dist.load "w2" shard 1 of 2 dim 1 on 3 : tensor<4x2xf32>

A `shard k of n` is the k-th of n equal flat slices of the tensor (ZeRO's
layout; for a tensor whose dim 0 divides by n it is also the k-th block of
rows). `shard k of n dim d` (d >= 1) is the k-th of n equal blocks along dim
d: a tensor-parallel rowwise weight split on its input features.
`shard k of n dim d parts p` cuts the tensor into n/p blocks along dim d
and each block into p flat slices; shard k is slice k % p of block k // p
(ZeRO's flat shards of a rowwise weight's block: tensor parallelism with
ZeRO over the data-parallel replicas). `... groups g` first views dim d as
g equal groups and takes the block from each group (a fused q/k/v weight
split by heads: rank b holds block b of q's rows, of k's and of v's); with
groups, dim 0 is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from xdsl.dialects.builtin import (
    ArrayAttr,
    FloatAttr,
    IntAttr,
    StringAttr,
    TensorType,
    UnitAttr,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    var_operand_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from piper.dialects.graph import _float_text
from piper.dialects.opdef import build, f64_attr


def _ints(attr: ArrayAttr) -> list[int]:
    return [a.data for a in attr.data]


def _int_array(values: Sequence[int]) -> ArrayAttr:
    return ArrayAttr([IntAttr(v) for v in values])


def _parse_int(parser: Parser) -> int:
    return parser.parse_integer(allow_boolean=False)


def _pair(attr: ArrayAttr, what: str) -> tuple[int, int]:
    """The two integers of a `[k, n]` property (shard, part)."""
    if len(attr.data) != 2 or not all(isinstance(a, IntAttr) for a in attr.data):
        raise VerifyException(f"{what} must be two integers [index, count]")
    k, n = _ints(attr)
    return k, n


def _parse_k_of_n(parser: Parser, what: str) -> tuple[int, int]:
    """`k of n` (after the keyword `shard` or `part`)."""
    k = _parse_int(parser)
    parser.parse_keyword("of")
    at = parser.pos
    n = _parse_int(parser)
    if n < 1:
        parser.raise_error(f"{what} count must be at least 1, got {n}", at, parser.pos)
    return k, n


def _parse_shard(parser: Parser) -> tuple[int, ...] | None:
    if parser.parse_optional_keyword("shard"):
        k, n = _parse_k_of_n(parser, "shard")
        if parser.parse_optional_keyword("dim"):
            at = parser.pos
            d = _parse_int(parser)
            p = _parse_int(parser) if parser.parse_optional_keyword("parts") else 1
            g = _parse_int(parser) if parser.parse_optional_keyword("groups") else 1
            if d < (0 if g > 1 else 1):
                parser.raise_error(f"shard dim must be at least 1 (dim 0 is the flat form), "
                                   f"got {d}", at, parser.pos)
            return (k, n, d) + ((p,) if g == 1 and p != 1 else ()) + \
                ((p, g) if g != 1 else ())
        return k, n
    return None


def shard_of(op) -> tuple[int, int, int | None] | None:
    """A load/store's shard as (k, n, dim): dim None for the flat slice."""
    if op.shard is None:
        return None
    v = _ints(op.shard)
    return v[0], v[1], (v[2] if len(v) > 2 else None)


def _verify_shard(shard: ArrayAttr | None):
    if shard is not None:
        if len(shard.data) in (3, 4, 5):
            k, n = _pair(ArrayAttr(shard.data[:2]), "shard")
            extra = shard.data[2:]
            if not all(isinstance(x, IntAttr) for x in extra):
                raise VerifyException("shard dim, parts and groups must be integers")
            d = extra[0].data
            p = extra[1].data if len(extra) > 1 else 1
            g = extra[2].data if len(extra) > 2 else 1
            if g < 1 or d < (0 if g > 1 else 1):
                raise VerifyException("shard dim must be an integer >= 1 (0 with groups)")
            if p < 1 or n % p:
                raise VerifyException(f"shard parts must divide the count {n}")
        elif len(shard.data) == 2:
            k, n = _pair(shard, "shard")
        else:
            raise VerifyException("shard must be [index, count], [index, count, dim], "
                                  "[index, count, dim, parts] or [index, count, dim, parts, "
                                  "groups]")
        if not 0 <= k < n:
            raise VerifyException(f"shard {k} of {n} is out of range")


def _verify_part(op) -> None:
    """dist.shard and sched.shard: part k of n divides the operand, and
    the result is that flat slice."""
    k, n = _pair(op.part, "part")
    t = op.value.type
    numel = math.prod(t.get_shape())
    if not 0 <= k < n or numel % n:
        raise VerifyException(f"part {k} of {n} of a tensor of {numel} elements is invalid")
    expected = TensorType(t.element_type, [numel // n])
    if op.result.type != expected:
        raise VerifyException(f"part {k} of {n} of {t} is {expected}, not {op.result.type}")


def part_type(t: TensorType, n: int) -> TensorType:
    """The type of one flat part of n of a tensor of type t."""
    return TensorType(t.element_type, [math.prod(t.get_shape()) // n])


class OpVerifyException(VerifyException):
    """A plan's or program's error about one of its ops: tools locate it there."""

    def __init__(self, message: str, op: Operation):
        super().__init__(message)
        self.op = op


def require_own_operands(op: Operation, block, what: str) -> None:
    """`op`, in the body of a plan or program (`what`), uses only values
    defined in that body: a plan or program is self-contained."""
    for v in op.operands:
        if getattr(v.owner, "parent", None) is not block:
            raise OpVerifyException(
                f"'{op.name}' uses %{v.name_hint or '?'}, which is not defined in the {what} "
                f"(a {what} uses only its own values)", op)


class Placed:
    """dist's local ops: the device the op runs on, printed ` on D` before
    the type. (Mixed in before the shared base, so its hooks win.)"""

    device = prop_def(IntAttr)

    def _print_place(self, printer: Printer) -> None:
        printer.print_string(f" on {self.device.data}")

    @classmethod
    def _parse_place(cls, parser: Parser, props: dict[str, Attribute]) -> None:
        parser.parse_keyword("on")
        props["device"] = IntAttr(_parse_int(parser))


class LocalOp(IRDLOperation):
    """Base of the shared ops: the placement hooks (none, for sched) and
    creation from parsed parts without the dialect's constructor."""

    def _print_place(self, printer: Printer) -> None:
        pass

    @classmethod
    def _parse_place(cls, parser: Parser, props: dict[str, Attribute]) -> None:
        pass

    @classmethod
    def _create(cls, operands: Sequence[SSAValue] = (), result_types: Sequence[Attribute] = (),
                properties: Mapping[str, Attribute] = {}):
        op = cls.__new__(cls)
        build(op, operands, result_types, properties)
        return op

    def _print_type(self, t: Attribute, printer: Printer) -> None:
        self._print_place(printer)
        printer.print_string(" : ")
        printer.print_attribute(t)

    @classmethod
    def _parse_type(cls, parser: Parser, props: dict[str, Attribute]) -> Attribute:
        cls._parse_place(parser, props)
        parser.parse_punctuation(":")
        return parser.parse_type()


class NamedTensorOp(LocalOp):
    """load/store: a training-state tensor by name, or shard k of n of it
    (flat, or along dim d)."""

    tensor_name = prop_def(StringAttr)
    shard = opt_prop_def(ArrayAttr)  # [index, count]

    @staticmethod
    def _props(name: str, shard: Sequence[int] | None) -> dict[str, Attribute]:
        props: dict[str, Attribute] = {"tensor_name": StringAttr(name)}
        if shard is not None:
            props["shard"] = _int_array(shard)
        return props

    def _print_name(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_string_literal(self.tensor_name.data)
        if self.shard is not None:
            k, n, d = shard_of(self)
            printer.print_string(f" shard {k} of {n}" + (f" dim {d}" if d is not None else ""))
            extra = [a.data for a in self.shard.data[3:]]
            if extra and extra[0] != 1:
                printer.print_string(f" parts {extra[0]}")
            if len(extra) > 1:
                printer.print_string(f" groups {extra[1]}")

    @classmethod
    def _parse_name(cls, parser: Parser) -> dict[str, Attribute]:
        return cls._props(parser.parse_str_literal(), _parse_shard(parser))

    def verify_(self) -> None:
        _verify_shard(self.shard)


class LoadBase(NamedTensorOp):
    """A persistent training-state tensor (param, buffer, optimizer state)
    as it stands at the start of the step."""

    result = result_def(TensorType)

    def print(self, printer: Printer):
        self._print_name(printer)
        self._print_type(self.result.type, printer)

    @classmethod
    def parse(cls, parser: Parser):
        props = cls._parse_name(parser)
        t = cls._parse_type(parser, props)
        return cls._create(result_types=[t], properties=props)


class StoreBase(NamedTensorOp):
    """The new value of a training-state tensor, or (marked `loss`) the
    step's loss: passes average it over microbatches and replicas, and the
    runtime reports it, whatever its name."""

    loss = opt_prop_def(UnitAttr)
    value = operand_def(TensorType)

    @staticmethod
    def _props(name: str, shard: Sequence[int] | None, loss: bool = False) -> dict[str, Attribute]:
        props = NamedTensorOp._props(name, shard)
        if loss:
            props["loss"] = UnitAttr()
        return props

    @property
    def is_loss(self) -> bool:
        return self.loss is not None

    def print(self, printer: Printer):
        if self.loss is not None:
            printer.print_string(" loss")
        self._print_name(printer)
        printer.print_string(" ")
        printer.print_operand(self.value)
        self._print_type(self.value.type, printer)

    @classmethod
    def parse(cls, parser: Parser):
        loss = parser.parse_optional_keyword("loss") is not None
        props = cls._parse_name(parser)
        if loss:
            props["loss"] = UnitAttr()
        u = parser.parse_unresolved_operand()
        t = cls._parse_type(parser, props)
        return cls._create(operands=[parser.resolve_operand(u, t)], properties=props)


class InputBase(LocalOp):
    """The slice of a global-batch input for one (replica, microbatch)."""

    input_name = prop_def(StringAttr)
    replica = prop_def(IntAttr)
    mb = prop_def(IntAttr)
    result = result_def(TensorType)

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_string_literal(self.input_name.data)
        printer.print_string(f" replica {self.replica.data} mb {self.mb.data}")
        self._print_type(self.result.type, printer)

    @classmethod
    def parse(cls, parser: Parser):
        props: dict[str, Attribute] = {"input_name": StringAttr(parser.parse_str_literal())}
        for key in ("replica", "mb"):
            parser.parse_keyword(key)
            props[key] = IntAttr(_parse_int(parser))
        t = cls._parse_type(parser, props)
        return cls._create(result_types=[t], properties=props)


class FillBase(LocalOp):
    """A constant tensor (e.g. the loss tangent 1/(microbatches*replicas))."""

    value = prop_def(FloatAttr)
    result = result_def(TensorType)

    def print(self, printer: Printer):
        printer.print_string(f" {_float_text(self.value.value.data)}")
        self._print_type(self.result.type, printer)

    @classmethod
    def parse(cls, parser: Parser):
        props: dict[str, Attribute] = {"value": f64_attr(parser.parse_float())}
        t = cls._parse_type(parser, props)
        return cls._create(result_types=[t], properties=props)


class SumBase(LocalOp):
    """Local elementwise sum of same-typed tensors times `scale`
    (gradient accumulation over microbatches, loss averaging)."""

    inputs = var_operand_def(TensorType)
    scale = prop_def(FloatAttr)
    result = result_def(TensorType)

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_list(self.inputs, printer.print_operand)
        printer.print_string(f" scale {_float_text(self.scale.value.data)}")
        self._print_type(self.result.type, printer)

    @classmethod
    def parse(cls, parser: Parser):
        unresolved = [parser.parse_unresolved_operand()]
        while parser.parse_optional_punctuation(","):
            unresolved.append(parser.parse_unresolved_operand())
        parser.parse_keyword("scale")
        props: dict[str, Attribute] = {"scale": f64_attr(parser.parse_float())}
        t = cls._parse_type(parser, props)
        return cls._create([parser.resolve_operand(u, t) for u in unresolved], [t], props)

    def verify_(self) -> None:
        if not self.inputs:
            raise VerifyException(f"{self.name} needs at least one input")
        for v in self.inputs:
            if v.type != self.result.type:
                raise VerifyException(
                    f"{self.name} inputs must all have the result type {self.result.type}, "
                    f"got {v.type}"
                )


class ShardBase(LocalOp):
    """Local flat slice `part` k of n equal parts of a tensor (ZeRO)."""

    value = operand_def(TensorType)
    part = prop_def(ArrayAttr)  # [k, n]
    result = result_def(TensorType)

    def print(self, printer: Printer):
        k, n = _ints(self.part)
        printer.print_string(" ")
        printer.print_operand(self.value)
        printer.print_string(f" part {k} of {n}")
        self._print_type(self.value.type, printer)

    @classmethod
    def parse(cls, parser: Parser):
        u = parser.parse_unresolved_operand()
        parser.parse_keyword("part")
        k, n = _parse_k_of_n(parser, "part")
        props: dict[str, Attribute] = {"part": _int_array([k, n])}
        t = cls._parse_type(parser, props)
        return cls._create([parser.resolve_operand(u, t)], [part_type(t, n)], props)

    def verify_(self) -> None:
        _verify_part(self)
