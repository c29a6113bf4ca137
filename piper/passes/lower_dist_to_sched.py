"""lower-dist-to-sched: one program per device from the global DAG.

The plan's op order is a global order (see `schedule`); each device's
program is that order restricted to the device. A `dist.send` becomes a
`sched.send` on the source and a `sched.recv` on the destination, both
started where the send stands in the global order; a collective starts on
every member at its place. Waits are placed lazily: a receive or collective
is waited on just before the first instruction that uses its result, a send
just before the source's next compute call (or at the end). A local unpack
or sum of a value still in flight is itself put off until its result is
first needed, so the wait goes down with it (a packed gather's unpack runs
just before the task that reads the parameters, not where the gather
starts). A reduce_scatter is the exception: the one before it on its
stream is waited on first, so a step's gradients (ZeRO-2/3 scatter each
stage's as it is computed) are not all held until the optimizer. A sum
of more than two values becomes a running sum. Every buffer is freed
after its last use. Streams come from the dist ops (`stream "name"`,
set by place / replicate / zero options), else "compute" for tasks and
`comm_stream` for communication. `dist.pack` / `dist.unpack` become calls
of small generated graph functions (piper/passes/pack.py). Because every program is a projection of one
topological order and each wait follows the matching starts in it, the
programs cannot deadlock (verify-plan checks this independently).

`replicas=first` lowers only the programs of data-parallel replica 0 (the
devices whose `dp` mesh coordinate is 0), for the simulator: every replica
runs the same program up to device numbers and data, so a dp group's
collective, whose other members would arrive at the same moment, starts
when its lowered member does, and step time and peaks are those of the
whole plan. Tags are numbered as in the whole plan. The module records the
plan's device count (`piper.devices`); such a plan does not run, and
verify-plan refuses it. The strategy search compiles its candidates so: a
pp x dp plan lowers pp programs, not pp x dp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntegerAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from piper.analysis.plan_check import DEVICES_ATTR
from piper.diagnostics import PiperError
from piper.dialects import dist, sched
from piper.passes.pack import PackFunctions
from piper.passes.func_utils import require_dependency_order, the_plan

_COLLECTIVE_KIND = {
    dist.AllReduceOp: "all_reduce",
    dist.ReduceScatterOp: "reduce_scatter",
    dist.AllGatherOp: "all_gather",
    dist.AllToAllOp: "all_to_all",
    dist.BroadcastOp: "broadcast",
}


class _RunningSums:
    """Sums of more than two task results (a gradient summed over the
    microbatches) lowered as running sums: every `group` inputs, as soon as
    they are computed, one `sched.sum` adds them to the sum so far, so a
    device holds the running sum and at most `group` values, not every
    microbatch's value until the last one. `group` is 1 up to
    MAX_PARTIAL_SUMS inputs and grows beyond, so that no sum becomes more
    than MAX_PARTIAL_SUMS instructions (plans have 10^5 such sums). The
    additions and their order are the ones the sum makes ((a + b) + c ...,
    the scale applied to the total), so results are bitwise the same."""

    MAX_PARTIAL_SUMS = 16

    def __init__(self, block):
        self.feeds: dict[SSAValue, tuple[dist.SumOp, int]] = {}
        self.state: dict[dist.SumOp, _SumState] = {}
        for o in block.ops:
            if isinstance(o, dist.SumOp):
                ins = o.inputs
                if len(ins) > 2 and all(isinstance(v.owner, dist.TaskOp) for v in ins):
                    for k, v in enumerate(ins):
                        self.feeds[v] = (o, k)
                    self.state[o] = _SumState(len(ins), -(-len(ins) // self.MAX_PARTIAL_SUMS),
                                              o.scale.value.data)

    def produced(self, old: SSAValue, new: SSAValue, p: _Program) -> None:
        """`old` (lowered to `new` in `p`) is ready: add what can be added."""
        feed = self.feeds.get(old)
        if feed is None:
            return
        s, k = feed
        st = self.state[s]
        st.held[k] = new
        while st.next in st.held:
            st.pending.append(st.held.pop(st.next))
            st.next += 1
            last = st.next == st.n
            if len(st.pending) < st.group and not last:
                continue
            operands = ([st.total] if st.total is not None else []) + st.pending
            scale = st.scale if last else 1.0
            st.pending = []
            if len(operands) == 1 and scale == 1.0:
                st.total = operands[0]
                continue
            part = p.add(sched.SumOp(operands, scale))
            part.result.name_hint = s.result.name_hint
            st.total = part.result

    def result(self, s: dist.SumOp) -> SSAValue | None:
        """The lowered total of `s`, when it is a running sum."""
        st = self.state.get(s)
        if st is None:
            return None
        assert st.next == st.n, "a sum before its inputs"
        return st.total


class _SumState:
    """Where one running sum stands."""

    __slots__ = ("n", "group", "scale", "total", "next", "held", "pending")

    def __init__(self, n: int, group: int, scale: float):
        self.n, self.group, self.scale = n, group, scale  # inputs, per partial sum, of the total
        self.total: SSAValue | None = None  # the sum so far
        self.next = 0                       # the next input in order
        self.held: dict[int, SSAValue] = {}  # computed inputs not yet in order
        self.pending: list[SSAValue] = []    # in order, not yet summed


class _Program:
    def __init__(self, device: int):
        self.op = sched.ProgramOp(f"rank{device}", device)
        self.block = self.op.body.block
        self.env: dict[SSAValue, SSAValue] = {}  # plan value -> program value
        self.pending: dict[SSAValue, tuple[SSAValue, object]] = {}  # plan value -> (handle, type)
        self.sends: list[SSAValue] = []  # send handles not yet waited
        # local ops (unpack, sum) of values still in flight, emitted when
        # first needed: their inputs' waits move down to there
        self.deferred: dict[SSAValue, Operation] = {}
        self.emit = None  # emits a deferred local op (set by the pass)
        self.scattering: dict[str, SSAValue] = {}  # stream -> its last reduce_scatter's result

    def add(self, op: Operation) -> Operation:
        self.block.add_op(op)
        return op

    def waits_on(self, o: Operation) -> bool:
        return any(v in self.pending or v in self.deferred for v in o.operands)

    def defer(self, o: Operation) -> None:
        for r in o.results:
            self.deferred[r] = o

    def value(self, v: SSAValue) -> SSAValue:
        if v in self.deferred:
            o = self.deferred[v]
            for r in o.results:
                del self.deferred[r]
            self.emit(o)
        if v in self.pending:
            handle, t = self.pending.pop(v)
            w = self.add(sched.WaitOp(handle, t))
            w.result.name_hint = v.name_hint
            self.env[v] = w.result
        return self.env[v]

    def drain(self, stream: str, result: SSAValue) -> None:
        """Before a reduce_scatter on `stream`, wait for the one before it
        there: its input (a stage's whole gradient, packed) is freed, so
        at most two such inputs live at once, not one per stage until the
        optimizer reads the shards. The stream runs them in order anyway."""
        last = self.scattering.get(stream)
        if last is not None and last in self.pending:
            self.value(last)
        self.scattering[stream] = result

    def flush_sends(self):
        for h in self.sends:
            self.add(sched.WaitOp(h))
        self.sends = []


@dataclass(frozen=True)
class LowerDistToSched(ModulePass):
    name = "lower-dist-to-sched"

    comm_stream: str = "comm"
    replicas: str = "all"  # "first": only data-parallel replica 0's programs

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.replicas not in ("all", "first"):
            raise PiperError(f"{self.name}: replicas must be 'all' or 'first', got "
                             f"'{self.replicas}'")
        plan = the_plan(op, self.name)
        try:
            self._lower(op, plan, _lowered_devices(plan, self.replicas))
        except KeyError:
            # lowering projects the plan's op order onto each device, so a
            # value read before its definition is missing there: say where
            require_dependency_order(plan.body.block, self.name)
            raise

    def _lower(self, op: ModuleOp, plan, devices: list[int]) -> None:
        sums = _RunningSums(plan.body.block)
        packs = PackFunctions(op)
        progs = {d: _Program(d) for d in devices}
        for p in progs.values():
            p.emit = lambda o, p=p: self._local(o, p, packs, sums)
        tag = 0
        for o in plan.body.block.ops:
            if isinstance(o, dist.SendOp):
                src, dst = progs.get(o.src.data), progs.get(o.dst.data)
                if src is not None:
                    h = src.add(sched.SendOp(src.value(o.value), o.dst.data, tag,
                                             self.comm_stream))
                    src.sends.append(h.handle)
                if dst is not None:
                    r = dst.add(sched.RecvOp(o.src.data, tag, o.result.type, self.comm_stream))
                    dst.pending[o.result] = (r.handle, o.result.type)
                tag += 1
            elif isinstance(o, dist.CollectiveOp):
                kind = _COLLECTIVE_KIND[type(o)]
                reduce = o.reduce.data if hasattr(o, "reduce") and o.reduce is not None else None
                root = o.root.data if isinstance(o, dist.BroadcastOp) else None
                stream = o.stream.data if o.stream is not None else self.comm_stream
                for i, d in enumerate(o.members):
                    p = progs.get(d)
                    if p is None:
                        continue
                    x = p.value(o.inputs[i])
                    if kind == "reduce_scatter":
                        p.drain(stream, o.outputs[i])
                    c = p.add(sched.CollectiveOp(kind, x, o.group, tag,
                                                 o.outputs[i].type, stream, reduce, root))
                    p.pending[o.outputs[i]] = (c.handle, o.outputs[i].type)
                tag += 1
            else:
                p = progs.get(dist.device_of_op(o))
                if p is None:
                    continue
                if isinstance(o, dist.UnpackOp | dist.SumOp) and p.waits_on(o):
                    p.defer(o)
                else:
                    self._local(o, p, packs, sums)
        for p in progs.values():
            while p.deferred:  # results nobody used still get computed
                p.value(next(iter(p.deferred)))
            p.flush_sends()
            for v in list(p.pending):  # results nobody used still complete
                p.value(v)
            _insert_frees(p.block)
        for p in progs.values():
            op.body.block.add_op(p.op)
        if len(progs) < plan.num_devices:
            op.attributes[DEVICES_ATTR] = IntegerAttr(plan.num_devices, 64)
        op.body.block.erase_op(plan)

    def _local(self, o: Operation, p: _Program, packs: PackFunctions,
               sums: _RunningSums) -> None:
        if isinstance(o, dist.LoadOp):
            new = sched.LoadOp(o.tensor_name.data, o.result.type, _shard(o))
        elif isinstance(o, dist.StoreOp):
            new = sched.StoreOp(o.tensor_name.data, p.value(o.value), _shard(o), o.is_loss)
        elif isinstance(o, dist.InputOp):
            new = sched.InputOp(o.input_name.data, o.replica.data, o.mb.data, o.result.type)
        elif isinstance(o, dist.FillOp):
            new = sched.FillOp(o.value.value.data, o.result.type)
        elif isinstance(o, dist.SumOp):
            total = sums.result(o)
            if total is not None:  # summed as its inputs came
                p.env[o.result] = total
                return
            new = sched.SumOp([p.value(v) for v in o.inputs], o.scale.value.data)
        elif isinstance(o, dist.ShardOp):
            k, n = (a.data for a in o.part.data)
            new = sched.ShardOp(p.value(o.value), k, n)
        elif isinstance(o, dist.TaskOp):
            args = [p.value(v) for v in o.args]
            p.flush_sends()
            stream = o.stream.data if o.stream is not None else "compute"
            new = sched.CallOp(o.callee.root_reference.data, o.label, stream, args,
                               [r.type for r in o.res])
        elif isinstance(o, dist.PackOp):
            name = packs.pack([v.type for v in o.inputs], o.result.type, o.num_shards)
            new = sched.CallOp(name, "pack", "compute", [p.value(v) for v in o.inputs],
                               [o.result.type])
        elif isinstance(o, dist.UnpackOp):
            types = [r.type for r in o.outputs]
            name = packs.unpack(o.value.type, types, o.num_shards)
            new = sched.CallOp(name, "unpack", "compute", [p.value(o.value)], types)
        else:
            raise NotImplementedError(o.name)
        p.add(new)
        for old_r, new_r in zip(o.results, new.results, strict=True):
            p.env[old_r] = new_r
            new_r.name_hint = old_r.name_hint
        if isinstance(o, dist.TaskOp):  # running sums take task results only
            for old_r, new_r in zip(o.results, new.results, strict=True):
                sums.produced(old_r, new_r, p)


def _lowered_devices(plan: dist.PlanOp, replicas: str) -> list[int]:
    """Every device, or (replicas=first) those of dp replica 0: the mesh is
    row-major, so a device's dp coordinate is (d // stride) % dp."""
    mesh = plan.mesh
    if replicas == "all" or mesh.get("dp", 1) == 1:
        return list(range(plan.num_devices))
    axes = list(mesh)
    stride = math.prod(mesh[a] for a in axes[axes.index("dp") + 1:])
    return [d for d in range(plan.num_devices) if (d // stride) % mesh["dp"] == 0]


def _shard(o) -> tuple[int, ...] | None:
    """[k, n] or [k, n, dim], as the dist op has it."""
    if o.shard is None:
        return None
    return tuple(a.data for a in o.shard.data)


def _insert_frees(block) -> None:
    """Free every tensor after its last use on this device."""
    from xdsl.dialects.builtin import TensorType

    last: dict[SSAValue, Operation] = {}
    defined: list[SSAValue] = []
    for op in block.ops:
        for v in op.operands:
            last[v] = op
        if isinstance(op, sched.WaitOp):
            for v in op.handle.owner.operands:
                last[v] = op  # a buffer lives until its communication completes
        for r in op.results:
            if isinstance(r.type, TensorType):
                defined.append(r)
    for v in defined:
        after = last.get(v)
        if after is None:
            after = v.owner
        block.insert_op_after(sched.FreeOp(v), after)

