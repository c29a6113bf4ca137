"""fuse-matmul-epilogue: a matmul and the pointwise ops on its result, one kernel.

An `aten.mm` / `aten.addmm` (bias included) together with the pointwise ops
that consume its result tile (activation, activation backward, residual add,
scaling) becomes a `kernel.fused matmul` op: a tiled `tl.dot` loop whose
epilogue runs on each output tile before it is stored, so the matmul result
never makes a round trip through memory. Reshapes that keep the last dim
(`[B*T, N] -> [B, T, N]`) may sit between the matmul and its epilogue.
A matmul without a pointwise consumer is left to aten (cuBLAS).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import BFloat16Type, Float16Type, Float32Type, ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from piper.dialects.graph import AtenOp
from piper.dialects.kernel_layout import (
    MATMULS,
    POINTWISE,
    RESHAPES,
    LayoutError,
    check_matmul_group,
    shape_of,
)
from piper.passes.fusion import (
    consumers,
    grow,
    in_function,
    inputs_of,
    next_pow2,
    outline,
    selected_functions,
)


def tiles(m: int, n: int, k: int) -> tuple[list[int], int, int]:
    """Block sizes [BM, BN, BK], warps and stages for an M x N x K matmul."""
    bm = min(128, max(16, next_pow2(m)))
    bn = min(128, max(16, next_pow2(n)))
    bk = min(32, max(16, next_pow2(k)))
    warps = 8 if bm * bn >= 128 * 128 else 4
    return [bm, bn, bk], warps, 3


@dataclass
class FuseMatmulWithEpilogue(RewritePattern):
    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: AtenOp, rewriter: PatternRewriter) -> None:
        if op.target.data not in MATMULS or not in_function(op):
            return
        t = op.outputs[0].type
        if not isinstance(t.element_type, Float32Type | Float16Type | BFloat16Type):
            return

        def neighbours(o):
            return [
                c for c in consumers(o)
                if in_function(c) and len(c.outputs) == 1
                and (c.target.data in POINTWISE or c.target.data in RESHAPES)
            ]

        def accepts(ops) -> bool:
            try:
                check_matmul_group(ops, inputs_of(ops))
            except LayoutError:
                return False
            return True

        ops = grow(op, neighbours, accepts)
        if not any(o.target.data in POINTWISE for o in ops):
            return
        a, b = op.inputs[-2], op.inputs[-1]
        (m, k), (_, n) = shape_of(a), shape_of(b)
        block, warps, stages = tiles(m, n, k)
        outline(rewriter, ops, "matmul", domain=[m, n, k], block=block,
                num_warps=warps, num_stages=stages, anchor=op)


@dataclass(frozen=True)
class FuseMatmulEpilogue(ModulePass):
    """Fuse mm/addmm with the pointwise ops applied to its result."""

    name = "fuse-matmul-epilogue"

    filter: str = ""  # stage functions to fuse, e.g. "[PP=1 PASS=B]" (fusion.selected_functions)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        walker = PatternRewriteWalker(FuseMatmulWithEpilogue(), apply_recursively=False)
        for fn in selected_functions(op, self.filter, self.name):
            walker.rewrite_region(fn.body)
