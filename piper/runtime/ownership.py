"""Which results of a stage function own their memory alone, read off the plan.

The runtime may run an all_reduce in the memory of its input instead of a
copy, but only when nothing else can see that memory: writing into it would
otherwise change a tensor of the training state, a constant of a function
or another value of the program. Whether a result of a `sched.call` shares
memory with anything is decided inside the called function, and the IR
says it: an aten op's schema annotates every result that may alias an
operand (`Tensor(a)`: views, `detach`, in-place ops); any other result is
memory the op has just allocated. A function result is private when it is
such a fresh tensor, no op of the function may return an alias of it, and
it is returned once.

This is what the runtime used to ask torch at run time by counting the
users of a tensor's storage, through a private torch function
(`torch._C._storage_Use_Count`); the plan answers it without one.
"""

from __future__ import annotations

from xdsl.ir import Block, SSAValue
from xdsl.traits import IsTerminator

from piper.backend.aten import _schema_of
from piper.dialects.kernel import FusedOp


def private_results(block: Block) -> tuple[bool, ...]:
    """For each value the block returns (its terminator's operands, a
    func.func body or a fused group's body): whether it is memory that
    only this result refers to once the block has run.

    Conservative: an op this analysis does not know (a call, a constant,
    an op without a schema) makes its results shared and its operands
    possibly aliased, and a fused group's results are private only when
    its body's are (a Triton kernel allocates its outputs, the aten
    fallback runs the body)."""
    last = block.last_op
    if last is None or not last.has_trait(IsTerminator):
        return ()
    fresh: set[SSAValue] = set()
    aliased: set[SSAValue] = set()  # values some op may return (a view of) again
    for op in block.ops:
        if op is last:
            break
        if isinstance(op, FusedOp):
            inner = private_results(op.body.block)
            fresh.update(r for r, private in zip(op.results, inner, strict=False) if private)
            if len(inner) != len(op.results) or not all(inner):
                aliased.update(op.operands)
            continue
        found = _schema_of(op)
        schema = None if found is None else found[0]
        if (schema is None or schema.is_mutable
                or any(r.alias_info is not None for r in schema.returns)):
            aliased.update(op.operands)
        elif len(schema.returns) == len(op.results):
            fresh.update(op.results)
    returned = list(last.operands)
    return tuple(v in fresh and v not in aliased and returned.count(v) == 1 for v in returned)
