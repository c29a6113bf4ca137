"""The graph dialect: Piper's tensor level.

One `graph.aten` op stands for one call of an aten operator, exactly as
torch.fx / aot_autograd captured it: the operator's qualified name, its
arguments in call order (tensor arguments are SSA operands, everything else
is a constant attribute) and its tensor results. Functions (`func.func`)
hold the forward, backward and optimizer parts of one training step; their
arguments carry `graph.name` / `graph.kind` attributes naming parameters,
optimizer state and inputs. Each op may carry the annotation tags it was
captured under (`tags {PP = 1, EP = 0}`) and its module path as location.

Textual form:

    %2 = graph.aten "aten.addmm.default"(%b, %x, %w, "beta" = 1)
           tags {PP = 0} : (tensor<8xf32>, tensor<4x16xf32>, tensor<16x8xf32>)
           -> tensor<4x8xf32> loc("layers.0.fc1")

Shapes are verified by running the operator on meta tensors, so every aten op
gets a shape/dtype verifier without a hand-written rule.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence

from xdsl.dialects.builtin import (
    ArrayAttr,
    BFloat16Type,
    DictionaryAttr,
    Float16Type,
    Float32Type,
    Float64Type,
    FloatAttr,
    FunctionType,
    IntAttr,
    IntegerAttr,
    IntegerType,
    NoneAttr,
    Signedness,
    StringAttr,
    TensorType,
    bf16,
    f16,
    f32,
    f64,
    i1,
    i64,
)
from xdsl.ir import Attribute, Dialect, ParametrizedAttribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_attr_definition,
    irdl_op_definition,
    opt_prop_def,
    param_def,
    prop_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from piper.dialects.opdef import build

# --------------------------------------------------------------------------
# Attributes
# --------------------------------------------------------------------------


@irdl_attr_definition
class ArgRefAttr(ParametrizedAttribute):
    """Stands in an argument list for the op's operand number `index`."""

    name = "graph.arg"
    index: IntAttr = param_def(IntAttr)

    def __init__(self, index: int):
        super().__init__(IntAttr(index))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            return (IntAttr(parser.parse_integer()),)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<{self.index.data}>")


@irdl_attr_definition
class DeviceAttr(ParametrizedAttribute):
    """A torch.device argument. Executors substitute their own device."""

    name = "graph.device"
    device: StringAttr = param_def(StringAttr)

    def __init__(self, device: str):
        super().__init__(StringAttr(device))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            return (StringAttr(parser.parse_str_literal()),)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f'<"{self.device.data}">')


@irdl_attr_definition
class EnumAttr(ParametrizedAttribute):
    """A torch enum argument such as `torch.preserve_format` or `torch.strided`."""

    name = "graph.enum"
    value: StringAttr = param_def(StringAttr)

    def __init__(self, value: str):
        super().__init__(StringAttr(value))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            return (StringAttr(parser.parse_str_literal()),)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f'<"{self.value.data}">')


# --------------------------------------------------------------------------
# dtype mapping between torch and builtin element types
# --------------------------------------------------------------------------

ELEMENT_TYPES: dict[str, Attribute] = {
    "float32": f32,
    "float64": f64,
    "float16": f16,
    "bfloat16": bf16,
    "int64": i64,
    "int32": IntegerType(32),
    "int16": IntegerType(16),
    "int8": IntegerType(8),
    "uint8": IntegerType(8, Signedness.UNSIGNED),
    "bool": i1,
}


# Operator namespaces of torch itself; any other is a custom operator
# (torch.library), registered by a module the process must import.
BUILTIN_NAMESPACES = frozenset({"aten", "prims"})


def builtin_operator(target: str) -> bool:
    """Whether `target` (`<namespace>.<op>.<overload>`) is one of torch's own."""
    return target.split(".", 1)[0] in BUILTIN_NAMESPACES


def element_type(dtype) -> Attribute:
    """The builtin element type for a torch dtype."""
    name = str(dtype).removeprefix("torch.")
    if name not in ELEMENT_TYPES:
        raise ValueError(f"dtype {dtype} has no graph element type")
    return ELEMENT_TYPES[name]


def torch_dtype(elem: Attribute):
    """The torch dtype for a builtin element type."""
    import torch

    for name, t in ELEMENT_TYPES.items():
        if t == elem:
            return getattr(torch, name)
    raise ValueError(f"element type {elem} has no torch dtype")


def tensor_type(shape: Iterable[int], dtype) -> TensorType:
    return TensorType(element_type(dtype), list(shape))


def is_dtype_attr(attr: Attribute) -> bool:
    return isinstance(
        attr,
        IntegerType | Float16Type | Float32Type | Float64Type | BFloat16Type,
    )


# --------------------------------------------------------------------------
# Argument values: printing and parsing of the call-like argument list
# --------------------------------------------------------------------------


def _float_text(v: float) -> str:
    """Shortest text that parses back to exactly `v` as an f64 literal."""
    text = repr(v)
    if "e" in text:
        mant, exp = text.split("e")
        if "." not in mant:
            mant += ".0"
        return f"{mant}e{exp}"
    if "." not in text:
        text += ".0"
    return text


def _print_value(printer: Printer, value: Attribute, operands: Sequence[SSAValue]):
    if isinstance(value, ArgRefAttr):
        printer.print_operand(operands[value.index.data])
    elif isinstance(value, ArrayAttr):
        printer.print_string("[")
        for i, v in enumerate(value.data):
            if i:
                printer.print_string(", ")
            _print_value(printer, v, operands)
        printer.print_string("]")
    elif isinstance(value, NoneAttr):
        printer.print_string("none")
    elif isinstance(value, IntegerAttr) and value.type == i64:
        printer.print_string(str(value.value.data))
    elif (
        isinstance(value, FloatAttr)
        and value.type == f64
        and math.isfinite(value.value.data)
    ):
        printer.print_string(_float_text(value.value.data))
    else:
        printer.print_attribute(value)


def _parse_value(parser: Parser, unresolved: list) -> Attribute:
    operand = parser.parse_optional_unresolved_operand()
    if operand is not None:
        unresolved.append(operand)
        return ArgRefAttr(len(unresolved) - 1)
    if parser.parse_optional_punctuation("["):
        items: list[Attribute] = []
        if not parser.parse_optional_punctuation("]"):
            items.append(_parse_value(parser, unresolved))
            while parser.parse_optional_punctuation(","):
                items.append(_parse_value(parser, unresolved))
            parser.parse_punctuation("]")
        return ArrayAttr(items)
    if parser.parse_optional_keyword("none"):
        return NoneAttr()
    return parser.parse_attribute()


def _collect_refs(value: Attribute, out: list[int]):
    if isinstance(value, ArgRefAttr):
        out.append(value.index.data)
    elif isinstance(value, ArrayAttr):
        for v in value.data:
            _collect_refs(v, out)


# --------------------------------------------------------------------------
# Ops
# --------------------------------------------------------------------------


@irdl_op_definition
class AtenOp(IRDLOperation):
    """One call of an aten operator on tensors."""

    name = "graph.aten"

    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)

    target = prop_def(StringAttr)
    args = prop_def(ArrayAttr)
    kwargs = prop_def(DictionaryAttr)
    tags = opt_prop_def(DictionaryAttr)

    def __init__(
        self,
        target: str,
        inputs: Sequence[SSAValue],
        args: Sequence[Attribute],
        kwargs: Mapping[str, Attribute],
        result_types: Sequence[Attribute],
        tags: Mapping[str, int] | None = None,
    ):
        props: dict[str, Attribute] = {
            "target": StringAttr(target),
            "args": ArrayAttr(args),
            "kwargs": DictionaryAttr(dict(kwargs)),
        }
        if tags:
            props["tags"] = tags_attr(tags)
        # one variadic operand and one variadic result: no segment sizes
        build(self, list(inputs), list(result_types), props)

    # -- helpers used by passes and executors ------------------------------

    @property
    def op_name(self) -> str:
        return self.target.data

    def tag_dict(self) -> dict[str, int]:
        if self.tags is None:
            return {}
        return {k: v.value.data for k, v in self.tags.data.items()}

    # -- textual form -------------------------------------------------------

    def print(self, printer: Printer):
        printer.print_string(" ")
        printer.print_string_literal(self.target.data)
        printer.print_string("(")
        first = True
        for a in self.args.data:
            if not first:
                printer.print_string(", ")
            first = False
            _print_value(printer, a, self.inputs)
        for k, v in self.kwargs.data.items():
            if not first:
                printer.print_string(", ")
            first = False
            printer.print_string_literal(k)
            printer.print_string(" = ")
            _print_value(printer, v, self.inputs)
        printer.print_string(")")
        tags = self.tag_dict()
        if tags:
            printer.print_string(" tags {")
            printer.print_string(", ".join(f"{k} = {v}" for k, v in tags.items()))
            printer.print_string("}")
        if self.attributes:
            printer.print_op_attributes(self.attributes, print_keyword=True)
        printer.print_string(" : ")
        printer.print_attribute(
            FunctionType.from_lists(
                [o.type for o in self.inputs], [r.type for r in self.outputs]
            )
        )

    @classmethod
    def parse(cls, parser: Parser) -> AtenOp:
        target = parser.parse_str_literal(" for the operator name")
        unresolved: list = []
        args: list[Attribute] = []
        kwargs: dict[str, Attribute] = {}
        parser.parse_punctuation("(")
        if not parser.parse_optional_punctuation(")"):
            while True:
                start = parser.pos
                key = parser.parse_optional_str_literal()
                if key is not None:
                    if parser.parse_optional_punctuation("="):
                        kwargs[key] = _parse_value(parser, unresolved)
                    elif kwargs:
                        parser.raise_error(
                            "positional argument after keyword", start, parser.pos
                        )
                    else:
                        args.append(StringAttr(key))
                else:
                    if kwargs:
                        parser.raise_error("positional argument after keyword")
                    args.append(_parse_value(parser, unresolved))
                if not parser.parse_optional_punctuation(","):
                    break
            parser.parse_punctuation(")")
        tags: dict[str, int] = {}
        if parser.parse_optional_keyword("tags"):
            parser.parse_punctuation("{")
            if not parser.parse_optional_punctuation("}"):
                while True:
                    k = parser.parse_identifier(" for a tag name")
                    parser.parse_punctuation("=")
                    tags[k] = parser.parse_integer(allow_boolean=False)
                    if not parser.parse_optional_punctuation(","):
                        break
                parser.parse_punctuation("}")
        attrs = parser.parse_optional_attr_dict_with_keyword()
        parser.parse_punctuation(":")
        type_start = parser.pos
        fn_type = parser.parse_function_type()
        if len(fn_type.inputs.data) != len(unresolved):
            parser.raise_error(
                f"expected {len(unresolved)} operand types, got "
                f"{len(fn_type.inputs.data)}",
                type_start,
                type_start + 1,
            )
        operands = [
            parser.resolve_operand(u, t)
            for u, t in zip(unresolved, fn_type.inputs.data, strict=True)
        ]
        op = cls(target, operands, args, kwargs, fn_type.outputs.data, tags)
        if attrs is not None:
            op.attributes.update(attrs.data)
        return op

    # -- verification -------------------------------------------------------

    def verify_(self) -> None:
        parts = self.target.data.split(".")
        if len(parts) != 3 or not all(p.isidentifier() and p.isascii() for p in parts):
            raise VerifyException(
                f"'{self.target.data}' is not an operator name of the form "
                "<namespace>.<op>.<overload> (aten.mm.default, mylib.my_op.default)"
            )
        for i, v in enumerate(self.inputs):
            check_tensor_type(v.type, f"operand {i}")
        for i, v in enumerate(self.outputs):
            check_tensor_type(v.type, f"result {i}")
        refs: list[int] = []
        for a in self.args.data:
            _collect_refs(a, refs)
        for a in self.kwargs.data.values():
            _collect_refs(a, refs)
        if refs != list(range(len(self.inputs))):
            raise VerifyException(
                f"argument list refers to operands {refs}, expected each of "
                f"the {len(self.inputs)} operands once, in order"
            )
        from piper.dialects.graph_values import check_against_meta

        check_against_meta(self)


# What a function argument or result is (`graph.kind`): the captured
# step's values, then what pipeline, expert and tensor splitting add between
# the stage functions they cut out (`partial`: a tensor-parallel partial sum
# sent to an all_reduce; `reduced`: its sum); loss-scale's `loss_scale` (the
# scale a tangent is multiplied by) and `found_inf` (1.0 when a gradient
# held an inf or nan).
VALUE_KINDS: frozenset[str] = frozenset(
    "param buffer grad state input loss tangent saved act grad_act dispatch combine "
    "partial reduced loss_scale found_inf".split()
)


# graph.from: result RESULT of function FUNCTION ("F0#1"), ASCII digits.
GRAPH_FROM = re.compile(r"[A-Za-z_][A-Za-z0-9_]*#[0-9]+")


def value_attr_errors(fn) -> list[str]:
    """What is wrong with the `graph.*` attributes of a `func.func`'s
    arguments and results: a value that is not a string, a kind not among
    VALUE_KINDS, a `graph.from` not of the form FUNCTION#RESULT, and, in a
    function that describes its values at all (every captured and stage
    function does), an argument or result without `graph.name` or
    `graph.kind`. A mistake there would otherwise surface as a confusing
    failure in some later pass, or not at all."""
    sides = [("argument", fn.arg_attrs, len(fn.function_type.inputs.data)),
             ("result", fn.res_attrs, len(fn.function_type.outputs.data))]
    values = [(side, i, d.data if isinstance(d, DictionaryAttr) else {})
              for side, attrs, n in sides
              for i, d in enumerate(attrs.data if attrs is not None else [None] * n)]
    errors = []
    for side, i, d in values:
        for key in ("graph.name", "graph.kind", "graph.from"):
            v = d.get(key)
            if v is not None and not isinstance(v, StringAttr):
                errors.append(f"{side} {i}: {key} must be a string, got {v}")
        kind, name, ref = d.get("graph.kind"), d.get("graph.name"), d.get("graph.from")
        if isinstance(kind, StringAttr) and kind.data not in VALUE_KINDS:
            errors.append(f'{side} {i}: graph.kind "{kind.data}" is not one of: '
                          + ", ".join(sorted(VALUE_KINDS)))
        if isinstance(name, StringAttr) and not name.data:
            errors.append(f"{side} {i}: graph.name is empty")
        if isinstance(ref, StringAttr) and not GRAPH_FROM.fullmatch(ref.data):
            errors.append(f'{side} {i}: graph.from "{ref.data}" is not of the form '
                          'FUNCTION#RESULT, such as "F0#1"')
    if any(k.startswith("graph.") for _, _, d in values for k in d):
        for side, i, d in values:
            missing = [k for k in ("graph.name", "graph.kind") if k not in d]
            if missing:
                errors.append(
                    f"{side} {i} has no {' and no '.join(missing)} (in a function whose "
                    "arguments and results say what they are, each one says it)")
    return errors


def check_tensor_type(t: TensorType, what: str) -> None:
    """Graph tensors have a static shape and an element type torch knows."""
    if any(d < 0 for d in t.get_shape()):
        raise VerifyException(f"{what} has type {t}; graph tensors have static shapes")
    if t.element_type not in ELEMENT_TYPES.values():  # (torch_dtype without torch)
        raise VerifyException(
            f"{what} has type {t}; element type {t.element_type} has no torch dtype")


def tags_attr(tags: Mapping[str, int]) -> DictionaryAttr:
    return _tags_attr(tuple(tags.items()))


@functools.lru_cache(maxsize=1 << 12)
def _tags_attr(items: tuple[tuple[str, int], ...]) -> DictionaryAttr:
    """Attributes are immutable and verified when built (an IntegerAttr
    about 15 us): the ops of a stage carry the same few tags."""
    return DictionaryAttr({k: IntegerAttr(v, i64) for k, v in items})


@irdl_op_definition
class ConstantOp(IRDLOperation):
    """A tensor constant captured from the model (a small literal tensor)."""

    name = "graph.constant"

    value = prop_def(ArrayAttr)
    output = var_result_def(TensorType)

    assembly_format = "$value attr-dict `:` type($output)"

    def __init__(self, values: Sequence[Attribute], result_type: TensorType):
        super().__init__(
            properties={"value": ArrayAttr(values)}, result_types=[[result_type]]
        )

    def verify_(self) -> None:
        (t,) = [r.type for r in self.output]
        check_tensor_type(t, "result")
        for i, v in enumerate(self.value.data):
            if not isinstance(v, IntegerAttr | FloatAttr) or v.type != t.element_type:
                raise VerifyException(
                    f"constant element {i} is {v}, expected a {t.element_type} number"
                )
        n = math.prod(t.get_shape())
        if len(self.value.data) != n:
            raise VerifyException(
                f"constant has {len(self.value.data)} elements, type {t} needs {n}"
            )


Graph = Dialect("graph", [AtenOp, ConstantOp], [ArgRefAttr, DeviceAttr, EnumAttr])

__all__ = [
    "ArgRefAttr",
    "AtenOp",
    "ConstantOp",
    "DeviceAttr",
    "EnumAttr",
    "Graph",
    "element_type",
    "is_dtype_attr",
    "tags_attr",
    "tensor_type",
    "torch_dtype",
]
