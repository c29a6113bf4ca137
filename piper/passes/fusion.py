"""What the fusion passes share: growing a group of graph ops and outlining it.

A group is a set of `graph.aten` ops of one function body. It can become one
`kernel.fused` op placed where its last op stands when no op outside the
group uses a group value before that point (which also rules out cycles
through outside ops). `grow` adds neighbouring ops one at a time, keeping
only additions after which the group is still legal and its kind-specific
check still passes; `outline` replaces the group by the fused op.

Every fusion pass runs on every function of the module, or only on the
stage functions its `filter` option selects (`selected_functions`): that
is how the `piper.fuse` directive fuses part of a plan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.pattern_rewriter import PatternRewriter
from xdsl.rewriter import InsertPoint

from piper.diagnostics import PiperError
from piper.dialects.graph import AtenOp
from piper.dialects.kernel import FusedOp, YieldOp

# The fusion passes, in the order they run: matmul epilogues first (they
# claim the pointwise ops after a matmul), then reductions with their
# neighbours, then what is left of the pointwise chains.
FUSION_PIPELINE: tuple[str, ...] = ("fuse-matmul-epilogue", "fuse-reductions", "fuse-elementwise")

# Stage functions of a plan: @F1, @B0, @I0/@W0 (split backward), @OPT1, and
# derived copies such as @OPT1_zero2.
STAGE_FUNCTION = re.compile(r"^(F|B|I|W|OPT)(\d+)(?:_\w+)?$")


def selected_functions(module: ModuleOp, filter: str = "",  # noqa: A002
                       who: str = "fusion") -> list[func.FuncOp]:
    """The functions a fusion pass works on.

    No filter: every function of the module. Otherwise the stage functions
    whose task the filter (text form, `[PP=1 PASS=B]`, see
    piper/tasks/filters.py) matches: by stage, by kind ("B" also
    selects the I and W halves of a split backward) and by the other tags
    their ops carry. A stage function serves every microbatch, so a filter
    on MB is an error, as are a tag no function has and a filter that
    selects nothing.
    """
    from piper.tasks.filters import check_names, function_tags, parse_text

    fns = [op for op in module.body.block.ops if isinstance(op, func.FuncOp)]
    if not filter:
        return fns
    try:
        f = parse_text(filter)
    except PiperError as e:
        raise PiperError(f"{who}: {e.message}") from None
    if "MB" in f.names:
        raise PiperError(
            f"{who}: filter {filter} names MB, but a stage function serves every microbatch"
        )
    stage_fns = [(fn, STAGE_FUNCTION.match(fn.sym_name.data), function_tags(fn)) for fn in fns]
    stage_fns = [(fn, m, tags) for fn, m, tags in stage_fns if m]
    check_names(f, {k for _, _, tags in stage_fns for k in tags}, who)
    out = [fn for fn, m, tags in stage_fns
           if f.matches(int(m.group(2)), m.group(1), None, tags)]
    if not out:
        raise PiperError(f"{who}: filter {filter} selects no stage function")
    return out


def in_function(op: Operation) -> bool:
    """True for ops directly in a func.func body (not inside a fused group)."""
    return isinstance(op.parent_op(), func.FuncOp)


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def warps_for(block: int) -> int:
    return max(1, min(8, block // 256))


def _order(block: Block) -> dict[Operation, int]:
    return {op: i for i, op in enumerate(block.ops)}


def inputs_of(ops: Sequence[Operation]) -> list[SSAValue]:
    """External operands of a group, in order of first use."""
    inside = {r for op in ops for r in op.results}
    out: list[SSAValue] = []
    seen: set[SSAValue] = set()
    for op in ops:
        for v in op.operands:
            if v not in inside and v not in seen:
                seen.add(v)
                out.append(v)
    return out


def outputs_of(ops: Sequence[Operation]) -> list[SSAValue]:
    """Group values used outside the group, in order of definition."""
    group = set(ops)
    return [
        r for op in ops for r in op.results
        if any(u.operation not in group for u in r.uses)
    ]


def legal(group: set[Operation], order: dict[Operation, int]) -> bool:
    last = max(order[o] for o in group)
    for o in group:
        for r in o.results:
            for use in r.uses:
                u = use.operation
                if u not in group and order.get(u, len(order)) < last:
                    return False
    return True


def grow(
    seed: Operation,
    neighbours: Callable[[Operation], Iterable[Operation]],
    accepts: Callable[[list[Operation]], bool],
) -> list[Operation]:
    """Grow a group from `seed`; returns its ops in block order.

    `neighbours(op)` proposes ops to add next to op; `accepts(ops)` says
    whether a candidate group (in block order) can still be one kernel.
    Rejected ops are tried again after every successful addition, since a
    later addition can make them legal.
    """
    block = seed.parent_block()
    assert block is not None
    order = _order(block)
    group = {seed}
    changed = True
    while changed:
        changed = False
        frontier: list[Operation] = []
        for op in sorted(group, key=order.__getitem__):
            for n in neighbours(op):
                if n not in group and n not in frontier and n.parent_block() is block:
                    frontier.append(n)
        for n in sorted(frontier, key=order.__getitem__):
            trial = group | {n}
            if not legal(trial, order):
                continue
            ops = sorted(trial, key=order.__getitem__)
            if accepts(ops):
                group = trial
                changed = True
    return sorted(group, key=order.__getitem__)


def producers(op: Operation) -> list[Operation]:
    out = []
    for v in op.operands:
        owner = v.owner
        if isinstance(owner, AtenOp):
            out.append(owner)
    return out


def consumers(op: Operation) -> list[Operation]:
    out = []
    for r in op.results:
        for use in r.uses:
            if isinstance(use.operation, AtenOp):
                out.append(use.operation)
    return out


def outline(
    rewriter: PatternRewriter,
    ops: Sequence[Operation],
    kind: str,
    *,
    domain: Sequence[int],
    block: Sequence[int],
    num_warps: int,
    reduce: Sequence[int] | None = None,
    num_stages: int | None = None,
    anchor: Operation | None = None,
) -> FusedOp:
    """Replace `ops` (in block order) by one kernel.fused op at the last one."""
    inputs = inputs_of(ops)
    outputs = outputs_of(ops)
    body = Block(arg_types=[v.type for v in inputs])
    mapping: dict[SSAValue, SSAValue] = {}
    for v, a in zip(inputs, body.args, strict=True):
        mapping[v] = a
        if v.name_hint:
            a.name_hint = v.name_hint
    for op in ops:
        body.add_op(op.clone(value_mapper=mapping))
    body.add_op(YieldOp([mapping[v] for v in outputs]))
    fused = FusedOp(
        kind, inputs, [v.type for v in outputs], Region(body),
        domain=domain, block=block, num_warps=num_warps, reduce=reduce,
        num_stages=num_stages,
    )
    fused.location = (anchor or ops[-1]).location
    rewriter.insert(fused, InsertPoint.before(ops[-1]))
    for old, new in zip(outputs, fused.outputs, strict=True):
        new.name_hint = old.name_hint
        rewriter.replace_all_uses_with(old, new)
    for op in reversed(ops):
        rewriter.erase(op)
    return fused
