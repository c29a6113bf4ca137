"""offload{optimizer=true}: optimizer state in host memory, the optimizer
step on the host (ZeRO-Offload's split), written into the sched programs.

Devices run out of memory for optimizer state first (AdamW: two fp32
tensors per parameter). This pass runs on the lowered programs (after
lower-dist-to-sched) and, for every optimizer call (a `sched.call` that
reads optimizer state its program loads for it alone):

- the state is loaded into host memory (`sched.load host`) and its new
  value is stored from there: it never occupies the device;
- the call runs on the host stream (`stream "host"`);
- each other argument (the gradient, the master parameter: under ZeRO the
  rank's shard of them) is copied to the host first, `sched.copy %g to
  "host" stream "d2h"`, and each result the device reads on (the updated
  parameter, for the all-gather or the store) is copied back, `sched.copy
  to "device" stream "h2d"`;
- every buffer is freed after its last use again, so a device copy is
  freed once its host copy exists.

The copies are instructions on their own streams, so verify-plan, the
simulator (which prices them on the preset's host link and counts host
bytes apart from device bytes) and the timeline see them. On a CPU the
host is the device and each copy is a real copy of the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, UnitAttr
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.passes.func_utils import functions, graph_attrs

D2H, H2D = "d2h", "h2d"


@dataclass(frozen=True)
class Offload(ModulePass):
    name = "offload"

    optimizer: bool = True  # optimizer state (and the step) in host memory

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        progs = [o for o in op.body.block.ops if isinstance(o, sched.ProgramOp)]
        if not progs:
            raise PiperError("offload: no sched.program in the module; run "
                             "lower-dist-to-sched first")
        if not self.optimizer:
            return
        fns = functions(op)
        moved = 0
        for p in progs:
            if any(isinstance(o, sched.CopyOp) or (isinstance(o, sched.CallOp)
                                                   and o.stream.data == sched.HOST_STREAM)
                   for o in p.body.block.ops):
                raise PiperError("offload: the programs are already offloaded")
            for c in [o for o in p.body.block.ops if isinstance(o, sched.CallOp)]:
                states = _offloadable_state(c, fns.get(c.callee.root_reference.data))
                if states:
                    _to_host(p.body.block, c, states)
                    moved += 1
        if not moved:
            raise PiperError("offload: no optimizer call reads optimizer state (an optimizer "
                             "without state, such as plain SGD, has nothing to offload)")


def _offloadable_state(c: sched.CallOp, fn: func.FuncOp | None) -> list[int]:
    """Positions of `c`'s arguments that are optimizer state its program
    loads for this call alone (the loss scale, read by other calls, is not)."""
    if fn is None:
        return []
    out = []
    for i, a in enumerate(c.args):
        at = graph_attrs(fn, i)
        ld = a.owner
        if (at.get("kind") == "state" and not at.get("name", "").startswith("loss_scale")
                and isinstance(ld, sched.LoadOp)
                and all(u.operation is c or isinstance(u.operation, sched.FreeOp)
                        for u in a.uses)):
            out.append(i)
    return out


def _to_host(block: Block, c: sched.CallOp, states: list[int]) -> None:
    touched: list[SSAValue] = []
    for i, a in enumerate(list(c.args)):
        if i in states:
            a.owner.host = UnitAttr()
            continue
        cp = sched.CopyOp(a, "host", D2H)
        cp.result.name_hint = f"{a.name_hint or 'v'}_host"
        block.insert_op_before(cp, c)
        c.operands[i] = cp.result
        touched += [a, cp.result]
    c.stream = StringAttr(sched.HOST_STREAM)
    after: Operation = c
    for r in c.res:
        readers = [u.operation for u in r.uses
                   if not isinstance(u.operation, sched.FreeOp | sched.StoreOp)]
        if not readers:
            continue  # stored from the host (the state) or unused
        cp = sched.CopyOp(r, "device", H2D)
        cp.result.name_hint = f"{r.name_hint or 'v'}_device"
        block.insert_op_after(cp, after)
        after = cp
        for u in list(r.uses):
            if u.operation is not cp and not isinstance(u.operation, sched.FreeOp):
                u.operation.operands[u.index] = cp.result
        touched += [r, cp.result]
    _refree(block, touched)


def _refree(block: Block, values: list[SSAValue]) -> None:
    """Each of `values` freed right after its last reader (its old frees
    dropped): a device buffer goes as soon as its host copy exists."""
    for v in values:
        for u in list(v.uses):
            if isinstance(u.operation, sched.FreeOp):
                block.erase_op(u.operation)
        last = None
        for u in v.uses:
            o = u.operation
            if last is None or _index(block, o) > _index(block, last):
                last = o
        where = last if last is not None else v.owner
        block.insert_op_after(sched.FreeOp(v), where)


def _index(block: Block, op: Operation) -> int:
    return block.get_operation_index(op)
