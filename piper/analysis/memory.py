"""Peak live bytes of a device program, read off the plan.

A value is live from the instruction that produces it to its `sched.free`;
a received or collective result from its wait. This is the same accounting
the runtime measures (live tensors it holds per instruction), so estimate
and measurement can be compared exactly.
"""

from __future__ import annotations

from xdsl.dialects.builtin import TensorType

from piper.dialects import sched
from piper.dialects.dist import type_bytes


def program_peak_bytes(program: sched.ProgramOp) -> int:
    live = peak = 0
    for op in program.body.block.ops:
        for r in op.results:
            if isinstance(r.type, TensorType):
                live += type_bytes(r.type)
        peak = max(peak, live)
        if isinstance(op, sched.FreeOp):
            live -= type_bytes(op.value.type)
    return peak
