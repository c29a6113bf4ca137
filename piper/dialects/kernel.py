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

This file also holds what the fusion passes and the Triton code generator
must agree on: which aten operators each kind of group may hold
(`POINTWISE`, `REDUCTIONS`, `MATMULS`, `RESHAPES`) and how every value of a
group maps onto the group's domain (`group_layout`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

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

from piper.dialects.graph import ArgRefAttr, AtenOp

KINDS = ("elementwise", "reduction", "matmul")
BACKENDS = ("triton", "aten")

# --------------------------------------------------------------------------
# What a group may hold
# --------------------------------------------------------------------------

# Operators computed element by element, with torch broadcasting between
# their tensor operands and Python scalars as constants.
POINTWISE: frozenset[str] = frozenset(
    f"aten.{n}"
    for n in """
    add.Tensor add.Scalar sub.Tensor sub.Scalar rsub.Tensor rsub.Scalar
    mul.Tensor mul.Scalar div.Tensor div.Scalar neg.default reciprocal.default
    sqrt.default rsqrt.default exp.default exp2.default expm1.default
    log.default log2.default log1p.default sin.default cos.default
    abs.default floor.default ceil.default erf.default tanh.default
    sigmoid.default relu.default gelu.default silu.default
    gelu_backward.default threshold_backward.default sigmoid_backward.default
    tanh_backward.default silu_backward.default
    pow.Tensor_Scalar pow.Scalar pow.Tensor_Tensor
    maximum.default minimum.default clamp.default clamp_min.default
    clamp_max.default where.self masked_fill.Scalar masked_fill.Tensor
    gt.Scalar gt.Tensor ge.Scalar ge.Tensor lt.Scalar lt.Tensor le.Scalar
    le.Tensor eq.Scalar eq.Tensor ne.Scalar ne.Tensor logical_not.default
    clone.default _to_copy.default ones_like.default zeros_like.default
    full_like.default nll_loss_backward.default lerp.Scalar addcmul.default
    addcdiv.default
    """.split()
)

# Reductions a reduction group may hold. Each reduces its first operand over
# the dims `reduced_dims` names; the softmax and layer-norm operators are
# whole row computations (reduce, then use the row result per element).
REDUCTIONS: frozenset[str] = frozenset(
    f"aten.{n}"
    for n in """
    sum.dim_IntList sum.default mean.dim amax.default amin.default
    _softmax.default _log_softmax.default _softmax_backward_data.default
    _log_softmax_backward_data.default native_layer_norm.default
    native_layer_norm_backward.default
    """.split()
)

MATMULS: frozenset[str] = frozenset({"aten.mm.default", "aten.addmm.default"})

# Reshapes a group may hold: free inside a kernel (they rename dims).
RESHAPES: frozenset[str] = frozenset(
    f"aten.{n}"
    for n in """
    view.default _unsafe_view.default reshape.default unsqueeze.default
    squeeze.dim squeeze.dims squeeze.default
    """.split()
)


def shape_of(v: SSAValue) -> tuple[int, ...]:
    t = v.type
    assert isinstance(t, TensorType)
    return tuple(t.get_shape())


def arg_value(op: AtenOp, pos: int):
    """Argument `pos` of a graph op as a Python value, operands as SSA values."""
    from piper.dialects.graph_values import from_attr

    if pos >= len(op.args.data):
        return None
    a = op.args.data[pos]
    if isinstance(a, ArgRefAttr):
        return op.inputs[a.index.data]
    return from_attr(a, list(op.inputs), "meta")


def kwarg_value(op: AtenOp, key: str, default=None):
    from piper.dialects.graph_values import from_attr

    a = op.kwargs.data.get(key)
    if a is None:
        return default
    if isinstance(a, ArgRefAttr):
        return op.inputs[a.index.data]
    return from_attr(a, list(op.inputs), "meta")


def reduced_dims(op: AtenOp) -> tuple[int, ...]:
    """The dims of its first operand that a REDUCTIONS op reduces over."""
    x = op.inputs[0]
    rank = len(shape_of(x))
    t = op.target.data
    if t == "aten.sum.default":
        dims = list(range(rank))
    elif t in ("aten.sum.dim_IntList", "aten.mean.dim", "aten.amax.default", "aten.amin.default"):
        d = arg_value(op, 1)
        if d is None:
            d = kwarg_value(op, "dim")
        dims = list(range(rank)) if d is None or d == [] else (
            list(d) if isinstance(d, list) else [d]
        )
    elif t in ("aten.native_layer_norm.default",):
        n = len(arg_value(op, 1))
        dims = list(range(rank - n, rank))
    elif t == "aten.native_layer_norm_backward.default":
        n = len(arg_value(op, 2))
        dims = list(range(rank - n, rank))
    elif t.endswith("_backward_data.default"):  # (grad, output, dim, dtype)
        dims = [arg_value(op, 2)]
    else:  # softmax, log_softmax: (x, dim, half_to_float)
        dims = [arg_value(op, 1)]
    return tuple(sorted({d % rank for d in dims} if rank else set()))


def keepdim(op: AtenOp) -> bool:
    t = op.target.data
    if t in ("aten.sum.dim_IntList", "aten.mean.dim", "aten.amax.default", "aten.amin.default"):
        k = arg_value(op, 2)
        if k is None:
            k = kwarg_value(op, "keepdim", False)
        return bool(k)
    return False


# --------------------------------------------------------------------------
# How a group's values map onto its domain
# --------------------------------------------------------------------------


class LayoutError(Exception):
    """A group whose values cannot be placed on one loop domain."""


Embedding = tuple[int | None, ...]  # per value dim: its domain dim, None if size 1


@dataclass
class GroupLayout:
    """Where every value of an elementwise or reduction group lives.

    Each value dim of size > 1 is one domain dim; size-1 dims broadcast.
    A value is `full` when it varies over a reduced dim (a vector in the
    kernel), otherwise it is one number per program (per row).
    """

    domain: tuple[int, ...]
    reduce: tuple[int, ...]
    emb: dict[SSAValue, Embedding]

    def is_full(self, v: SSAValue) -> bool:
        return any(e is not None and e in self.reduce for e in self.emb[v])

    def domain_strides(self, v: SSAValue, strides: Sequence[int]) -> list[int]:
        """Per domain dim, the element stride of value v (0 where it broadcasts)."""
        out = [0] * len(self.domain)
        for e, s in zip(self.emb[v], strides, strict=True):
            if e is not None:
                out[e] = s
        return out


def _right_align(shape: Sequence[int], emb: Embedding, target: Sequence[int]) -> Embedding:
    off = len(target) - len(shape)
    if off < 0:
        raise LayoutError(f"shape {list(shape)} does not broadcast to {list(target)}")
    out: list[int | None] = []
    for i, s in enumerate(shape):
        if s == 1:
            out.append(None)
        elif s == target[off + i]:
            out.append(emb[off + i])
        else:
            raise LayoutError(f"shape {list(shape)} does not broadcast to {list(target)}")
    return tuple(out)


def group_layout(ops: Sequence[AtenOp], args: Sequence[SSAValue],
                 domain: Sequence[int], reduce: Sequence[int]) -> GroupLayout:
    """Place every value of an elementwise/reduction group on `domain`.

    Inputs broadcast into the domain like torch operands (right-aligned)
    unless an operator says otherwise; results follow their operator.
    Raises LayoutError when some value cannot be placed.
    """
    domain = tuple(domain)
    red = tuple(reduce)
    ident: Embedding = tuple(range(len(domain)))
    emb: dict[SSAValue, Embedding] = {}
    argset = set(args)

    def place(v: SSAValue, e: Embedding):
        s = shape_of(v)
        assert all(d is None or domain[d] == n for n, d in zip(s, e, strict=True))
        if v in emb and emb[v] != e:
            raise LayoutError(
                f"a value of shape {list(s)} is placed at two different places of "
                f"domain {list(domain)}"
            )
        emb[v] = e

    def get(v: SSAValue) -> Embedding:
        if v not in emb:
            assert v in argset, "a group value is used before it is computed"
            place(v, _right_align(shape_of(v), ident, domain))
        return emb[v]

    live_red = {d for d in red if domain[d] > 1}
    for op in ops:
        assert isinstance(op, AtenOp), op.name
        t = op.target.data
        if t in POINTWISE:
            _place_pointwise(op, emb, get, place, domain, ident)
        elif t in REDUCTIONS:
            x = op.inputs[0]
            ex, sx = get(x), shape_of(x)
            rdims = reduced_dims(op)
            covered = {ex[d] for d in rdims if sx[d] > 1}
            if covered != live_red:
                raise LayoutError(
                    f"'{t}' reduces domain dims {sorted(covered)}, the group reduces "
                    f"{sorted(live_red)}"
                )
            _place_reduction(op, ex, sx, rdims, emb, get, place)
        elif t in RESHAPES:
            x = op.inputs[0]
            ex, sx = get(x), shape_of(x)
            (out,) = op.outputs
            so = shape_of(out)
            src = [(n, d) for n, d in zip(sx, ex, strict=True) if n != 1]
            if [n for n in so if n != 1] != [n for n, _ in src]:
                raise LayoutError(f"'{t}' reshapes more than size-1 dims")
            it = iter(src)
            place(out, tuple(None if n == 1 else next(it)[1] for n in so))
        else:
            raise LayoutError(f"'{t}' cannot be fused")
    return GroupLayout(domain, red, emb)


def _place_pointwise(op, emb, get, place, domain, ident):
    (out,) = op.outputs
    so = shape_of(out)
    special = {}
    if op.target.data == "aten.nll_loss_backward.default":
        if arg_value(op, 3) is not None:
            raise LayoutError("nll_loss_backward with class weights cannot be fused")
        special[arg_value(op, 2)] = "target"
    tensors = [v for v in op.inputs if v not in special]
    known = [v for v in tensors if v in emb]
    eo: list[int | None] = [None] * len(so)
    undetermined = False
    for i, n in enumerate(so):
        if n == 1:
            continue
        found = set()
        for v in known:
            sv, ev = shape_of(v), emb[v]
            j = i - (len(so) - len(sv))
            if j >= 0 and sv[j] > 1:
                found.add(ev[j])
        if len(found) > 1:
            raise LayoutError(
                f"'{op.target.data}' combines values placed on different dims of the domain"
            )
        if found:
            eo[i] = found.pop()
        else:
            undetermined = True
    if undetermined:
        fallback = _right_align(so, ident, domain)
        for i, d in enumerate(eo):
            if d is not None and d != fallback[i]:
                raise LayoutError(
                    f"'{op.target.data}' combines values placed on different dims of the domain"
                )
        eo = list(fallback)
    e_out = tuple(eo)
    for v in tensors:
        place(v, _right_align(shape_of(v), e_out, so))
    for v in special:
        # nll_loss_backward's target indexes the rows of its input
        place(v, (e_out[0],) if len(so) == 2 else ())
    place(out, e_out)


def _place_reduction(op, ex, sx, rdims, emb, get, place):
    t = op.target.data
    outs = list(op.outputs)
    if t in ("aten.sum.dim_IntList", "aten.sum.default", "aten.mean.dim",
             "aten.amax.default", "aten.amin.default"):
        if keepdim(op):
            e = tuple(None if i in rdims else d for i, d in enumerate(ex))
        else:
            e = tuple(d for i, d in enumerate(ex) if i not in rdims)
        place(outs[0], e)
    elif t in ("aten._softmax.default", "aten._log_softmax.default"):
        place(outs[0], ex)
    elif t in ("aten._softmax_backward_data.default", "aten._log_softmax_backward_data.default"):
        y = op.inputs[1]
        assert shape_of(y) == sx
        place(y, ex)
        place(outs[0], ex)
    elif t == "aten.native_layer_norm.default":
        for pos in (2, 3):
            w = arg_value(op, pos)
            if isinstance(w, SSAValue):
                place(w, _right_align(shape_of(w), ex, sx))
        row = tuple(None if i in rdims else d for i, d in enumerate(ex))
        place(outs[0], ex)
        place(outs[1], row)
        place(outs[2], row)
    elif t == "aten.native_layer_norm_backward.default":
        mask = arg_value(op, 7)
        if not mask[0] or mask[1] or mask[2]:
            raise LayoutError(
                "only the input gradient of native_layer_norm_backward can be fused "
                "(output mask [true, false, false])"
            )
        x = arg_value(op, 1)
        assert shape_of(x) == sx
        place(x, ex)
        row = tuple(None if i in rdims else d for i, d in enumerate(ex))
        for pos in (3, 4):
            v = arg_value(op, pos)
            place(v, _right_align(shape_of(v), row, sx))
        for pos in (5, 6):
            w = arg_value(op, pos)
            if isinstance(w, SSAValue):
                place(w, _right_align(shape_of(w), ex, sx))
        place(outs[0], ex)


def check_matmul_group(ops: Sequence[AtenOp], args: Sequence[SSAValue]) -> AtenOp:
    """Check a matmul group; returns its mm/addmm op.

    The mm/addmm comes first and reads only group inputs; every other op is
    an epilogue: pointwise or reshape ops whose values have the mm's element
    count and its last dim N, inputs broadcasting into them.
    """
    if not ops or not isinstance(ops[0], AtenOp) or ops[0].target.data not in MATMULS:
        raise LayoutError("a matmul group starts with its aten.mm or aten.addmm")
    mm = ops[0]
    argset = set(args)
    m, n = shape_of(mm.outputs[0])
    inside = {mm.outputs[0]}
    for op in ops[1:]:
        if not isinstance(op, AtenOp):
            raise LayoutError(f"'{op.name}' cannot be placed in a fused group")
        t = op.target.data
        if t not in POINTWISE and t not in RESHAPES:
            raise LayoutError(f"'{t}' cannot be fused into a matmul epilogue")
        if t == "aten.nll_loss_backward.default":
            raise LayoutError(f"'{t}' cannot be fused into a matmul epilogue")
        for out in op.outputs:
            s = shape_of(out)
            if math.prod(s) != m * n or not s or s[-1] != n:
                raise LayoutError(
                    f"epilogue value of shape {list(s)} is not a [{m}, {n}] tile"
                )
        for v in op.inputs:
            if v in inside:
                continue
            assert v in argset, "a group value is used before it is computed"
            if t in RESHAPES:
                raise LayoutError(f"'{t}' in a matmul epilogue must reshape the tile")
            so = shape_of(op.outputs[0])
            _right_align(shape_of(v), tuple(range(len(so))), so)
        inside.update(op.outputs)
    return mm


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


__all__ = [
    "BACKENDS",
    "FusedOp",
    "GroupLayout",
    "Kernel",
    "KINDS",
    "LayoutError",
    "MATMULS",
    "POINTWISE",
    "REDUCTIONS",
    "RESHAPES",
    "YieldOp",
    "check_matmul_group",
    "group_layout",
    "reduced_dims",
]
