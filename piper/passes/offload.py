"""offload{optimizer params activations stages prefetch}: training state
and saved activations in host memory, written into the sched programs.

Devices run out of memory for optimizer state first (AdamW: two fp32
tensors per parameter), then for the parameters, then for the activations
a pipeline keeps between forward and backward. This pass runs on the
lowered programs (after lower-dist-to-sched) and moves each of them to the
host, ZeRO-Offload's split:

- `optimizer`: for every optimizer call (a `sched.call` that reads
  optimizer state its program loads for it alone) the state is loaded into
  host memory (`sched.load host`) and stored from there, and the call runs
  on the host stream (`stream "host"`);
- `params`: every parameter (the fp32 master under bf16 precision: the
  plan's parameters are the masters) is loaded into host memory; a device
  copy exists only while tasks read it: one `sched.copy to "device"` for
  the forward's reads and one for the backward's (one for both where a
  schedule interleaves them, as 1F1B does), each freed after its last
  reader; a parameter the device updated is copied back before its store;
- `activations` (of `stages`, every stage when empty): each forward result
  a backward task reads is copied to the host right after the forward task
  (`d2h`), its device buffer freed, and copied back (`h2d`) before the
  first backward task that reads it.

Then one rule makes the programs consistent: an instruction that runs on
the device and reads a host value gets a device copy (`sched.copy to
"device" stream "h2d"`), a host call that reads a device value gets a host
copy (`stream "d2h"`, right before it, the device buffer freed once
copied). With `prefetch` (n) each copy to the device is issued n device
tasks before the task that needs it (never before its data exists), so it
runs on its stream while those tasks compute: in a 1F1B steady state two
tasks ahead is one microbatch's forward and backward. The copies are instructions on
their own streams: verify-plan, the simulator (which prices them on the
preset's host link and counts host bytes apart from device bytes) and the
timeline see them. On a CPU the host is the device and each copy is a real
copy of the tensor, so an offloaded plan trains exactly as without.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, UnitAttr
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass

from piper.analysis.memory import on_host, program_peak_bytes, resident_bytes
from piper.analysis.task_costs import task_kind, task_stage_mb
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.passes.func_utils import functions, graph_attrs

D2H, H2D = "d2h", "h2d"

# Instructions that read a value wherever it lives: a free ends either, a
# store saves either, a copy moves it, a shard of a host value is a host
# value (a slice where its tensor is).
_ANYWHERE = (sched.FreeOp, sched.StoreOp, sched.CopyOp, sched.ShardOp)


@dataclass(frozen=True)
class Offload(ModulePass):
    name = "offload"

    optimizer: bool = True  # optimizer state (and the step) in host memory, update on the host
    params: bool = False  # parameters (fp32 masters) in host memory between uses
    activations: bool = False  # saved activations in host memory between F and B
    stages: tuple[int, ...] = ()  # the stages whose activations move; empty: every stage
    prefetch: int = 2  # copies to the device issued this many device tasks ahead
    host_memory: int = 0  # host bytes a rank may use (0: no limit)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        progs = [o for o in op.body.block.ops if isinstance(o, sched.ProgramOp)]
        if not progs:
            raise PiperError("offload: no sched.program in the module; run "
                             "lower-dist-to-sched first")
        if not (self.optimizer or self.params or self.activations):
            raise PiperError("offload: nothing to offload (optimizer, params and "
                             "activations are all false)")
        if not isinstance(self.prefetch, int) or self.prefetch < 0:
            raise PiperError(f"offload: prefetch must be an integer >= 0, got {self.prefetch!r}")
        if not isinstance(self.host_memory, int) or self.host_memory < 0:
            raise PiperError("offload: host_memory must be an integer >= 0 (bytes; 0: no "
                             f"limit), got {self.host_memory!r}")
        if self.stages and not self.activations:
            raise PiperError("offload: stages choose whose activations move; "
                             "set activations=true")
        for p in progs:
            if any(isinstance(o, sched.CopyOp) or _on_host_stream(o)
                   or (isinstance(o, sched.LoadOp) and o.host is not None)
                   for o in p.body.block.ops):
                raise PiperError("offload: the programs are already offloaded")
        stages = self._stages(progs)
        fns = functions(op)
        params = {graph_attrs(fn, i).get("name") for fn in fns.values()
                  for i in range(len(fn.function_type.inputs.data))
                  if graph_attrs(fn, i).get("kind") == "param"}
        moved = defaultdict(int)
        for p in progs:
            block = p.body.block
            if self.optimizer:
                for c in [o for o in block.ops if isinstance(o, sched.CallOp)]:
                    states = _offloadable_state(c, fns.get(c.callee.root_reference.data))
                    for i in states:
                        c.args[i].owner.host = UnitAttr()
                    if states:
                        c.stream = StringAttr(sched.HOST_STREAM)
                        moved["optimizer"] += 1
            if self.params:
                for ld in block.ops:
                    if isinstance(ld, sched.LoadOp) and ld.tensor_name.data in params:
                        ld.host = UnitAttr()
                        moved["params"] += 1
            if self.activations:
                moved["activations"] += _activations_to_host(block, stages)
            _legalize(block)
            if self.prefetch:
                _prefetch(block, self.prefetch)
        if self.optimizer and not moved["optimizer"]:
            raise PiperError("offload: no optimizer call reads optimizer state (an optimizer "
                             "without state, such as plain SGD, has nothing to offload)")
        if self.params and not moved["params"]:
            raise PiperError("offload: params: the programs load no parameter")
        if self.activations and not moved["activations"]:
            which = f"stage{'s' if len(stages) > 1 else ''} {_list(stages)}"
            raise PiperError(f"offload: activations: no forward task of {which} saves a "
                             "result for its backward (a plan without backward tasks, or one "
                             "whose forward keeps nothing, has no activations to offload)")
        if self.host_memory:
            for p in progs:
                _check_host_budget(p, self.host_memory)

    def _stages(self, progs: list[sched.ProgramOp]) -> list[int]:
        """The stages whose activations move: `stages`, each one the plan has."""
        have = sorted({s for p in progs for o in p.body.block.ops
                       if isinstance(o, sched.CallOp)
                       for s in [task_stage_mb(o.task.data)[0]] if s is not None})
        for s in self.stages:
            if s not in have:
                raise PiperError(f"offload: activations: there is no stage {s} "
                                 f"(stages {_list(have)})")
        return list(self.stages) or have


def _list(xs) -> str:
    return ", ".join(map(str, xs))


def _on_host_stream(op: Operation) -> bool:
    return isinstance(op, sched.CallOp) and op.stream.data == sched.HOST_STREAM


def _offloadable_state(c: sched.CallOp, fn: func.FuncOp | None) -> list[int]:
    """Positions of `c`'s arguments that are optimizer state its program
    loads for optimizer calls alone (the step count two chunks of a device
    share is; the loss scale, read by other calls, is not)."""
    if fn is None:
        return []
    out = []
    for i, a in enumerate(c.args):
        at = graph_attrs(fn, i)
        ld = a.owner
        if (at.get("kind") == "state" and not at.get("name", "").startswith("loss_scale")
                and isinstance(ld, sched.LoadOp)
                and all(isinstance(u.operation, sched.FreeOp) or _phase(u.operation, 0) == "OPT"
                        for u in a.uses)):
            out.append(i)
    return out


def _phase(op: Operation, depth: int = 6) -> str:
    """Which part of the step an instruction serves: a task's kind (F, B
    for every backward kind, OPT), or that of the first task its results
    feed (a pack before an all_gather before a forward serves F)."""
    if isinstance(op, sched.CallOp):
        k = task_kind(op.task.data, op.callee.root_reference.data)
        if k in ("F", "OPT"):
            return k
        if k in ("B", "W", "I"):
            return "B"
    if depth:
        for r in op.results:
            for u in r.uses:
                p = _phase(u.operation, depth - 1)
                if p != "other":
                    return p
    return "other"


def _activations_to_host(block: Block, stages: list[int]) -> int:
    """Each value a backward task of `stages` reads that its forward made
    or read (a saved result, or the stage's input where the forward is
    recomputed): copied to the host right after the last forward task
    before the backward, its device buffer freed once copied (and sent on,
    where it is), and the backward tasks reading it rewired to the host
    copy; _legalize then brings it back for them. Training state (loads)
    and values only the backward reads (incoming gradients) stay."""
    pos = {o: i for i, o in enumerate(block.ops)}

    def forward(o: Operation) -> bool:
        return _phase(o, 0) == "F" and task_stage_mb(o.task.data)[0] in stages

    anchor: dict[SSAValue, Operation] = {}
    for c in [o for o in block.ops if _phase(o, 0) == "B"]:
        if task_stage_mb(c.task.data)[0] not in stages:
            continue
        for v in c.operands:
            if v in anchor or isinstance(v.owner, sched.LoadOp | sched.CopyOp):
                continue
            fs = [u.operation for u in v.uses if forward(u.operation)]
            if isinstance(v.owner, Operation) and forward(v.owner):
                fs.append(v.owner)
            fs = [f for f in fs if pos[f] < pos[c]]
            if fs:
                anchor[v] = max(fs, key=pos.__getitem__)
    after: dict[Operation, Operation] = {}
    refree: list[SSAValue] = []
    for v, f in sorted(anchor.items(), key=lambda kv: pos[kv[1]]):
        backward = [u for u in v.uses if _phase(u.operation, 0) == "B"
                    and pos[u.operation] > pos[f]]
        cp = _copy(v, "host")
        block.insert_op_after(cp, after.get(f, f))
        after[f] = cp
        for u in backward:
            u.operation.operands[u.index] = cp.result
        refree += [v, cp.result]
    _refree(block, refree)
    return len(anchor)


def _legalize(block: Block) -> None:
    """Copies where a value and its reader live apart: a host call's device
    arguments copied to the host right before it (each device buffer freed
    once copied), a device instruction's host operands copied to the device
    (one copy per part of the step that reads them), a device value stored
    into a tensor that lives on the host copied there first."""
    refree: list[SSAValue] = []
    for c in [o for o in block.ops if _on_host_stream(o)]:
        for i, a in enumerate(list(c.args)):
            if on_host(a):
                continue
            cp = _copy(a, "host")
            block.insert_op_before(cp, c)
            c.operands[i] = cp.result
            refree += [a, cp.result]
    host_tensors = {(o.tensor_name.data, str(o.shard)) for o in block.ops
                    if isinstance(o, sched.LoadOp) and o.host is not None}
    for st in [o for o in block.ops if isinstance(o, sched.StoreOp)]:
        v = st.operands[0]
        if (st.tensor_name.data, str(st.shard)) in host_tensors and not on_host(v):
            cp = _copy(v, "host")
            block.insert_op_before(cp, st)
            st.operands[0] = cp.result
            refree += [v, cp.result]
    _refree(block, refree)
    pos = {o: i for i, o in enumerate(block.ops)}
    for o in list(block.ops):
        for v in o.results:
            if not on_host(v):
                continue
            readers = [u.operation for u in v.uses
                       if not isinstance(u.operation, _ANYWHERE) and not _on_host_stream(u.operation)]
            for group in _groups(readers, pos):
                _to_device(block, v, group, pos)


def _groups(readers: list[Operation], pos: dict[Operation, int]) -> list[list[Operation]]:
    """The readers by part of the step (forward, backward, optimizer, ...),
    parts whose spans overlap (1F1B interleaves F and B) merged into one."""
    by: dict[str, list[Operation]] = defaultdict(list)
    for r in dict.fromkeys(readers):
        by[_phase(r)].append(r)
    spans = sorted((min(pos[r] for r in g), max(pos[r] for r in g), g) for g in by.values())
    out: list[tuple[int, list[Operation]]] = []
    for lo, hi, g in spans:
        if out and lo <= out[-1][0]:
            out[-1] = (max(hi, out[-1][0]), out[-1][1] + g)
        else:
            out.append((hi, list(g)))
    return [sorted(g, key=pos.__getitem__) for _, g in out]


def _to_device(block: Block, v: SSAValue, readers: list[Operation],
               pos: dict[Operation, int]) -> None:
    """One device copy of host value `v` for `readers` (in program order):
    made before the first, freed after the last."""
    cp = _copy(v, "device")
    block.insert_op_before(cp, readers[0])
    for r in readers:
        for i, a in enumerate(r.operands):
            if a is v:
                r.operands[i] = cp.result
    last = max((_done(r) for r in readers), key=lambda o: pos.get(o, -1))
    block.insert_op_after(sched.FreeOp(cp.result), last)


def _copy(v: SSAValue, to: str) -> sched.CopyOp:
    """A copy of `v` to "host" (stream d2h) or "device" (h2d), named after it."""
    cp = sched.CopyOp(v, to, D2H if to == "host" else H2D)
    cp.result.name_hint = f"{v.name_hint or 'v'}_{to}"
    return cp


def _done(op: Operation) -> Operation:
    """Where `op` is done with its operands: a communication at its wait."""
    if isinstance(op, sched.SendOp | sched.RecvOp | sched.CollectiveOp):
        for u in op.handle.uses:
            if isinstance(u.operation, sched.WaitOp):
                return u.operation
    return op


def _prefetch(block: Block, ahead: int) -> None:
    """Each copy to the device moved before the `ahead`-th device task
    preceding its first reader, but not before the instruction making its
    data nor before a task an earlier copy of the same value serves: it runs on its stream while those tasks compute instead of
    holding up the reader (each task ahead keeps the copy on the device
    that much longer)."""
    for cp in [o for o in block.ops if isinstance(o, sched.CopyOp) and not o.to_host]:
        src = cp.value.owner
        o, where, n = cp.prev_op, None, 0
        while o is not None and o is not src and n < ahead:
            if isinstance(o, sched.CallOp) and not _on_host_stream(o):
                if any(isinstance(a.owner, sched.CopyOp) and a.owner.value is cp.value
                       for a in o.args):
                    break  # the task an earlier copy of the same value serves
                where, n = o, n + 1
            o = o.prev_op
        if where is None and o is src and cp.prev_op is not src:
            cp.detach()  # no device task since its data exists: right after it
            block.insert_op_after(cp, src)
        elif where is not None:
            cp.detach()
            block.insert_op_before(cp, where)


def _refree(block: Block, values: list[SSAValue]) -> None:
    """Each of `values` freed right after its last reader is done with it
    (its old frees dropped): a device buffer goes as soon as its host copy
    exists (and a send of it completed)."""
    pos = {o: i for i, o in enumerate(block.ops)}
    for v in values:
        for u in list(v.uses):
            if isinstance(u.operation, sched.FreeOp):
                block.erase_op(u.operation)
        last = None
        for u in v.uses:
            o = _done(u.operation)
            if last is None or pos[o] > pos[last]:
                last = o
        where = last if last is not None else v.owner
        block.insert_op_after(sched.FreeOp(v), where)


def _check_host_budget(program: sched.ProgramOp, budget: int) -> None:
    """A rank's host memory is at least its resident host state (between
    steps) and at least the peak of its live host values (during one): a
    plan over `budget` by either cannot run, and says so before any rank
    starts."""
    resident = resident_bytes(program, "host")
    peak = program_peak_bytes(program, "host")
    need = max(resident, peak)
    if need > budget:
        raise PiperError(
            f"offload: {program.sym_name.data} needs at least {need} B of host memory "
            f"(state kept there {resident} B, the step's live host values at their peak "
            f"{peak} B), over host_memory={budget} B; offload less (params=False, fewer "
            "activation stages) or give it more host memory")

