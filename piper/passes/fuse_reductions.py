"""fuse-reductions: a reduction and its pointwise neighbours become one kernel.

Each reduction op (`kernel.REDUCTIONS`: sums, means, max/min, softmax and
log-softmax forward and backward, layer norm forward and input gradient)
anchors a `kernel.fused reduction` op over its input's shape, with the
reduced dims held in one block per program. Pointwise producers and
consumers are pulled in when their values fit that loop (per element or
per row), as are further reductions over the same dims (the two means of
a decomposed LayerNorm, the two sums of its weight/bias gradients).
Cross-entropy's backward (`nll_loss_backward` feeding
`_log_softmax_backward_data`) thus becomes one kernel.

`native_layer_norm_backward` computes its weight and bias gradients with
column sums, a different loop than its per-row input gradient; the pass
first splits those off into graph ops (`sum` of `dy * xhat` and of `dy` over
the leading dims), which then fuse into a column-reduction kernel.

Rows longer than `max_block` elements stay with aten.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Attribute, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint

from piper.dialects.graph import ArgRefAttr, AtenOp
from piper.dialects.graph_values import to_attr
from piper.dialects.kernel_layout import (
    POINTWISE,
    REDUCTIONS,
    RESHAPES,
    LayoutError,
    arg_value,
    group_layout,
    reduced_dims,
    shape_of,
)
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

MAX_BLOCK = 16384


def aten(target: str, args: Sequence, result_types: Sequence[Attribute], like: AtenOp) -> AtenOp:
    """A graph op from Python arguments (SSA values become operands)."""
    operands: list[SSAValue] = []

    def ref(v):
        if isinstance(v, SSAValue):
            operands.append(v)
            return ArgRefAttr(len(operands) - 1)
        return None

    attrs = [to_attr(a, ref) for a in args]
    op = AtenOp(target, operands, attrs, {}, result_types, like.tag_dict())
    op.location = like.location
    return op


@dataclass
class SplitLayerNormBackward(RewritePattern):
    """Compute native_layer_norm_backward's weight/bias grads as column sums."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: AtenOp, rewriter: PatternRewriter) -> None:
        if op.target.data != "aten.native_layer_norm_backward.default" or not in_function(op):
            return
        mask = arg_value(op, 7)
        if not (mask[1] or mask[2]):
            return
        dy, x = arg_value(op, 0), arg_value(op, 1)
        nshape = arg_value(op, 2)
        mean, rstd, w, b = (arg_value(op, i) for i in (3, 4, 5, 6))
        if mixed_statistics(op):
            return
        lead = list(range(len(shape_of(x)) - len(nshape)))
        results = iter(op.outputs)
        new_ops: list[AtenOp] = []
        replace: list[tuple[SSAValue, SSAValue]] = []
        xt = x.type
        assert isinstance(xt, TensorType)
        if mask[0]:
            dx = aten(op.target.data, [dy, x, nshape, mean, rstd, w, b, [True, False, False]],
                      [xt], op)
            new_ops.append(dx)
            replace.append((next(results), dx.outputs[0]))
        if mask[1]:
            old = next(results)
            sub = aten("aten.sub.Tensor", [x, mean], [xt], op)
            xhat = aten("aten.mul.Tensor", [sub.outputs[0], rstd], [xt], op)
            prod = aten("aten.mul.Tensor", [dy, xhat.outputs[0]], [xt], op)
            dw = aten("aten.sum.dim_IntList", [prod.outputs[0], lead, False], [old.type], op)
            new_ops += [sub, xhat, prod, dw]
            replace.append((old, dw.outputs[0]))
        if mask[2]:
            old = next(results)
            db = aten("aten.sum.dim_IntList", [dy, lead, False], [old.type], op)
            new_ops.append(db)
            replace.append((old, db.outputs[0]))
        rewriter.insert(new_ops, InsertPoint.before(op))
        for old, new in replace:
            new.name_hint = old.name_hint
            rewriter.replace_all_uses_with(old, new)
        rewriter.erase(op)


def anchor_loop(op: AtenOp) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The domain and reduced dims of a reduction op's kernel."""
    return shape_of(op.inputs[0]), reduced_dims(op)


def mixed_statistics(op: AtenOp) -> bool:
    """A layer norm (or its backward) of bf16/fp16 values with fp32 mean and
    rstd, as torch's meta kernels type it (CUDA's kernels agree; the CPU
    kernels keep the statistics in the input dtype): aten runs it, so the
    statistics are what the device's own backward expects."""
    t = op.target.data
    if t == "aten.native_layer_norm.default":
        return len({r.type.element_type for r in op.outputs}) > 1
    if t == "aten.native_layer_norm_backward.default":
        x = arg_value(op, 1).type.element_type
        return any(arg_value(op, i).type.element_type != x for i in (3, 4))
    return False


def is_fusable(op) -> bool:
    if not isinstance(op, AtenOp) or not in_function(op) or mixed_statistics(op):
        return False
    t = op.target.data
    return t in REDUCTIONS or t in RESHAPES or (t in POINTWISE and len(op.outputs) == 1)


@dataclass
class FuseReductionGroup(RewritePattern):
    max_block: int = MAX_BLOCK

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: AtenOp, rewriter: PatternRewriter) -> None:
        if op.target.data not in REDUCTIONS or not in_function(op) or mixed_statistics(op):
            return
        domain, reduce = anchor_loop(op)
        n = math.prod(domain[d] for d in reduce)
        if n > self.max_block or math.prod(domain) == 0:
            return

        def accepts(ops) -> bool:
            try:
                group_layout(ops, inputs_of(ops), domain, reduce)
            except LayoutError:
                return False
            return True

        if not accepts([op]):
            return

        def neighbours(o):
            out = []
            for p in producers(o):
                if is_fusable(p) and p.target.data in POINTWISE:
                    out.append(p)
            for c in consumers(o):
                if is_fusable(c):
                    out.append(c)
            # sibling reductions over the same values
            for v in o.operands:
                for use in v.uses:
                    u = use.operation
                    if is_fusable(u) and u.target.data in REDUCTIONS:
                        out.append(u)
            return out

        ops = grow(op, neighbours, accepts)
        block = next_pow2(n)
        outline(rewriter, ops, "reduction", domain=domain, reduce=reduce,
                block=[block], num_warps=warps_for(block), anchor=op)


@dataclass(frozen=True)
class FuseReductions(ModulePass):
    """Fuse each reduction with its pointwise producers and consumers."""

    name = "fuse-reductions"

    max_block: int = MAX_BLOCK
    filter: str = ""  # stage functions to fuse, e.g. "[PP=1 PASS=B]" (fusion.selected_functions)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        split = PatternRewriteWalker(SplitLayerNormBackward(), apply_recursively=False)
        group = PatternRewriteWalker(FuseReductionGroup(self.max_block), apply_recursively=False)
        for fn in selected_functions(op, self.filter, self.name):
            split.rewrite_region(fn.body)
            group.rewrite_region(fn.body)
