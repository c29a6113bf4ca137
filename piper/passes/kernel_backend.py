"""kernel-backend: record how each fused group of a plan runs.

The fusion passes decide which ops form a kernel; this pass decides what
runs it, so that the runtime only reads the answer off the IR. On the
`kernel.fused` ops of the selected functions (all functions, or the stage
functions its `filter` selects, as for the fusion passes) it sets

    backend="triton"   the group runs as its generated Triton kernel
    backend="aten"     the group's body runs op by op with aten (same
                       grouping, no generated code: the debugging fallback)
    backend="off"      the groups are dissolved: their body ops go back into
                       the function, which then runs exactly as unfused

    %r = kernel.fused elementwise domain [16] block [16] warps 1 (%x, %y) {...}
      -- kernel-backend{backend="aten"} ->
    %r = kernel.fused elementwise domain [16] block [16] warps 1 backend aten (%x, %y) {...}

A later run of the pass on the same functions overrides an earlier one, so
a strategy can fuse everything with Triton and then send one stage to aten.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter

from piper.diagnostics import PiperError
from piper.dialects.kernel import BACKENDS, FusedOp
from piper.passes.fusion import selected_functions

CHOICES = (*BACKENDS, "off")


def dissolve(op: FusedOp) -> None:
    """Put a fused group's body back in place of the group."""
    mapping: dict[SSAValue, SSAValue] = dict(zip(op.body.block.args, op.inputs, strict=True))
    for inner in op.body_ops:
        clone = inner.clone(value_mapper=mapping)
        Rewriter.insert_op(clone, InsertPoint.before(op))
    yielded = [mapping[v] for v in op.body.block.last_op.operands]
    for old, new in zip(op.outputs, yielded, strict=True):
        if old.name_hint:
            new.name_hint = old.name_hint
        old.replace_all_uses_with(new)
    Rewriter.erase_op(op)


@dataclass(frozen=True)
class KernelBackend(ModulePass):
    """Set the backend of fused groups (triton, aten), or dissolve them (off)."""

    name = "kernel-backend"

    backend: str = "triton"
    filter: str = ""  # stage functions, e.g. "[PP=1 PASS=B]" (fusion.selected_functions)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.backend not in CHOICES:
            raise PiperError(
                f"kernel-backend: backend must be one of {', '.join(CHOICES)}, "
                f"got '{self.backend}'"
            )
        for fn in selected_functions(op, self.filter, self.name):
            groups = [o for o in fn.walk() if isinstance(o, FusedOp)]
            for group in groups:
                if self.backend == "off":
                    dissolve(group)
                else:
                    group.backend = StringAttr(self.backend)
