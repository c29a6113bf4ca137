"""What the fusion passes, the kernel verifier and the Triton code generator
agree on: which aten operators each kind of fused group may hold
(`POINTWISE`, `REDUCTIONS`, `MATMULS`, `RESHAPES`) and how every value of a
group maps onto the group's loop domain (`group_layout`,
`check_matmul_group`). An analysis of graph ops, kept apart from the kernel
dialect's op definitions (piper/dialects/kernel.py), which verify with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.dialects.builtin import TensorType
from xdsl.ir import SSAValue

from piper.dialects.graph import ArgRefAttr, AtenOp

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
