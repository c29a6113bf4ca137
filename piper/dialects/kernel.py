"""The kernel dialect: Piper's kernel level.

A `kernel.fused` op is one fused group of graph ops that becomes one GPU
kernel: its operands are the tensors the kernel reads, its results the
tensors it writes, and its single-block region holds the `graph.aten` ops it
computes, ending in `kernel.yield`. The region is isolated from above: the
body sees only its block arguments (one per operand).

The op says what loop structure the kernel has and how it is tiled:

    elementwise  one flat loop over `domain` (the shape of its outputs),
                 `block [B]` elements per program; inputs broadcast into it.
    reduction    `domain` split into kept dims (one program per kept index)
                 and the `reduce` dims, held whole in one `block [B]`;
                 values either vary over the reduced dims or are per row.
    matmul       `domain [M, N, K]`: one `aten.mm`/`aten.addmm` tiled
                 `block [BM, BN, BK]` with `tl.dot`, the other body ops an
                 epilogue applied to each output tile before it is stored.

`warps` (and `stages` for matmul) are Triton launch parameters. `backend`
(optional) says how the group runs: `triton` (its generated kernel) or
`aten` (its body op by op, the fallback); without it the group runs as a
Triton kernel wherever Triton is switched on. Textual form:

    %y, %m, %r = kernel.fused reduction domain [8, 16] reduce [1] block [16]
        warps 1 (%x, %w, %b) {
    ^bb0(%xa: tensor<8x16xf32>, %wa: tensor<16xf32>, %ba: tensor<16xf32>):
      %0, %1, %2 = graph.aten "aten.native_layer_norm.default"(...) : ...
      kernel.yield %0, %1, %2 : tensor<8x16xf32>, tensor<8x1xf32>, tensor<8x1xf32>
    } : (tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>)
        -> (tensor<8x16xf32>, tensor<8x1xf32>, tensor<8x1xf32>)

What each kind of group may hold and how its values map onto its domain
live in piper/dialects/kernel_layout.py, which the verifier here, the
fusion passes and the Triton code generator share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects.builtin import (
    ArrayAttr,
    FunctionType,
    IntAttr,
    StringAttr,
    TensorType,
)
from xdsl.ir import Attribute, BlockArgument, Dialect, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    opt_prop_def,
    prop_def,
    region_def,
    traits_def,
    var_operand_def,
    var_result_def,
)
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.traits import HasParent, IsTerminator, Pure
from xdsl.utils.exceptions import VerifyException

from piper.dialects.graph import AtenOp
from piper.dialects.kernel_layout import (
    POINTWISE,
    REDUCTIONS,
    RESHAPES,
    GroupLayout,
    LayoutError,
    check_matmul_group,
    group_layout,
    shape_of,
)

KINDS = ("elementwise", "reduction", "matmul")
BACKENDS = ("triton", "aten")

# --------------------------------------------------------------------------
# Ops
# --------------------------------------------------------------------------


def _ints(attr: ArrayAttr | None) -> list[int]:
    return [] if attr is None else [a.data for a in attr.data]


def _int_array(values: Sequence[int]) -> ArrayAttr:
    return ArrayAttr([IntAttr(v) for v in values])


@irdl_op_definition
class FusedOp(IRDLOperation):
    """A group of graph ops computed by one generated kernel."""

    name = "kernel.fused"

    inputs = var_operand_def(TensorType)
    outputs = var_result_def(TensorType)

    kind = prop_def(StringAttr)
    domain = prop_def(ArrayAttr)  # of IntAttr
    reduce = opt_prop_def(ArrayAttr)  # of IntAttr, reduction groups only
    block = prop_def(ArrayAttr)  # of IntAttr
    num_warps = prop_def(IntAttr)
    num_stages = opt_prop_def(IntAttr)
    backend = opt_prop_def(StringAttr)  # "triton" | "aten"; absent: triton

    body = region_def("single_block")

    traits = traits_def(Pure())

    def __init__(
        self,
        kind: str,
        inputs: Sequence[SSAValue],
        result_types: Sequence[Attribute],
        body: Region,
        *,
        domain: Sequence[int],
        block: Sequence[int],
        num_warps: int = 4,
        reduce: Sequence[int] | None = None,
        num_stages: int | None = None,
        backend: str | None = None,
    ):
        props: dict[str, Attribute] = {
            "kind": StringAttr(kind),
            "domain": _int_array(domain),
            "block": _int_array(block),
            "num_warps": IntAttr(num_warps),
        }
        if reduce is not None:
            props["reduce"] = _int_array(reduce)
        if num_stages is not None:
            props["num_stages"] = IntAttr(num_stages)
        if backend is not None:
            props["backend"] = StringAttr(backend)
        super().__init__(
            operands=[inputs], result_types=[result_types], properties=props,
            regions=[body],
        )

    # -- accessors -----------------------------------------------------------

    @property
    def kind_name(self) -> str:
        return self.kind.data

    @property
    def domain_shape(self) -> list[int]:
        return _ints(self.domain)

    @property
    def reduce_dims(self) -> list[int]:
        return _ints(self.reduce)

    @property
    def block_sizes(self) -> list[int]:
        return _ints(self.block)

    @property
    def backend_name(self) -> str | None:
        """The backend the plan chose for this group (None: not chosen)."""
        return None if self.backend is None else self.backend.data

    @property
    def body_ops(self) -> list:
        """The graph ops of the body, without the terminator."""
        return [op for op in self.body.block.ops if not isinstance(op, YieldOp)]

    def layout(self) -> GroupLayout:
        """Placement of the body's values (elementwise and reduction groups)."""
        return group_layout(self.body_ops, list(self.body.block.args),
                            self.domain_shape, self.reduce_dims)

    # -- textual form ----------------------------------------------------------

    def print(self, printer: Printer):
        printer.print_string(f" {self.kind.data} domain ")
        printer.print_string(str(_ints(self.domain)))
        if self.reduce is not None:
            printer.print_string(f" reduce {_ints(self.reduce)}")
        printer.print_string(f" block {_ints(self.block)} warps {self.num_warps.data}")
        if self.num_stages is not None:
            printer.print_string(f" stages {self.num_stages.data}")
        if self.backend is not None:
            printer.print_string(f" backend {self.backend.data}")
        printer.print_string(" (")
        printer.print_list(self.inputs, printer.print_operand)
        printer.print_string(")")
        if self.attributes:
            printer.print_op_attributes(self.attributes, print_keyword=True)
        printer.print_string(" ")
        printer.print_region(self.body, print_entry_block_args=True)
        printer.print_string(" : ")
        printer.print_attribute(
            FunctionType.from_lists(
                [v.type for v in self.inputs], [r.type for r in self.outputs]
            )
        )

    @classmethod
    def parse(cls, parser: Parser) -> FusedOp:
        kind = parser.parse_identifier("group kind expected (elementwise, reduction, matmul)")

        def ints() -> list[int]:
            return parser.parse_comma_separated_list(
                parser.Delimiter.SQUARE, lambda: parser.parse_integer(allow_boolean=False)
            )

        parser.parse_keyword("domain")
        domain = ints()
        reduce = ints() if parser.parse_optional_keyword("reduce") else None
        parser.parse_keyword("block")
        block = ints()
        parser.parse_keyword("warps")
        warps = parser.parse_integer(allow_boolean=False)
        stages = None
        if parser.parse_optional_keyword("stages"):
            stages = parser.parse_integer(allow_boolean=False)
        backend = None
        if parser.parse_optional_keyword("backend"):
            backend = parser.parse_identifier("backend expected (triton, aten)")
        unresolved = parser.parse_comma_separated_list(
            parser.Delimiter.PAREN, parser.parse_unresolved_operand
        )
        attrs = parser.parse_optional_attr_dict_with_keyword()
        region = parser.parse_region()
        parser.parse_punctuation(":")
        fn_type = parser.parse_function_type()
        if len(fn_type.inputs.data) != len(unresolved):
            parser.raise_error(
                f"expected {len(unresolved)} operand types, got {len(fn_type.inputs.data)}"
            )
        operands = [
            parser.resolve_operand(u, t)
            for u, t in zip(unresolved, fn_type.inputs.data, strict=True)
        ]
        op = cls(kind, operands, fn_type.outputs.data, region, domain=domain,
                 block=block, num_warps=warps, reduce=reduce, num_stages=stages,
                 backend=backend)
        if attrs is not None:
            op.attributes.update(attrs.data)
        return op

    # -- verification ----------------------------------------------------------

    def verify_(self) -> None:
        kind = self.kind.data
        if kind not in KINDS:
            raise VerifyException(
                f"group kind must be one of {', '.join(KINDS)}, got '{kind}'"
            )
        block = self.body.block
        if len(block.args) != len(self.inputs):
            raise VerifyException(
                f"body has {len(block.args)} arguments, but the group has "
                f"{len(self.inputs)} inputs"
            )
        for i, (a, v) in enumerate(zip(block.args, self.inputs, strict=True)):
            if a.type != v.type:
                raise VerifyException(
                    f"body argument {i} has type {a.type}, but input {i} has type {v.type}"
                )
        term = block.last_op
        if not isinstance(term, YieldOp):
            raise VerifyException("body must end with 'kernel.yield'")
        if len(term.values) != len(self.outputs):
            raise VerifyException(
                f"body yields {len(term.values)} values, but the group has "
                f"{len(self.outputs)} results"
            )
        for i, (y, r) in enumerate(zip(term.values, self.outputs, strict=True)):
            if y.type != r.type:
                raise VerifyException(
                    f"yielded value {i} has type {y.type}, but result {i} has type {r.type}"
                )
        if not self.outputs:
            raise VerifyException("a fused group must produce at least one result")
        if self.backend is not None and self.backend.data not in BACKENDS:
            raise VerifyException(
                f"backend must be one of {', '.join(BACKENDS)}, got '{self.backend.data}'"
            )
        for op in self.body_ops:
            if not isinstance(op, AtenOp):
                raise VerifyException(
                    f"body may only hold graph.aten ops, found '{op.name}'"
                )
            for v in op.operands:
                if isinstance(v, BlockArgument) and v.block is block:
                    continue
                if v.owner is not None and getattr(v.owner, "parent", None) is block:
                    continue
                raise VerifyException(
                    f"body op '{op.target.data}' uses a value defined outside the "
                    "group; pass it as an input"
                )
        sizes = _ints(self.block)
        if any(s < 1 or s & (s - 1) for s in sizes):
            raise VerifyException(f"block sizes must be powers of two, got {sizes}")
        want = 3 if kind == "matmul" else 1
        if len(sizes) != want:
            raise VerifyException(
                f"a {kind} group takes {want} block size{'s' if want > 1 else ''}, "
                f"got {len(sizes)}"
            )
        w = self.num_warps.data
        if w < 1 or w > 32 or w & (w - 1):
            raise VerifyException(f"warps must be a power of two from 1 to 32, got {w}")
        if self.num_stages is not None and kind != "matmul":
            raise VerifyException("only matmul groups take stages")
        domain = _ints(self.domain)
        if any(d < 0 for d in domain):
            raise VerifyException(f"domain sizes must not be negative, got {domain}")
        if kind == "reduction":
            self._verify_reduction(domain, sizes[0])
        elif self.reduce is not None:
            raise VerifyException(f"only reduction groups take reduce dims, this is {kind}")
        if kind == "elementwise":
            self._verify_elementwise(domain)
        if kind == "matmul":
            self._verify_matmul(domain)

    def _verify_elementwise(self, domain: list[int]) -> None:
        for op in self.body_ops:
            t = op.target.data
            if t not in POINTWISE and t not in RESHAPES:
                raise VerifyException(f"'{t}' is not pointwise and cannot be in an elementwise group")
        for i, r in enumerate(self.outputs):
            if math.prod(shape_of(r)) != math.prod(domain) or [
                s for s in shape_of(r) if s != 1
            ] != [s for s in domain if s != 1]:
                raise VerifyException(
                    f"result {i} has shape {list(shape_of(r))}, but the domain is {domain}"
                )
        self._check_layout()

    def _verify_reduction(self, domain: list[int], block: int) -> None:
        red = _ints(self.reduce)
        if not red and self.reduce is None:
            raise VerifyException("a reduction group needs reduce dims")
        if any(d < 0 or d >= len(domain) for d in red) or sorted(set(red)) != red:
            raise VerifyException(
                f"reduce dims {red} must be distinct, sorted dims of domain {domain}"
            )
        n = math.prod(domain[d] for d in red)
        if block < n:
            raise VerifyException(
                f"block {block} cannot hold the {n} reduced elements of a row"
            )
        if not any(op.target.data in REDUCTIONS for op in self.body_ops):
            raise VerifyException("a reduction group holds no reduction op")
        self._check_layout()

    def _verify_matmul(self, domain: list[int]) -> None:
        try:
            mm = check_matmul_group(self.body_ops, list(self.body.block.args))
        except LayoutError as e:
            raise VerifyException(str(e)) from None
        a = mm.inputs[-2]
        b = mm.inputs[-1]
        (mm_m, mm_k), (_, mm_n) = shape_of(a), shape_of(b)
        if domain != [mm_m, mm_n, mm_k]:
            raise VerifyException(
                f"matmul domain must be [M, N, K] = {[mm_m, mm_n, mm_k]}, got {domain}"
            )

    def _check_layout(self) -> None:
        try:
            self.layout()
        except LayoutError as e:
            raise VerifyException(str(e)) from None


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Ends a fused group's body: the values the kernel writes out."""

    name = "kernel.yield"

    values = var_operand_def(TensorType)

    traits = traits_def(IsTerminator(), HasParent(FusedOp), Pure())

    assembly_format = "($values^ `:` type($values))? attr-dict"

    def __init__(self, values: Sequence[SSAValue]):
        super().__init__(operands=[values])


Kernel = Dialect("kernel", [FusedOp, YieldOp], [])


__all__ = ["BACKENDS", "KINDS", "FusedOp", "Kernel", "YieldOp"]
