"""Simulate a compiled plan: sched programs as simulator instructions.

Each device's `sched.program` runs the way the runtime runs it: one host
thread executes the instructions in order. Compute (`sched.call`, and the
small local instructions: loads, inputs, fills, shards, sums, stores,
frees, waits) runs on the device's `compute` stream, one after another.
A communication start (`sched.send`, `sched.recv`, `sched.collective`) is
issued by the host after the instruction before it and runs on its own
stream (`comm`) while the host goes on; its `sched.wait` blocks the host
until it completes. Point-to-point messages do not queue behind each other
(`ordered=False`: a posted receive does not hold up a later send);
collectives run in program order on their stream. The members of a
collective complete together. A send and its receive do too by default
(`p2p="rendezvous"`): the transfer starts when both are posted, which is
how gloo behaves (an `isend` completes only once the peer posted its
`irecv`, however small the message) and NCCL too. `p2p="eager"` lets a
send complete on its own, one transfer time after it is posted, and the
receive when both the data has arrived and it is posted (buffered sends).

Durations come from a cost source (piper.analysis.task_costs): unit,
analytic (roofline on a device spec) or profiled on this machine; compute
durations are stretched by the source's `compute_share` of the plan's
device count (ranks sharing a host's cores; 1.0 unless the spec says
`host_cores`). Where the source's `comm_overlap` is below 1 (a CPU host,
measured), the part of a collective compute cannot hide also holds the
host: a `comm_cpu` instruction on the compute stream right after the
collective starts.

Memory follows the runtime's own accounting (piper.analysis.memory): a
value is live from the instruction that produces it (a receive or
collective result: from its wait) to its `sched.free`. Every value has a
category: `params`, `grads`, `optimizer` (optimizer state), `activations`
(saved for backward, sent between stages), `inputs` (the batch) or
`other` (loss, seeds), read off the stage functions' `graph.kind`
attributes and the training-state names a program loads.

`steps > 1` runs the programs that many times back to back, each device
starting its next step when it finishes its previous one, as the runtime
does; `rank_step_times` reads per-device step durations off the result.
"""

from __future__ import annotations

from collections import defaultdict

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue

from piper.analysis.cost_model import link_name
from piper.analysis.plan_check import describe, plan_devices, programs
from piper.analysis.memory import on_host
from piper.analysis.simulator import HOST_PREFIX, SimInstr, SimResult, simulate
from piper.analysis.task_costs import TaskCosts, task_kind, task_stage_mb
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.dialects.dist import type_bytes
from piper.ir import gc_paused

MEM_KINDS = ("params", "grads", "optimizer", "activations", "inputs", "other")

_GRAPH_KIND = {
    "param": "params", "grad": "grads", "state": "optimizer", "saved": "activations",
    "act": "activations", "grad_act": "activations", "input": "inputs",
}


def _attrs(fn: func.FuncOp, results: bool) -> list[dict[str, str]]:
    attrs = fn.res_attrs if results else fn.arg_attrs
    n = len(fn.function_type.outputs.data if results else fn.function_type.inputs.data)
    if attrs is None:
        return [{} for _ in range(n)]
    return [{k.removeprefix("graph."): v.data for k, v in a.data.items()
             if isinstance(v, StringAttr)} for a in attrs.data]


class ValueKinds:
    """The memory category of every tensor value of a plan's programs."""

    def __init__(self, module: ModuleOp, progs: dict[int, sched.ProgramOp]):
        self.funcs = {op.sym_name.data: op for op in module.body.block.ops
                      if isinstance(op, func.FuncOp)}
        self.state: dict[str, str] = {}
        for fn in self.funcs.values():
            for a in _attrs(fn, results=False):
                if a.get("kind") in ("param", "state") and "name" in a:
                    self.state.setdefault(a["name"], _GRAPH_KIND[a["kind"]])
        self.sends: dict[tuple[int, int, int], sched.SendOp] = {}
        for d, p in progs.items():
            for op in p.body.block.ops:
                if isinstance(op, sched.SendOp):
                    self.sends[(d, op.peer.data, op.tag.data)] = op
        self.memo: dict[SSAValue, str] = {}
        # callee -> its results' kinds: a call's results ask for them one by
        # one, and an optimizer task has hundreds
        self.result_kinds: dict[str, list[str]] = {}

    def __call__(self, v: SSAValue, device: int) -> str:
        kind = self.memo.get(v)
        if kind is None:
            kind = self._kind(v, device)
            kind = self.memo[v] = HOST_PREFIX + kind if on_host(v) else kind
        return kind

    def of_results(self, op: Operation, device: int) -> list[str]:
        """`self(r, device)` for each result r of `op`; a call's at once (an
        optimizer task has hundreds): its callee says their kinds and its
        stream whether they are on the host."""
        if not isinstance(op, sched.CallOp) or not op.results:
            return [self(r, device) for r in op.results]
        kinds = self._callee_kinds(op.callee.root_reference.data)
        prefix = HOST_PREFIX if on_host(op.results[0]) else ""
        out = []
        for r in op.results:
            kind = self.memo[r] = prefix + (kinds[r.index] if r.index < len(kinds) else "other")
            out.append(kind)
        return out

    def _callee_kinds(self, name: str) -> list[str]:
        if name not in self.result_kinds:
            fn = self.funcs.get(name)
            self.result_kinds[name] = [] if fn is None else [
                _GRAPH_KIND.get(a.get("kind", ""), "other") for a in _attrs(fn, results=True)]
        return self.result_kinds[name]

    def _kind(self, v: SSAValue, device: int) -> str:
        op = v.owner
        if isinstance(op, sched.LoadOp):
            name = op.tensor_name.data
            return self.state.get(name, "optimizer" if ":" in name else "params")
        if isinstance(op, sched.InputOp):
            return "inputs"
        if isinstance(op, sched.ShardOp | sched.CopyOp):
            return self(op.value, device).removeprefix(HOST_PREFIX)
        if isinstance(op, sched.SumOp):
            return self(op.inputs[0], device).removeprefix(HOST_PREFIX)
        if isinstance(op, sched.CallOp):
            kinds = self._callee_kinds(op.callee.root_reference.data)
            i = v.index  # v is one of op's results
            return kinds[i] if i < len(kinds) else "other"
        if isinstance(op, sched.WaitOp):
            start = op.handle.owner
            if isinstance(start, sched.CollectiveOp):
                return self(start.value, device).removeprefix(HOST_PREFIX)
            if isinstance(start, sched.RecvOp):
                send = self.sends.get((start.peer.data, device, start.tag.data))
                if send is not None:
                    return self(send.value, start.peer.data).removeprefix(HOST_PREFIX)
            return "other"
        return "other"


def plan_instrs(module: ModuleOp, costs: TaskCosts, steps: int = 1,
                p2p: str = "rendezvous", resident: bool = False) -> list[SimInstr]:
    """The simulator instructions of every device's program, `steps` times."""
    if p2p not in ("rendezvous", "eager"):
        raise PiperError(f"simulate: p2p must be 'rendezvous' or 'eager', got '{p2p}'")
    progs = programs(module)
    if not progs:
        raise PiperError("simulate: no sched.program in the module; "
                         "run lower-dist-to-sched first")
    if steps < 1:
        raise PiperError(f"simulate: steps must be at least 1, got {steps}")
    kinds = ValueKinds(module, progs)
    share = costs.compute_share(plan_devices(module, len(progs)))
    out: list[SimInstr] = []
    last_host: dict[int, str | None] = {d: None for d in progs}
    for step in range(steps):
        for d, prog in sorted(progs.items()):
            last_host[d] = _program(out, module, d, prog, costs, kinds, step, steps,
                                    last_host[d], resident, share)
    if p2p == "eager":
        _eager_p2p(out)
    return out


def _eager_p2p(instrs: list[SimInstr]) -> None:
    """Buffered sends: a send no longer waits for its receive; the receive
    takes no time of its own and ends when the send's data has arrived."""
    sends = {i.group: i for i in instrs if i.kind == "send" and i.group}
    for ins in instrs:
        if ins.kind == "recv" and ins.group in sends:
            ins.deps = ins.deps + [sends[ins.group].id]
            ins.duration = 0.0
            ins.group = None
        elif ins.kind == "send":
            ins.group = None


def _program(out: list[SimInstr], module, d: int, prog: sched.ProgramOp, costs: TaskCosts,
             kinds: ValueKinds, step: int, steps: int, last_host: str | None,
             resident: bool = False, share: float = 1.0) -> str | None:
    pre = f"s{step}:" if steps > 1 else ""
    made: dict[SSAValue, str] = {}   # value -> id of the instruction that produced it
    handle_of: dict[SSAValue, str] = {}
    # the frees since the last other instruction: one `free` instruction
    # takes these containers over when they are flushed
    frees: dict[str, int] = {}
    free_ids: list[str] = []
    copies: dict[SSAValue, str] = {}  # value -> the copy reading it
    free_deps: list[str] = []

    def nbytes(v: SSAValue) -> int:
        if resident and isinstance(v.owner, sched.LoadOp):
            return 0  # counted where the state lives (simulate_plan's base)
        return type_bytes(v.type) if isinstance(v.type, TensorType) else 0

    def flush_frees(i: int) -> None:
        nonlocal last_host, frees, free_ids, free_deps
        if not frees:
            return
        iid = f"{pre}d{d}:{i}:free"
        out.append(SimInstr(iid, d, "free", 0.0, "compute", "free",
                            ([last_host] if last_host else []) + free_deps,
                            free_by_kind=frees, ordered=not free_deps,
                            meta={"hidden": True, "step": step, "values": free_ids}))
        if not free_deps:  # a buffer freed once its copy is done: the host goes on
            last_host = iid
        frees, free_ids, free_deps = {}, [], []

    for i, op in enumerate(prog.body.block.ops):
        if isinstance(op, sched.FreeOp):
            v = op.value
            kind = kinds(v, d)
            frees[kind] = frees.get(kind, 0) + nbytes(v)
            free_ids.append(v.name_hint or "")
            if v in copies:  # freed once its copy is done
                free_deps.append(copies[v])
            continue
        flush_frees(i)
        iid = f"{pre}d{d}:{i}"
        data = sorted({made[v] for v in op.operands if v in made})
        what = describe(op)
        meta = {"step": step, "op": what,
                "where": f"instruction {i} ({what})" + (f" of step {step}" if pre else "")}
        try:
            if isinstance(op, sched.SendOp | sched.RecvOp | sched.CollectiveOp):
                out.append(_comm(iid, d, op, costs, pre, data, last_host, meta))
                handle_of[op.handle] = iid
                hidden = costs.comm_overlap()
                if isinstance(op, sched.CollectiveOp) and hidden < 1.0:
                    # the part compute cannot hide holds the rank's core
                    cpu = f"{iid}:cpu"
                    out.append(SimInstr(cpu, d, "comm_cpu", (1.0 - hidden) * out[-1].duration,
                                        "compute", "comm", [last_host] if last_host else [],
                                        meta={**meta, "label": "comm"}))
                    last_host = cpu
                continue
            if isinstance(op, sched.CopyOp):
                # on its own stream: the host goes on; readers wait for the data
                nb = type_bytes(op.value.type)  # a copy of resident state moves it all
                deps = data + ([last_host] if last_host and last_host not in data else [])
                out.append(SimInstr(iid, d, "copy", costs.copy(nb), op.stream.data,
                                    op.stream.data, deps, bytes=nb,
                                    alloc_by_kind={kinds(op.result, d): nb},
                                    meta={**meta, "bytes": nb, "to": op.to.data}))
                made[op.result] = iid
                copies[op.value] = iid
                continue
            alloc: dict[str, int] = {}
            for r, kind in zip(op.results, kinds.of_results(op, d)):
                if isinstance(r.type, TensorType):
                    alloc[kind] = alloc.get(kind, 0) + nbytes(r)
                    made[r] = iid
            deps = data
            if last_host and last_host not in data:
                deps.append(last_host)
            if isinstance(op, sched.CallOp):
                label = op.task.data
                kind = task_kind(label, op.callee.root_reference.data)
                stage, mb = task_stage_mb(label)
                meta.update({"task": label, "callee": op.callee.root_reference.data})
                if stage is not None:
                    meta.update({"stage": stage, "mb": mb})
                ins = SimInstr(iid, d, kind, share * costs.call(module, op), op.stream.data,
                               label, deps, alloc_by_kind=alloc, meta=meta)
            elif isinstance(op, sched.WaitOp):
                deps.append(handle_of[op.handle])
                meta["hidden"] = True
                ins = SimInstr(iid, d, "wait", 0.0, "compute", "wait", deps,
                               alloc_by_kind=alloc, meta=meta)
            else:
                kind = op.name.removeprefix("sched.")
                dur = share * costs.local(module, op)
                if dur > 0:
                    meta["label"] = kind
                else:
                    meta["hidden"] = True
                ins = SimInstr(iid, d, kind, dur, "compute", kind, deps,
                               alloc_by_kind=alloc, meta=meta)
        except PiperError as e:
            raise PiperError(f"simulate: device {d} instruction {i} ({what}): "
                             f"{e.message}") from None
        out.append(ins)
        last_host = iid
    flush_frees(len(prog.body.block.ops))
    return last_host


def _comm(iid: str, d: int, op: Operation, costs: TaskCosts, pre: str, data: list[str],
          last_host: str | None, meta: dict) -> SimInstr:
    deps = data + ([last_host] if last_host and last_host not in data else [])
    if isinstance(op, sched.SendOp | sched.RecvOp):
        src, dst = (d, op.peer.data) if isinstance(op, sched.SendOp) else (op.peer.data, d)
        t = op.value.type if isinstance(op, sched.SendOp) else op.result_type
        nb = type_bytes(t)
        kind = "send" if isinstance(op, sched.SendOp) else "recv"
        label = f"{'>' if kind == 'send' else '<'}{op.peer.data}"
        return SimInstr(iid, d, kind, costs.comm("send", nb, (src, dst)), op.stream.data,
                        label, deps, group=f"{pre}p2p:{src}>{dst}:{op.tag.data}",
                        peer=op.peer.data, bytes=nb, ordered=False,
                        meta={**meta, "tag": op.tag.data, "bytes": nb,
                              **_link(costs, [src, dst])})
    kind = op.kind.data
    # the cost model's `bytes` is the full buffer on each rank
    full = type_bytes(op.result_type) if kind == "all_gather" else type_bytes(op.value.type)
    members = op.members
    return SimInstr(iid, d, kind, costs.comm(kind, full, members), op.stream.data,
                    kind.replace("_", "-"), deps, group=f"{pre}coll:{op.tag.data}",
                    bytes=full, meta={**meta, "tag": op.tag.data, "bytes": full,
                                      "group": list(members), **_link(costs, members)})


def _link(costs: TaskCosts, members: list[int]) -> dict:
    """The link a message or collective is priced on, where the cost source has a
    device spec (`unit` costs have none)."""
    spec = getattr(costs, "spec", None)
    return {"link": link_name(members, spec)} if spec is not None else {}


def simulate_plan(module: ModuleOp, costs: TaskCosts, steps: int = 1,
                  p2p: str = "rendezvous", resident: bool = False) -> SimResult:
    """Simulate `steps` training steps of a compiled plan. `resident`: the
    training state each device loads is in memory for the whole step (as
    it is between steps, in the runtime's state dict: device bytes, or
    host bytes when offloaded) and a load allocates nothing; by default a
    state tensor counts only from its load to its free."""
    # instructions, deps and memory dicts: 10^5 objects, none in a cycle; a
    # full collection would walk the plan's IR too (a third of simulating)
    with gc_paused():
        instrs = plan_instrs(module, costs, steps, p2p, resident)
        base = None
        if resident:
            progs = programs(module)
            kinds = ValueKinds(module, progs)
            base = {}
            for d, prog in progs.items():
                seen: dict[tuple, tuple[str, int]] = {}
                for op in prog.body.block.ops:
                    if isinstance(op, sched.LoadOp):
                        seen[(op.tensor_name.data, str(op.shard))] = (
                            kinds(op.result, d), type_bytes(op.result.type))
                per: dict[str, int] = defaultdict(int)
                for kind, b in seen.values():
                    per[kind] += b
                base[d] = dict(per)
        return simulate(instrs, base_mem=base, unit=costs.unit)


def rank_step_times(result: SimResult) -> dict[int, list[float]]:
    """Per device, how long each step took it: from the end of its previous
    step (0 for the first) to the end of its last instruction of the step."""
    ends: dict[int, dict[int, float]] = defaultdict(dict)
    for ins in result.instrs:
        s = ins.meta.get("step", 0)
        e = result.end[ins.id]
        if e > ends[ins.device].get(s, 0.0):
            ends[ins.device][s] = e
    out = {}
    for d, per in ends.items():
        prev, times = 0.0, []
        for s in sorted(per):
            times.append(per[s] - prev)
            prev = per[s]
        out[d] = times
    return out
