"""Analytic work of graph functions: FLOPs, bytes moved and op count.

The cost model's roofline needs, per compute task, how much arithmetic it
does and how many bytes it moves through device memory. Both are read off
the stage function's `graph.aten` ops and their tensor types, without
running anything:

- matrix products count 2 FLOPs per multiply-add: `mm` [M,K]x[K,N] is
  2MKN, `bmm` 2BMKN, `addmm` 2MKN + MN, `matmul`/`linear` 2 * out * K;
- element-wise and reduction ops count `ELEMENT_FLOPS[op]` (default 1)
  FLOPs per element of their largest operand or result;
- views (`view`, `t`, `transpose`, `expand`, ...) are free: no FLOPs, no
  bytes; creation ops (`ones`, `arange`, ...) write their result only;
- bytes are every tensor operand read once plus every result written once;
- a `kernel.fused` group counts its body's FLOPs but only the bytes of its
  own operands and results (that is what fusing buys);
- a `func.call` counts its callee's work.

`Work.ops` counts the ops that launch a kernel (not views), for a per-op
launch/dispatch overhead. The per-element factors are rough operation
counts (a GELU is a handful of FLOPs per element), not measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation

from piper.diagnostics import PiperError
from piper.dialects.dist import type_bytes
from piper.dialects.graph import AtenOp

VIEWS = frozenset({
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand",
    "squeeze", "unsqueeze", "slice", "select", "split", "split_with_sizes",
    "alias", "as_strided", "detach", "unbind", "chunk", "unflatten", "flatten",
    "_reshape_alias", "numpy_T", "view_as",
})

CREATION = frozenset({
    "ones", "zeros", "full", "empty", "arange", "ones_like", "zeros_like",
    "full_like", "empty_like", "scalar_tensor", "new_zeros", "new_ones",
    "new_empty", "new_full", "empty_strided", "lift_fresh_copy",
})

# FLOPs per element for ops that are more than one arithmetic operation.
ELEMENT_FLOPS = {
    "gelu": 8, "gelu_backward": 12, "silu": 4, "silu_backward": 6,
    "tanh": 4, "tanh_backward": 2, "sigmoid": 4, "sigmoid_backward": 2,
    "exp": 2, "log": 2, "pow": 2, "rsqrt": 2, "sqrt": 1,
    "_softmax": 5, "_softmax_backward_data": 3,
    "_log_softmax": 5, "_log_softmax_backward_data": 3,
    "native_layer_norm": 8, "native_layer_norm_backward": 14,
    "nll_loss_forward": 1, "nll_loss_backward": 1,
    "embedding": 0, "clone": 0, "cat": 0, "copy": 0, "_to_copy": 0,
    "masked_fill": 1, "where": 1, "tril": 1, "triu": 1,
}


@dataclass(frozen=True)
class Work:
    """What one op, or a whole function, asks of a device."""

    flops: float = 0.0
    bytes: float = 0.0
    ops: int = 0

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.bytes + other.bytes, self.ops + other.ops)


def tensor_bytes(t) -> int:
    return type_bytes(t) if isinstance(t, TensorType) else 0


def numel(t) -> int:
    return math.prod(t.get_shape()) if isinstance(t, TensorType) else 0


def base_name(target: str) -> str:
    """`aten.addmm.default` -> `addmm`."""
    parts = target.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _shape(v) -> list[int]:
    return list(v.type.get_shape())


def _matmul_flops(name: str, op) -> float | None:
    ins = list(op.inputs)
    out = op.outputs[0].type if len(op.outputs) else None
    if name == "mm" and len(ins) >= 2:
        (m, k), (_, n) = _shape(ins[0]), _shape(ins[1])
        return 2.0 * m * k * n
    if name == "addmm" and len(ins) >= 3:
        (m, k), (_, n) = _shape(ins[1]), _shape(ins[2])
        return 2.0 * m * k * n + m * n
    if name in ("bmm", "baddbmm") and len(ins) >= 2:
        a, b = (ins[0], ins[1]) if name == "bmm" else (ins[1], ins[2])
        (bs, m, k), n = _shape(a), _shape(b)[-1]
        return 2.0 * bs * m * k * n + (bs * m * n if name == "baddbmm" else 0)
    if name in ("matmul", "linear") and ins and out is not None:
        k = _shape(ins[0])[-1] if _shape(ins[0]) else 1
        bias = numel(out) if name == "linear" and len(ins) >= 3 else 0
        return 2.0 * numel(out) * k + bias
    return None


def aten_work(op) -> Work:
    """Work of one `graph.aten` op (see the module docstring for the rules)."""
    name = base_name(op.target.data)
    if name in VIEWS:
        return Work()
    in_types = [v.type for v in op.inputs]
    out_types = [r.type for r in op.outputs]
    in_bytes = sum(tensor_bytes(t) for t in in_types)
    out_bytes = sum(tensor_bytes(t) for t in out_types)
    if name in CREATION:
        return Work(0.0, float(out_bytes), 1)
    flops = _matmul_flops(name, op)
    if flops is None:
        elems = max([numel(t) for t in in_types] + [numel(t) for t in out_types] + [0])
        flops = float(ELEMENT_FLOPS.get(name, 1) * elems)
    return Work(flops, float(in_bytes + out_bytes), 1)


def function_work(module: ModuleOp, name: str) -> Work:
    """Total work of the function `@name` of `module`."""
    total = Work()
    for w in op_works(module, name):
        total = total + w
    return total


def op_works(module: ModuleOp, name: str, _active: tuple[str, ...] = ()) -> list[Work]:
    """The work of every op `@name` launches, calls flattened, in order (a
    roofline is applied per op: each is bound by its own resource)."""
    if name in _active:
        raise PiperError(f"cost model: @{name} calls itself")
    fn = _find(module, name)
    out: list[Work] = []
    for op in fn.body.block.ops:
        if isinstance(op, func.CallOp):
            out += op_works(module, op.callee.root_reference.data, _active + (name,))
        else:
            w = _op_work(op)
            if w.ops or w.flops or w.bytes:
                out.append(w)
    return out


def _op_work(op: Operation) -> Work:
    if isinstance(op, AtenOp):
        return aten_work(op)
    if op.name == "kernel.fused":
        flops = sum(aten_work(b).flops for b in op.body_ops if isinstance(b, AtenOp))
        moved = (sum(tensor_bytes(v.type) for v in op.operands)
                 + sum(tensor_bytes(r.type) for r in op.results))
        return Work(flops, float(moved), 1)
    return Work()  # constants, returns


def _find(module: ModuleOp, name: str) -> func.FuncOp:
    for op in module.body.block.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == name:
            return op
    raise PiperError(f"cost model: no function @{name} in the module")
