"""fuse-elementwise: chains of pointwise graph ops become one Triton kernel.

Pointwise ops (`kernel.POINTWISE`: arithmetic, activations and their
backward, comparisons, casts, ...) that produce tensors of one shape and are
connected producer to consumer are grouped into a `kernel.fused elementwise`
op over that shape. Operands of other shapes broadcast into it, Python
scalars stay constants in the kernel. A group is only formed when it holds at
least `min_ops` ops (a lone op gains nothing from a kernel of its own) and
its shape has more than one element (scalar bookkeeping such as an
optimizer's step count stays with aten).

    %a = graph.aten "aten.mul.Tensor"(%x, %y) ...      %r = kernel.fused elementwise
    %b = graph.aten "aten.add.Tensor"(%a, %bias) ...  ->   domain [4, 8] ... (%x, %y, %bias) {...}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)

from piper.dialects.graph import AtenOp
from piper.dialects.kernel_layout import POINTWISE, LayoutError, group_layout, shape_of
from piper.passes.fusion import (
    consumers,
    grow,
    in_function,
    inputs_of,
    next_pow2,
    outline,
    producers,
    selected_functions,
    warps_for,
)

MAX_BLOCK = 1024


def is_pointwise(op) -> bool:
    return (
        isinstance(op, AtenOp)
        and op.target.data in POINTWISE
        and len(op.outputs) == 1
        and in_function(op)
    )


@dataclass
class FuseElementwiseChain(RewritePattern):
    min_ops: int = 2

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: AtenOp, rewriter: PatternRewriter) -> None:
        if not is_pointwise(op):
            return
        domain = shape_of(op.outputs[0])
        if math.prod(domain) <= 1:
            return  # scalar bookkeeping (an optimizer's step count) stays with aten

        def same_shape(o) -> bool:
            return is_pointwise(o) and shape_of(o.outputs[0]) == domain

        def neighbours(o):
            return [n for n in producers(o) + consumers(o) if same_shape(n)]

        def accepts(ops) -> bool:
            try:
                group_layout(ops, inputs_of(ops), domain, ())
            except LayoutError:
                return False
            return True

        ops = grow(op, neighbours, accepts)
        if len(ops) < self.min_ops:
            return
        block = min(MAX_BLOCK, next_pow2(math.prod(domain)))
        outline(rewriter, ops, "elementwise", domain=domain, block=[block],
                num_warps=warps_for(block))


@dataclass(frozen=True)
class FuseElementwise(ModulePass):
    """Group connected pointwise graph ops into elementwise kernels."""

    name = "fuse-elementwise"

    min_ops: int = 2
    filter: str = ""  # stage functions to fuse, e.g. "[PP=1 PASS=B]" (fusion.selected_functions)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        walker = PatternRewriteWalker(FuseElementwiseChain(self.min_ops), apply_recursively=False)
        for fn in selected_functions(op, self.filter, self.name):
            walker.rewrite_region(fn.body)
