"""Peak live bytes of a device program, read off the plan.

A value is live from the instruction that produces it to its `sched.free`;
a received or collective result from its wait. This is the same accounting
the runtime measures (live tensors it holds per instruction), so estimate
and measurement can be compared exactly.

Device and host memory are counted apart (`space`): a value is in host
memory when a `sched.load host` loads it, a `sched.copy ... to "host"`
makes it, a call on the host stream computes it or it is a `sched.shard`
of a host value (piper.passes.offload);
every other value is on the device. A plan without offload has no host
bytes, and its device peak is the program's whole peak.

The peak counts a training-state tensor only while the program holds it
(from its sched.load to its sched.free). Between steps the state stays
where it lives, in the runtime's state dict: `resident_bytes` is that
memory, per space (the parameters and optimizer state a program loads),
which offload moves from the device to the host.
"""

from __future__ import annotations

from xdsl.dialects.builtin import TensorType
from xdsl.ir import SSAValue

from piper.dialects import sched
from piper.dialects.dist import type_bytes

SPACES = ("device", "host", "all")


def on_host(v: SSAValue) -> bool:
    """Whether value `v` of a sched program lives in host memory."""
    op = v.owner
    # most values are call results (the simulator asks for every value): asked first
    if isinstance(op, sched.CallOp):
        return op.stream.data == sched.HOST_STREAM
    if isinstance(op, sched.LoadOp):
        return op.host is not None
    if isinstance(op, sched.CopyOp):
        return op.to_host
    if isinstance(op, sched.ShardOp):
        return on_host(op.value)  # a slice of a tensor is where the tensor is
    return False


def program_peak_bytes(program: sched.ProgramOp, space: str = "device") -> int:
    """The peak of the live bytes in `space` ("device", "host" or "all")."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")

    def counted(v: SSAValue) -> bool:
        return space == "all" or on_host(v) == (space == "host")

    live = peak = 0
    for op in program.body.block.ops:
        for r in op.results:
            if isinstance(r.type, TensorType) and counted(r):
                live += type_bytes(r.type)
        peak = max(peak, live)
        if isinstance(op, sched.FreeOp) and counted(op.value):
            live -= type_bytes(op.value.type)
    return peak


def resident_bytes(program: sched.ProgramOp, space: str = "device") -> int:
    """The bytes of the training state `program` loads (each tensor, or
    its shard, once) that live in `space` between steps."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    seen: dict[tuple, int] = {}
    for op in program.body.block.ops:
        if isinstance(op, sched.LoadOp) and (space == "all"
                                             or on_host(op.result) == (space == "host")):
            key = (op.tensor_name.data, str(op.shard))
            seen[key] = type_bytes(op.result.type)
    return sum(seen.values())
