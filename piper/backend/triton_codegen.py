"""Triton code generation for `kernel.fused` groups.

Each group becomes the source text of one `@triton.jit` kernel. Shapes are
static in the IR, and the strides of the tensors a call passes are known at
launch, so both are written into the source as constants: the generator
runs once per (group, stride pattern), Triton folds the index math, and a
contiguous operand costs no more than a flat index. Sources are written to
a cache folder under their content hash and imported from there (Triton
reads a kernel's source from its file), so equal kernels share one module.

Loop structure per kind (see piper/dialects/kernel.py):

- elementwise: program p covers flat elements [p*B, (p+1)*B) of the domain;
  every operand is loaded at the element's multi-index times its strides
  (stride 0 where it broadcasts).
- reduction: one program per index of the kept dims; the reduced dims are
  one block of B >= their size, masked. Values that vary over the reduced
  dims are blocks, the others scalars of the program; `tl.sum`/`tl.max`
  turn the first into the second.
- matmul: a [BM, BN] output tile per program, `tl.dot` over K in steps of
  BK, then the epilogue on the tile in registers before it is stored.

Floating values are computed in fp32 (fp64 stays fp64) and rounded to
their type when stored or explicitly cast (`aten._to_copy`), the usual
fused-kernel semantics; fp32 results match eager torch to rounding.
Division and square root use the IEEE-rounded forms (`tl.div_rn`,
`tl.sqrt_rn`) and fp32 `tl.dot` runs with `input_precision="ieee"`, as torch
does by default.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from xdsl.ir import SSAValue

from piper.dialects.graph import AtenOp, torch_dtype
from piper.dialects.graph_values import call_args
from piper.dialects.kernel import FusedOp
from piper.dialects.kernel_layout import (
    MATMULS,
    POINTWISE,
    REDUCTIONS,
    RESHAPES,
    GroupLayout,
    arg_value,
    keepdim,
    reduced_dims,
    shape_of,
)


class Unsupported(Exception):
    """The generator cannot emit this group; it runs with aten instead."""


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def cache_dir() -> Path:
    d = os.environ.get("PIPER_KERNEL_CACHE")
    path = Path(d) if d else Path.home() / ".cache" / "piper" / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------

_TL = {
    torch.float32: "tl.float32",
    torch.float64: "tl.float64",
    torch.float16: "tl.float16",
    torch.bfloat16: "tl.bfloat16",
    torch.int64: "tl.int64",
    torch.int32: "tl.int32",
    torch.int16: "tl.int16",
    torch.int8: "tl.int8",
    torch.uint8: "tl.uint8",
    torch.bool: "tl.int1",
}


def tl_dtype(dt: torch.dtype) -> str:
    if dt not in _TL:
        raise Unsupported(f"dtype {dt}")
    return _TL[dt]


def compute_dtype(dt: torch.dtype) -> torch.dtype:
    """The dtype a value is held in inside a kernel."""
    if dt in (torch.float16, torch.bfloat16):
        return torch.float32
    return dt


def value_dtype(v: SSAValue) -> torch.dtype:
    return torch_dtype(v.type.element_type)


# --------------------------------------------------------------------------
# Helpers written at the top of every generated module
# --------------------------------------------------------------------------

PRELUDE = '''\
import triton
import triton.language as tl


@triton.jit
def _piper_tanh(x):
    # tanh from exp, with a series near 0 where 1 - exp(-2|x|) cancels
    a = tl.abs(x)
    e = tl.exp(-2.0 * a)
    big = (1.0 - e) / (1.0 + e)
    x2 = a * a
    small = a * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0
                + x2 * (62.0 / 2835.0)))))
    t = tl.where(a < 0.1, small, big)
    return tl.where(x < 0, -t, t)


@triton.jit
def _piper_expm1(x):
    u = tl.exp(x)
    um1 = u - 1.0
    r = tl.where(um1 == -1.0, -1.0, um1 * x / tl.log(u))
    return tl.where(u == 1.0, x, r)


@triton.jit
def _piper_log1p(x):
    u = 1.0 + x
    return tl.where(u == 1.0, x, tl.log(u) * x / (u - 1.0))


@triton.jit
def _piper_gelu_tanh_bwd(g, x):
    beta = 0.7978845608028654
    kappa = 0.044715
    x_sq = x * x
    inner = beta * (x + kappa * x_sq * x)
    t = _piper_tanh(inner)
    left = 0.5 * x
    right = 1.0 + t
    dleft = 0.5 * right
    dright = left * (1.0 - t * t) * beta * (1.0 + 3.0 * kappa * x_sq)
    return g * (dleft + dright)
'''


# --------------------------------------------------------------------------
# Index math
# --------------------------------------------------------------------------


def offset_expr(var: str, sizes: Sequence[int], strides: Sequence[int]) -> str:
    """Element offset for flat row-major index `var` over dims `sizes`.

    Dims of size 1 or stride 0 contribute nothing; runs of dims laid out
    contiguously are merged into one term, so a contiguous tensor walked in
    its own order costs `var * 1`.
    """
    n = len(sizes)
    pitch = [math.prod(sizes[d + 1 :]) for d in range(n)]
    groups: list[list[int]] = []  # [first, last]
    for d in range(n):
        if sizes[d] == 1 or strides[d] == 0:
            continue
        if groups:
            first, last = groups[-1]
            between = all(sizes[i] == 1 for i in range(last + 1, d))
            if between and strides[last] == strides[d] * sizes[d]:
                groups[-1][1] = d
                continue
        groups.append([d, d])
    terms = []
    for first, last in groups:
        e = var
        div = pitch[last]
        span = math.prod(sizes[first : last + 1])
        if div != 1:
            e = f"({e} // {div})"
        if math.prod(sizes[:first]) != 1:
            e = f"({e} % {span})"
        if strides[last] != 1:
            e = f"{e} * {strides[last]}"
        terms.append(e)
    return " + ".join(terms) if terms else ""


def _lit(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return 'float("nan")'
        if math.isinf(v):
            return 'float("inf")' if v > 0 else '(-float("inf"))'
        return repr(v)
    raise Unsupported(f"scalar argument {v!r}")


# --------------------------------------------------------------------------
# Values and the body emitter
# --------------------------------------------------------------------------


@dataclass
class Val:
    """A kernel variable: its name, dtype held in, and whether it is a block."""

    name: str
    dtype: torch.dtype
    vec: bool

    def __str__(self) -> str:
        return self.name


class Body:
    """Lines of a kernel body and the variables bound to SSA values."""

    def __init__(self):
        self.lines: list[str] = []
        self.vals: dict[SSAValue, Val] = {}
        self.count = 0

    def fresh(self, prefix: str = "v") -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def bind(self, v: SSAValue | None, expr: str, dtype: torch.dtype, vec: bool) -> Val:
        name = self.fresh()
        self.emit(f"{name} = {expr}")
        val = Val(name, dtype, vec)
        if v is not None:
            self.vals[v] = val
        return val


def convert(expr: str, src: torch.dtype, dst: torch.dtype) -> str:
    """`expr` (held as src) converted to dst; narrowing floats round to nearest."""
    if src == dst:
        return expr
    if src.is_floating_point and dst in (torch.float16, torch.bfloat16) and src.itemsize > 2:
        return f'{expr}.to({tl_dtype(dst)}, fp_downcast_rounding="rtne")'
    return f"{expr}.to({tl_dtype(dst)})"


def cast(v: Val, dt: torch.dtype) -> str:
    return convert(v.name, v.dtype, dt)


def div(a: str, b: str, dt: torch.dtype) -> str:
    if dt == torch.float32:
        return f"tl.div_rn({a}, {b})"
    return f"({a} / {b})"


def sqrt(a: str, dt: torch.dtype) -> str:
    if dt == torch.float32:
        return f"tl.sqrt_rn({a})"
    return f"tl.sqrt({a})"


# --------------------------------------------------------------------------
# Pointwise operators
# --------------------------------------------------------------------------


@dataclass
class OpCtx:
    """What a pointwise emitter may use: the compute dtype and index math."""

    dt: torch.dtype
    dim_index: Callable[[int], str]  # output dim -> its index expression
    out_rank: int

    def div(self, a, b):
        return div(str(a), str(b), self.dt)

    def sqrt(self, a):
        return sqrt(str(a), self.dt)


def _alpha(a, kw, pos=2):
    if len(a) > pos:
        return a[pos]
    return kw.get("alpha", 1)


def _addsub(x, y, alpha, sign):
    y = str(y) if alpha == 1 else f"{_lit(alpha)} * {y}"
    return f"({x} {sign} {y})"


def _lerp(x, y, w):
    """torch's lerp: from the nearer end, so weight 1 gives `y` exactly."""
    if w < 0.5:
        return f"({x} + {_lit(w)} * ({y} - {x}))"
    return f"({y} - ({y} - {x}) * {_lit(1 - w)})"


def _pow_scalar_exp(x, e, c: OpCtx):
    if e == 2:
        return f"({x} * {x})"
    if e == 3:
        return f"({x} * {x} * {x})"
    if e == 1:
        return str(x)
    if e == 0:
        return f"(tl.zeros_like({x}) + 1)"
    if e == 0.5:
        return c.sqrt(x)
    if e == -0.5:
        return c.div("1.0", c.sqrt(x))
    if e == -1:
        return c.div("1.0", x)
    if e == -2:
        return c.div("1.0", f"({x} * {x})")
    return f"tl.exp({_lit(float(e))} * tl.log({x}))"


def _pow_scalar_base(b, x, c: OpCtx):
    if not isinstance(b, int | float) or b <= 0:
        raise Unsupported(f"pow with base {b!r}")
    if b == 2:
        return f"tl.exp2({x})"
    return f"tl.exp({x} * {_lit(math.log(float(b)))})"


def _gelu(a, kw, c):
    approx = a[1] if len(a) > 1 else kw.get("approximate", "none")
    x = a[0]
    if approx == "tanh":
        return (f"(0.5 * {x} * (1.0 + _piper_tanh(0.7978845608028654 * "
                f"({x} + 0.044715 * {x} * {x} * {x}))))")
    return f"({x} * 0.5 * (1.0 + tl.math.erf({x} * 0.7071067811865476)))"


def _gelu_bwd(a, kw, c):
    approx = a[2] if len(a) > 2 else kw.get("approximate", "none")
    g, x = a[0], a[1]
    if approx == "tanh":
        return f"_piper_gelu_tanh_bwd({g}, {x})"
    cdf = f"(0.5 * (1.0 + tl.math.erf({x} * 0.7071067811865476)))"
    pdf = f"(tl.exp(-0.5 * {x} * {x}) * 0.3989422804014327)"
    return f"({g} * ({cdf} + {x} * {pdf}))"


_NAN = "propagate_nan=tl.PropagateNan.ALL"  # NaN wins, as in torch


def _clamp(x, lo, hi):
    e = str(x)
    if lo is not None:
        e = f"tl.maximum({e}, {_v(lo)}, {_NAN})"
    if hi is not None:
        e = f"tl.minimum({e}, {_v(hi)}, {_NAN})"
    return e


def _nll_bwd(a, kw, c: OpCtx):
    g, _self, target, weight, reduction, ignore, tw = a[:7]
    if weight is not None:
        raise Unsupported("nll_loss_backward with class weights")
    grad = c.div(g, tw) if reduction == 1 else str(g)
    cls = c.dim_index(c.out_rank - 1)
    return (f"tl.where(({cls} == {target}) & ({target} != {_lit(ignore)}), "
            f"-{grad}, 0.0)")


def _v(x):
    return str(x) if isinstance(x, Val) else _lit(x)


# target -> emitter(args, kwargs, ctx); tensor args arrive cast to ctx.dt
POINTWISE_EMIT: dict[str, Callable[[list, dict, OpCtx], str]] = {
    "aten.add.Tensor": lambda a, kw, c: _addsub(_v(a[0]), _v(a[1]), _alpha(a, kw), "+"),
    "aten.add.Scalar": lambda a, kw, c: _addsub(_v(a[0]), _v(a[1]), _alpha(a, kw), "+"),
    "aten.sub.Tensor": lambda a, kw, c: _addsub(_v(a[0]), _v(a[1]), _alpha(a, kw), "-"),
    "aten.sub.Scalar": lambda a, kw, c: _addsub(_v(a[0]), _v(a[1]), _alpha(a, kw), "-"),
    "aten.rsub.Tensor": lambda a, kw, c: _addsub(_v(a[1]), _v(a[0]), _alpha(a, kw), "-"),
    "aten.rsub.Scalar": lambda a, kw, c: _addsub(_v(a[1]), _v(a[0]), _alpha(a, kw), "-"),
    "aten.mul.Tensor": lambda a, kw, c: f"({_v(a[0])} * {_v(a[1])})",
    "aten.mul.Scalar": lambda a, kw, c: f"({_v(a[0])} * {_v(a[1])})",
    "aten.div.Tensor": lambda a, kw, c: c.div(_v(a[0]), _v(a[1])),
    "aten.div.Scalar": lambda a, kw, c: c.div(_v(a[0]), _v(a[1])),
    "aten.neg.default": lambda a, kw, c: f"(-{a[0]})",
    "aten.reciprocal.default": lambda a, kw, c: c.div("1.0", a[0]),
    "aten.sqrt.default": lambda a, kw, c: c.sqrt(a[0]),
    "aten.rsqrt.default": lambda a, kw, c: c.div("1.0", c.sqrt(a[0])),
    "aten.exp.default": lambda a, kw, c: f"tl.exp({a[0]})",
    "aten.exp2.default": lambda a, kw, c: f"tl.exp2({a[0]})",
    "aten.expm1.default": lambda a, kw, c: f"_piper_expm1({a[0]})",
    "aten.log.default": lambda a, kw, c: f"tl.log({a[0]})",
    "aten.log2.default": lambda a, kw, c: f"tl.log2({a[0]})",
    "aten.log1p.default": lambda a, kw, c: f"_piper_log1p({a[0]})",
    "aten.sin.default": lambda a, kw, c: f"tl.sin({a[0]})",
    "aten.cos.default": lambda a, kw, c: f"tl.cos({a[0]})",
    "aten.abs.default": lambda a, kw, c: f"tl.abs({a[0]})",
    "aten.floor.default": lambda a, kw, c: f"tl.floor({a[0]})",
    "aten.ceil.default": lambda a, kw, c: f"tl.ceil({a[0]})",
    "aten.erf.default": lambda a, kw, c: f"tl.math.erf({a[0]})",
    "aten.tanh.default": lambda a, kw, c: f"_piper_tanh({a[0]})",
    "aten.sigmoid.default": lambda a, kw, c: c.div("1.0", f"(1.0 + tl.exp(-{a[0]}))"),
    "aten.relu.default": lambda a, kw, c: f"tl.where({a[0]} < 0, 0, {a[0]})",
    "aten.gelu.default": _gelu,
    "aten.silu.default": lambda a, kw, c: c.div(a[0], f"(1.0 + tl.exp(-{a[0]}))"),
    "aten.gelu_backward.default": _gelu_bwd,
    "aten.threshold_backward.default":
        lambda a, kw, c: f"tl.where({a[1]} <= {_v(a[2])}, 0.0, {a[0]})",
    "aten.sigmoid_backward.default": lambda a, kw, c: f"({a[0]} * (1.0 - {a[1]}) * {a[1]})",
    "aten.tanh_backward.default": lambda a, kw, c: f"({a[0]} * (1.0 - {a[1]} * {a[1]}))",
    "aten.silu_backward.default": lambda a, kw, c: (
        f"({a[0]} * {c.div('1.0', f'(1.0 + tl.exp(-{a[1]}))')} * (1.0 + {a[1]} * "
        f"(1.0 - {c.div('1.0', f'(1.0 + tl.exp(-{a[1]}))')})))"
    ),
    "aten.pow.Tensor_Scalar": lambda a, kw, c: _pow_scalar_exp(a[0], a[1], c),
    "aten.pow.Scalar": lambda a, kw, c: _pow_scalar_base(a[0], a[1], c),
    "aten.pow.Tensor_Tensor": lambda a, kw, c: f"tl.exp({a[1]} * tl.log({a[0]}))",
    "aten.maximum.default": lambda a, kw, c: f"tl.maximum({a[0]}, {a[1]}, {_NAN})",
    "aten.minimum.default": lambda a, kw, c: f"tl.minimum({a[0]}, {a[1]}, {_NAN})",
    "aten.clamp.default": lambda a, kw, c: _clamp(
        a[0], a[1] if len(a) > 1 else kw.get("min"), a[2] if len(a) > 2 else kw.get("max")
    ),
    "aten.clamp_min.default": lambda a, kw, c: _clamp(a[0], a[1], None),
    "aten.clamp_max.default": lambda a, kw, c: _clamp(a[0], None, a[1]),
    "aten.where.self": lambda a, kw, c: f"tl.where({a[0]}, {_v(a[1])}, {_v(a[2])})",
    "aten.masked_fill.Scalar": lambda a, kw, c: f"tl.where({a[1]}, {_v(a[2])}, {a[0]})",
    "aten.masked_fill.Tensor": lambda a, kw, c: f"tl.where({a[1]}, {a[2]}, {a[0]})",
    "aten.gt.Scalar": lambda a, kw, c: f"({_v(a[0])} > {_v(a[1])})",
    "aten.gt.Tensor": lambda a, kw, c: f"({_v(a[0])} > {_v(a[1])})",
    "aten.ge.Scalar": lambda a, kw, c: f"({_v(a[0])} >= {_v(a[1])})",
    "aten.ge.Tensor": lambda a, kw, c: f"({_v(a[0])} >= {_v(a[1])})",
    "aten.lt.Scalar": lambda a, kw, c: f"({_v(a[0])} < {_v(a[1])})",
    "aten.lt.Tensor": lambda a, kw, c: f"({_v(a[0])} < {_v(a[1])})",
    "aten.le.Scalar": lambda a, kw, c: f"({_v(a[0])} <= {_v(a[1])})",
    "aten.le.Tensor": lambda a, kw, c: f"({_v(a[0])} <= {_v(a[1])})",
    "aten.eq.Scalar": lambda a, kw, c: f"({_v(a[0])} == {_v(a[1])})",
    "aten.eq.Tensor": lambda a, kw, c: f"({_v(a[0])} == {_v(a[1])})",
    "aten.ne.Scalar": lambda a, kw, c: f"({_v(a[0])} != {_v(a[1])})",
    "aten.ne.Tensor": lambda a, kw, c: f"({_v(a[0])} != {_v(a[1])})",
    "aten.logical_not.default": lambda a, kw, c: f"({a[0]} == 0)",
    "aten.clone.default": lambda a, kw, c: str(a[0]),
    "aten._to_copy.default": lambda a, kw, c: str(a[0]),
    "aten.ones_like.default": lambda a, kw, c: f"(tl.zeros_like({a[0]}) + 1)",
    "aten.zeros_like.default": lambda a, kw, c: f"tl.zeros_like({a[0]})",
    "aten.full_like.default": lambda a, kw, c: f"(tl.zeros_like({a[0]}) + {_lit(a[1])})",
    "aten.nll_loss_backward.default": _nll_bwd,
    "aten.lerp.Scalar": lambda a, kw, c: _lerp(_v(a[0]), _v(a[1]), a[2]),
    "aten.addcmul.default": lambda a, kw, c: (
        f"({_v(a[0])} + {_lit(kw.get('value', 1))} * {_v(a[1])} * {_v(a[2])})"),
    "aten.addcdiv.default": lambda a, kw, c: (
        f"({_v(a[0])} + {_lit(kw.get('value', 1))} * {c.div(_v(a[1]), _v(a[2]))})"),
}

assert set(POINTWISE_EMIT) == set(POINTWISE), set(POINTWISE) ^ set(POINTWISE_EMIT)

_COMPARE = {f"aten.{c}.{k}" for c in ("gt", "ge", "lt", "le", "eq", "ne") for k in ("Scalar", "Tensor")}
# operands that keep their own dtype (masks and indices)
_KEEP = {
    "aten.where.self": {0},
    "aten.masked_fill.Scalar": {1},
    "aten.masked_fill.Tensor": {1},
    "aten.nll_loss_backward.default": {2},
    "aten.logical_not.default": {0},
}


def _meta(v: SSAValue):
    return torch.empty(shape_of(v), dtype=value_dtype(v), device="meta")


def emit_pointwise(body: Body, op: AtenOp, dim_index: Callable[[int], str]) -> None:
    t = op.target.data
    (out,) = op.outputs
    rdt = value_dtype(out)
    vals = [body.vals[v] for v in op.inputs]
    if t in _COMPARE:
        args, _ = call_args(op, [_meta(v) for v in op.inputs], "meta")
        dt = compute_dtype(torch.result_type(*args[:2]))
    else:
        dt = compute_dtype(rdt)
    keep = _KEEP.get(t, set())
    cast_vals = [
        v if i in keep else Val(cast(v, dt), dt, v.vec) for i, v in enumerate(vals)
    ]
    args, kwargs = call_args(op, cast_vals, "cpu")
    expr = POINTWISE_EMIT[t](args, kwargs, OpCtx(dt, dim_index, len(shape_of(out))))
    vec = any(v.vec for v in vals)
    hold = compute_dtype(rdt)
    if t == "aten._to_copy.default" and rdt != hold:
        # an explicit cast to a narrower float rounds here, as eager torch does
        expr = convert(convert(f"({expr})", dt, rdt), rdt, hold)
    elif t in _COMPARE or t == "aten.logical_not.default":
        expr = expr
    elif dt != hold:
        expr = convert(f"({expr})", dt, hold)
    body.bind(out, expr, hold, vec)


# --------------------------------------------------------------------------
# Reductions (inside a reduction kernel: `rmask` masks the reduced block)
# --------------------------------------------------------------------------


# a reduction kernel's tile is [rows, block]: each row reduces along axis 1
# and keeps it, so its result broadcasts against the row's block
_ALONG_ROW = "axis=1, keep_dims=True"


def _rsum(x: Val | str) -> str:
    return f"tl.sum(tl.where(rmask, {x}, 0.0), {_ALONG_ROW})"


def emit_reduction(body: Body, op: AtenOp) -> None:
    t = op.target.data
    x = body.vals[op.inputs[0]]
    outs = list(op.outputs)
    rdims = reduced_dims(op)
    count = math.prod(shape_of(op.inputs[0])[d] for d in rdims)
    if t in ("aten.sum.dim_IntList", "aten.sum.default", "aten.mean.dim"):
        dt = compute_dtype(value_dtype(outs[0]))
        xs = cast(x, dt)
        zero = "0.0" if dt.is_floating_point else "0"
        e = f"tl.sum(tl.where(rmask, {xs}, {zero}), {_ALONG_ROW})"
        if t == "aten.mean.dim":
            e = div(e, _lit(float(count)), dt)
        body.bind(outs[0], e, dt, False)
    elif t in ("aten.amax.default", "aten.amin.default"):
        dt = compute_dtype(value_dtype(outs[0]))
        fn, pad = ("tl.max", '(-float("inf"))') if t.endswith("amax.default") else (
            "tl.min", 'float("inf")')
        body.bind(outs[0], f"{fn}(tl.where(rmask, {cast(x, dt)}, {pad}), {_ALONG_ROW})", dt, False)
    elif t in ("aten._softmax.default", "aten._log_softmax.default"):
        dt = compute_dtype(value_dtype(outs[0]))
        xs = body.bind(None, cast(x, dt), dt, True)
        m = body.bind(None, f'tl.max(tl.where(rmask, {xs}, (-float("inf"))), {_ALONG_ROW})',
                      dt, False)
        sh = body.bind(None, f"{xs} - {m}", dt, True)
        e = body.bind(None, f"tl.exp({sh})", dt, True)
        s = body.bind(None, _rsum(e), dt, False)
        if t == "aten._softmax.default":
            body.bind(outs[0], div(str(e), str(s), dt), dt, True)
        else:
            body.bind(outs[0], f"{sh} - tl.log({s})", dt, True)
    elif t == "aten._softmax_backward_data.default":
        dt = compute_dtype(value_dtype(outs[0]))
        g, y = cast(x, dt), cast(body.vals[op.inputs[1]], dt)
        s = body.bind(None, _rsum(f"{g} * {y}"), dt, False)
        body.bind(outs[0], f"({g} - {s}) * {y}", dt, True)
    elif t == "aten._log_softmax_backward_data.default":
        dt = compute_dtype(value_dtype(outs[0]))
        g, y = cast(x, dt), cast(body.vals[op.inputs[1]], dt)
        s = body.bind(None, _rsum(g), dt, False)
        body.bind(outs[0], f"{g} - tl.exp({y}) * {s}", dt, True)
    elif t == "aten.native_layer_norm.default":
        dt = compute_dtype(value_dtype(outs[0]))
        w, b, eps = arg_value(op, 2), arg_value(op, 3), arg_value(op, 4)
        xs = body.bind(None, cast(x, dt), dt, True)
        mean = body.bind(None, div(_rsum(xs), _lit(float(count)), dt), dt, False)
        d = body.bind(None, f"{xs} - {mean}", dt, True)
        var = body.bind(None, div(_rsum(f"{d} * {d}"), _lit(float(count)), dt), dt, False)
        rstd = body.bind(None, div("1.0", sqrt(f"{var} + {_lit(float(eps))}", dt), dt), dt, False)
        y = f"{d} * {rstd}"
        if isinstance(w, SSAValue):
            y = f"{y} * {cast(body.vals[w], dt)}"
        if isinstance(b, SSAValue):
            y = f"{y} + {cast(body.vals[b], dt)}"
        body.bind(outs[0], y, dt, True)
        body.vals[outs[1]] = mean
        body.vals[outs[2]] = rstd
    elif t == "aten.native_layer_norm_backward.default":
        dt = compute_dtype(value_dtype(outs[0]))
        dy = cast(x, dt)
        xv = cast(body.vals[arg_value(op, 1)], dt)
        mean = cast(body.vals[arg_value(op, 3)], dt)
        rstd = cast(body.vals[arg_value(op, 4)], dt)
        w = arg_value(op, 5)
        xhat = body.bind(None, f"({xv} - {mean}) * {rstd}", dt, True)
        g = body.bind(None, f"{dy} * {cast(body.vals[w], dt)}" if isinstance(w, SSAValue)
                      else dy, dt, True)
        c1 = body.bind(None, div(_rsum(f"{g} * {xhat}"), _lit(float(count)), dt), dt, False)
        c2 = body.bind(None, div(_rsum(g), _lit(float(count)), dt), dt, False)
        body.bind(outs[0], f"{rstd} * ({g} - {c2} - {xhat} * {c1})", dt, True)
    else:
        raise Unsupported(f"reduction {t}")


# --------------------------------------------------------------------------
# Kernel sources
# --------------------------------------------------------------------------


@dataclass
class KernelSource:
    """One generated kernel: its source, how to launch it."""

    name: str
    text: str
    grid: tuple[int, ...]
    num_warps: int
    num_stages: int | None = None
    meta: dict = field(default_factory=dict)


def _load_line(ptr: str, off: str, mask: str | None, src: torch.dtype, dst: torch.dtype) -> str:
    addr = f"{ptr} + {off}" if off else ptr
    if mask:
        e = f"tl.load({addr}, mask={mask}, other=0)"
    else:
        e = f"tl.load({addr})"
    if src != dst:
        e = f"{e}.to({tl_dtype(dst)})"
    return e


def _store_line(ptr: str, off: str, mask: str | None, v: Val, dst: torch.dtype,
                full: str | None = None) -> str:
    addr = f"{ptr} + {off}" if off else ptr
    val = cast(v, dst)
    if full is not None and not v.vec:
        val = f"tl.full({full}, 0, {tl_dtype(dst)}) + {val}"
    if mask:
        return f"tl.store({addr}, {val}, mask={mask})"
    return f"tl.store({addr}, {val})"


def _signature(op: FusedOp) -> tuple[list[str], list[str]]:
    ins = [f"in{i}" for i in range(len(op.inputs))]
    outs = [f"out{i}" for i in range(len(op.outputs))]
    return ins, outs


def _finish(kind: str, params: list[str], body: Body, grid, warps, stages=None,
            meta=None) -> KernelSource:
    inner = "\n".join("    " + line for line in body.lines)
    core = f"({', '.join(params)}):\n{inner}\n"
    digest = hashlib.sha256((PRELUDE + kind + core).encode()).hexdigest()[:16]
    name = f"piper_{kind}_{digest}"
    text = f"{PRELUDE}\n\n@triton.jit\ndef {name}{core}"
    return KernelSource(name, text, tuple(grid), warps, stages, meta or {})


def generate(op: FusedOp, in_strides: Sequence[Sequence[int]]) -> KernelSource:
    """The Triton source of a fused group for inputs with the given strides."""
    kind = op.kind_name
    if kind == "matmul":
        return _gen_matmul(op, in_strides)
    return _gen_loop(op, in_strides)


def contiguous_strides(shape: Sequence[int]) -> list[int]:
    """Row-major strides of `shape`: the layout a group is first generated for."""
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return out[::-1]


def _gen_loop(op: FusedOp, in_strides: Sequence[Sequence[int]]) -> KernelSource:
    layout: GroupLayout = op.layout()
    domain = op.domain_shape
    red = op.reduce_dims if op.kind_name == "reduction" else []
    kept = [d for d in range(len(domain)) if d not in red]
    block = op.block_sizes[0]
    args = list(op.body.block.args)
    ins, outs = _signature(op)
    body = Body()
    numel = math.prod(domain)
    elementwise = op.kind_name == "elementwise"
    if elementwise:
        wide = numel >= 2**31
        body.emit("pid = tl.program_id(0)" + (".to(tl.int64)" if wide else ""))
        body.emit(f"offs = pid * {block} + tl.arange(0, {block})")
        body.emit(f"mask = offs < {numel}")
    else:
        nred = math.prod(domain[d] for d in red)
        nrows = math.prod(domain[d] for d in kept)
        rows_per = rows_per_program(nrows, block)
        wide = numel >= 2**31
        body.emit("pid = tl.program_id(0)" + (".to(tl.int64)" if wide else ""))
        # a [rows_per, block] tile: rows_per kept indices (they divide the
        # rows: no row mask), the reduced block along axis 1
        body.emit(f"rows = pid * {rows_per} + tl.arange(0, {rows_per})[:, None]")
        body.emit(f"r = tl.arange(0, {block})[None, :]")
        body.emit(f"rmask = r < {nred}")

    def varies(v: SSAValue) -> bool:
        if elementwise:
            return any(e is not None and domain[e] > 1 for e in layout.emb[v])
        return layout.is_full(v)

    def offset(dstrides: Sequence[int]) -> str:
        if elementwise:
            return offset_expr("offs", domain, dstrides)
        a = offset_expr("rows", [domain[d] for d in kept], [dstrides[d] for d in kept])
        b = offset_expr("r", [domain[d] for d in red], [dstrides[d] for d in red])
        return " + ".join(x for x in (a, b) if x)

    def dim_index(d: int) -> str:
        """Index expression of domain dim d."""
        if elementwise:
            return offset_expr("offs", domain, [1 if i == d else 0 for i in range(len(domain))]) or "0"
        if d in red:
            sizes = [domain[i] for i in red]
            return offset_expr("r", sizes, [1 if i == d else 0 for i in red]) or "0"
        sizes = [domain[i] for i in kept]
        return offset_expr("rows", sizes, [1 if i == d else 0 for i in kept]) or "0"

    for i, (a, st) in enumerate(zip(args, in_strides, strict=True)):
        dt = value_dtype(a)
        hold = compute_dtype(dt)
        vec = varies(a)
        off = offset(layout.domain_strides(a, st))
        mask = ("mask" if elementwise else "rmask") if vec else None
        body.bind(a, _load_line(ins[i], off, mask, dt, hold), hold, vec)

    for bop in op.body_ops:
        t = bop.target.data
        if t in POINTWISE:
            (out,) = bop.outputs
            e_out = layout.emb[out]

            def out_dim_index(i, _e=e_out):
                d = _e[i]
                if d is None:
                    return "0"
                return dim_index(d)

            emit_pointwise(body, bop, out_dim_index)
        elif t in REDUCTIONS:
            if elementwise:
                raise Unsupported(f"reduction {t} in an elementwise group")
            emit_reduction(body, bop)
        elif t in RESHAPES:
            body.vals[bop.outputs[0]] = body.vals[bop.inputs[0]]
        else:
            raise Unsupported(f"operator {t}")

    term = op.body.block.last_op
    for i, (y, r) in enumerate(zip(term.operands, op.outputs, strict=True)):
        v = body.vals[y]
        shape = shape_of(r)
        dstr = layout.domain_strides(y, contiguous_strides(shape))
        vec = varies(y)
        off = offset(dstr)
        if elementwise:
            body.emit(_store_line(outs[i], off, "mask" if vec else None, v, value_dtype(r),
                                  full=f"[{block}]" if vec else None))
        else:
            if "rows" not in off:  # one number for the whole kernel: a [1, 1] block
                off = f"{off} + rows * 0" if off else "rows * 0"
            body.emit(_store_line(outs[i], off, "rmask" if vec else None, v, value_dtype(r),
                                  full=f"[{rows_per}, {block}]" if vec else None))

    if elementwise:
        grid = (max(1, math.ceil(numel / block)),)
    else:
        grid = (max(1, nrows // rows_per),)
    return _finish(op.kind_name, ins + outs, body, grid, op.num_warps.data)


# elements of one reduction program's tile: short rows are taken several
# at a time (one program a row would leave most of a GPU's lanes idle, and
# costs the interpreter milliseconds a program)
TILE_ELEMENTS = 4096


def rows_per_program(nrows: int, block: int) -> int:
    """Rows of a reduction kernel's program: the largest power of two that
    divides `nrows` and keeps the tile within TILE_ELEMENTS (at least 1)."""
    rows = 1
    while nrows % (rows * 2) == 0 and rows * 2 * block <= TILE_ELEMENTS:
        rows *= 2
    return rows


def _gen_matmul(op: FusedOp, in_strides: Sequence[Sequence[int]]) -> KernelSource:
    m, n, k = op.domain_shape
    bm, bn, bk = op.block_sizes
    ins, outs = _signature(op)
    args = list(op.body.block.args)
    strides = dict(zip(args, in_strides, strict=True))
    names = dict(zip(args, ins, strict=True))
    ops = op.body_ops
    mm = ops[0]
    body = Body()
    body.emit("pid_m = tl.program_id(0)")
    body.emit("pid_n = tl.program_id(1)")
    body.emit(f"rm = pid_m * {bm} + tl.arange(0, {bm})")
    body.emit(f"rn = pid_n * {bn} + tl.arange(0, {bn})")
    body.emit(f"rk = tl.arange(0, {bk})")
    body.emit(f"mask = (rm[:, None] < {m}) & (rn[None, :] < {n})")
    a, b = mm.inputs[-2], mm.inputs[-1]
    adt, bdt = value_dtype(a), value_dtype(b)
    sa, sb = strides[a], strides[b]
    body.emit(f"acc = tl.zeros(({bm}, {bn}), dtype=tl.float32)")
    body.emit(f"for k0 in range(0, {k}, {bk}):")
    body.emit("    kk = k0 + rk")
    body.emit(f"    at = tl.load({names[a]} + rm[:, None] * {sa[0]} + kk[None, :] * {sa[1]}, "
              f"mask=(rm[:, None] < {m}) & (kk[None, :] < {k}), other=0.0)")
    body.emit(f"    bt = tl.load({names[b]} + kk[:, None] * {sb[0]} + rn[None, :] * {sb[1]}, "
              f"mask=(kk[:, None] < {k}) & (rn[None, :] < {n}), other=0.0)")
    if adt != bdt or (interpreting() and adt != torch.float32):
        # mixed inputs meet in fp32; the interpreter computes bf16/fp16 wrongly
        body.emit("    at = at.to(tl.float32)")
        body.emit("    bt = bt.to(tl.float32)")
        adt = torch.float32
    if adt == torch.float32:
        body.emit('    acc += tl.dot(at, bt, input_precision="ieee")')
    else:
        body.emit("    acc += tl.dot(at, bt)")
    hold = torch.float32
    mm_out = mm.outputs[0]
    acc = "acc"
    if mm.target.data == "aten.addmm.default":
        bias = mm.inputs[0]
        beta = kwarg_or(mm, "beta", 1)
        alpha = kwarg_or(mm, "alpha", 1)
        bv = _tile_load(body, names[bias], bias, strides[bias], [m, n], m, n)
        if alpha != 1:
            acc = f"{acc} * {_lit(alpha)}"
        bterm = str(bv) if beta == 1 else f"{_lit(beta)} * {bv}"
        acc = f"{acc} + {bterm}"
    mdt = value_dtype(mm_out)
    if mdt != torch.float32:
        acc = convert(convert(f"({acc})", torch.float32, mdt), mdt, torch.float32)
    body.bind(mm_out, acc, hold, True)

    for bop in ops[1:]:
        t = bop.target.data
        if t in RESHAPES:
            body.vals[bop.outputs[0]] = body.vals[bop.inputs[0]]
            continue
        oshape = list(shape_of(bop.outputs[0]))
        # group inputs of an epilogue op are loaded per use, at the op's shape
        saved = {}
        for v in bop.inputs:
            if v in names:
                saved[v] = body.vals.get(v)
                body.vals[v] = _tile_load(body, names[v], v, strides[v], oshape, m, n)
        emit_pointwise(body, bop, lambda i: (_ for _ in ()).throw(Unsupported("index")))
        for v, old in saved.items():
            if old is None:
                body.vals.pop(v)
            else:
                body.vals[v] = old

    term = op.body.block.last_op
    for i, (y, r) in enumerate(zip(term.operands, op.outputs, strict=True)):
        v = body.vals[y]
        body.emit(_store_line(outs[i], f"rm[:, None] * {n} + rn[None, :]", "mask", v,
                              value_dtype(r), full=f"[{bm}, {bn}]"))
    grid = (math.ceil(m / bm), math.ceil(n / bn))
    stages = op.num_stages.data if op.num_stages is not None else None
    return _finish("matmul", ins + outs, body, grid, op.num_warps.data, stages)


def kwarg_or(op: AtenOp, key: str, default):
    from piper.dialects.kernel_layout import kwarg_value

    v = kwarg_value(op, key)
    return default if v is None else v


def _tile_load(body: Body, ptr: str, v: SSAValue, st: Sequence[int], shape: list[int],
               m: int, n: int) -> Val:
    """Load group input v broadcast into an epilogue value of `shape` ([.., N])."""
    vs = shape_of(v)
    off = len(shape) - len(vs)
    full = [0] * len(shape)
    for i, (size, stride) in enumerate(zip(vs, st, strict=True)):
        if size != 1:
            full[off + i] = stride
    rows = offset_expr("rm[:, None]", shape[:-1], full[:-1])
    cols = offset_expr("rn[None, :]", shape[-1:], full[-1:])
    dt = value_dtype(v)
    hold = compute_dtype(dt)
    if rows and cols:
        e = _load_line(ptr, f"{rows} + {cols}", "mask", dt, hold)
    elif rows:
        e = _load_line(ptr, rows, f"rm[:, None] < {m}", dt, hold)
    elif cols:
        e = _load_line(ptr, cols, f"rn[None, :] < {n}", dt, hold)
    else:
        e = _load_line(ptr, "", None, dt, hold)
    return body.bind(None, e, hold, bool(rows or cols))


# --------------------------------------------------------------------------
# Compiling and launching
# --------------------------------------------------------------------------

_LOADED: dict[tuple[str, bool], Any] = {}


def load_kernel(src: KernelSource):
    """The @triton.jit function of a source, imported from the cache folder.

    Triton decides at decoration time whether the function runs in its
    interpreter (TRITON_INTERPRET), so a process that switches the variable
    (tests scope it) keeps one loaded function per mode.
    """
    key = (src.name, interpreting())
    fn = _LOADED.get(key)
    if fn is not None:
        return fn
    path = cache_dir() / f"{src.name}.py"
    if not path.exists() or path.read_text() != src.text:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(src.text)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(src.name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[src.name] = module
    spec.loader.exec_module(module)
    fn = getattr(module, src.name)
    _LOADED[key] = fn
    return fn


class TritonGroup:
    """A fused group as a callable over tensors, running its Triton kernel."""

    def __init__(self, op: FusedOp):
        self.op = op
        self.out_types = [(list(shape_of(r)), value_dtype(r)) for r in op.outputs]
        self._kernels: dict[tuple, tuple[Any, KernelSource]] = {}
        # generate once with contiguous inputs: unsupported groups fail here
        self._kernel([contiguous_strides(shape_of(v)) for v in op.inputs])

    def _kernel(self, strides: Sequence[Sequence[int]]):
        key = tuple(tuple(s) for s in strides)
        hit = self._kernels.get(key)
        if hit is None:
            src = generate(self.op, strides)
            hit = (load_kernel(src), src)
            self._kernels[key] = hit
        return hit

    def source(self, strides=None) -> str:
        if strides is None:
            strides = [contiguous_strides(shape_of(v)) for v in self.op.inputs]
        return self._kernel(strides)[1].text

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        fn, src = self._kernel([t.stride() for t in tensors])
        device = tensors[0].device if tensors else torch.device("cpu")
        outs = [torch.empty(s, dtype=dt, device=device) for s, dt in self.out_types]
        if all(o.numel() == 0 for o in outs):
            return outs
        kwargs = {"num_warps": src.num_warps}
        if src.num_stages is not None and not interpreting():
            kwargs["num_stages"] = src.num_stages
        fn[src.grid](*tensors, *outs, **kwargs)
        return outs
