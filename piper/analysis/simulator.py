"""Discrete-event simulator of per-device programs.

Input: a flat list of `SimInstr`. Each instruction belongs to a device and a
named stream on it. Streams of one device run concurrently; the
instructions of one stream run one after another, in the order they appear
in the list. An instruction starts when its stream is free and every
instruction in `deps` has finished.

Instructions that share a `group` (the two ends of a send/recv pair, or the
members of a collective) rendezvous: each member occupies its stream from
the moment it can start, the transfer begins when the last member has
started, and all members finish together, `duration` later (the longest
duration any member gives, or the cost model's).

An instruction with `ordered=False` does not queue on its stream: it
starts as soon as its deps allow, alongside the stream's other work (an
asynchronous point-to-point message, which gloo and NCCL progress
independently of other messages); it is still drawn on its stream.

Memory: an instruction allocates `mem_alloc_bytes` (of category
`mem_kind`) and `alloc_by_kind` ({category: bytes}) on its device when it
starts, and releases `mem_free_bytes`, `free_by_kind` and the allocations of
the instructions listed in `frees` when it ends. Categories (parameters,
gradients, optimizer state, activations, ...) are free-form names; the
result keeps a series per category and what the peak is made of. A
category named `host:...` is host memory (offloaded values): it has its
own series but counts toward `host_peak`, not the device's peak.

Output (`SimResult`): start and end of every instruction, the step time
(the last end), per device the busy time of its compute streams (streams
named `compute...`) and the bubble, idle compute time over step time, the
peak memory and the memory-over-time series, in total and per category.

`simulate_schedule` turns a pipeline `Schedule` into instructions (one per
action, dependencies across stages, activation memory allocated by F and
released by B or I/W, optional transfers on a `comm` stream) so schedules
can be compared. Exports: `to_chrome_trace`, `plot_timeline`, `plot_memory`,
`summary_table` (in piper.analysis.timeline, re-exported here).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from piper.analysis.cost_model import CostModel
from piper.diagnostics import PiperError


@dataclass
class SimInstr:
    """One instruction of one device's program.

    id              unique name, used by `deps`, `frees`, the results
    device          device index
    kind            F, B, I, W, OPT, or a communication kind (send, recv,
                    all_reduce, reduce_scatter, all_gather, all_to_all,
                    broadcast); picks the colour in plots
    duration        time it takes; None: ask the cost model (from `flops`,
                    `bytes`, the group's devices)
    stream          stream on the device ("compute", "comm", ...)
    label           short text for plots and traces (default: id)
    deps            ids that must finish before this starts
    mem_alloc_bytes allocated when it starts
    mem_free_bytes  released when it ends
    frees           ids whose mem_alloc_bytes this releases when it ends
    group           rendezvous key: members start the transfer together and
                    end together (a send and its recv, a collective)
    peer            the other device of a send/recv (for the cost model)
    flops, bytes    work, for the cost model
    meta            anything else (stage, mb, ...), carried to the trace;
                    `hidden: True` keeps it out of traces and plots
    mem_kind        category of mem_alloc_bytes / mem_free_bytes
    alloc_by_kind   {category: bytes} allocated when it starts
    free_by_kind    {category: bytes} released when it ends
    ordered         False: does not wait for (or hold up) the other
                    instructions of its stream
    """

    id: str
    device: int
    kind: str
    duration: float | None = None
    stream: str = "compute"
    label: str = ""
    deps: list[str] = field(default_factory=list)
    mem_alloc_bytes: int = 0
    mem_free_bytes: int = 0
    frees: list[str] = field(default_factory=list)
    group: str | None = None
    peer: int | None = None
    flops: float | None = None
    bytes: float | None = None
    meta: dict = field(default_factory=dict)
    mem_kind: str = "other"
    alloc_by_kind: dict[str, int] = field(default_factory=dict)
    free_by_kind: dict[str, int] = field(default_factory=dict)
    ordered: bool = True

    def allocations(self) -> dict[str, int]:
        """What it allocates when it starts, by category."""
        out = dict(self.alloc_by_kind)
        if self.mem_alloc_bytes:
            out[self.mem_kind] = out.get(self.mem_kind, 0) + self.mem_alloc_bytes
        return out


@dataclass
class SimResult:
    instrs: list[SimInstr]
    start: dict[str, float]
    end: dict[str, float]
    duration: dict[str, float]
    step_time: float
    devices: list[int]
    streams: dict[int, list[str]]
    busy: dict[int, float]
    peak_mem: dict[int, int]
    mem_series: dict[int, list[tuple[float, int]]]
    # per device: {category: [(time, bytes), ...]} and the peak's make-up
    mem_kind_series: dict[int, dict[str, list[tuple[float, int]]]] = field(default_factory=dict)
    peak_breakdown: dict[int, dict[str, int]] = field(default_factory=dict)
    unit: str = ""
    kind_peaks: dict[int, dict[str, int]] = field(default_factory=dict)
    # per device: the peak of its host memory (categories named "host:...",
    # offloaded values), counted apart from peak_mem, the device's memory
    host_peak: dict[int, int] = field(default_factory=dict)

    def peak_of(self, device: int, kind: str) -> int:
        """The most bytes of one category device `device` held at any time
        (which need not be when its total peaked)."""
        return self.kind_peaks.get(device, {}).get(kind, 0)

    def bubble_time(self, device: int) -> float:
        return self.step_time - self.busy[device]

    @property
    def bubble(self) -> dict[int, float]:
        """Idle compute time / step time, per device."""
        t = self.step_time or 1.0
        return {d: (self.step_time - self.busy[d]) / t for d in self.devices}

    @property
    def mean_bubble(self) -> float:
        b = self.bubble
        return sum(b.values()) / len(b) if b else 0.0

    def transfer_start(self, iid: str) -> float:
        """When the work of `iid` began (after a rendezvous wait, if any)."""
        return self.end[iid] - self.duration[iid]


# Memory categories of host memory (offloaded values) start with this.
HOST_PREFIX = "host:"


def is_compute_stream(name: str) -> bool:
    return name.startswith("compute")


def simulate(instrs: list[SimInstr], cost_model: CostModel | None = None,
             base_mem: dict[int, int | dict[str, int]] | None = None,
             unit: str = "") -> SimResult:
    """Run the programs; raise PiperError if they cannot all finish.

    `base_mem[d]`: bytes held on device d from the start (a number, category
    "base", or {category: bytes}); `unit` names the time unit for views."""
    by_id: dict[str, SimInstr] = {}
    for ins in instrs:
        if ins.id in by_id:
            raise PiperError(f"simulate: two instructions named '{ins.id}'")
        by_id[ins.id] = ins
    freed_by: dict[str, str] = {}
    for ins in instrs:
        for d in ins.deps:
            if d not in by_id:
                raise PiperError(f"simulate: {ins.id} depends on unknown instruction '{d}'")
        for f in ins.frees:
            if f not in by_id:
                raise PiperError(f"simulate: {ins.id} frees unknown instruction '{f}'")
            if by_id[f].device != ins.device:
                raise PiperError(f"simulate: {ins.id} on device {ins.device} frees {f},"
                                 f" allocated on device {by_id[f].device}")
            if f in freed_by:
                raise PiperError(f"simulate: {f} is freed twice ({freed_by[f]} and {ins.id})")
            freed_by[f] = ins.id

    groups: dict[str, list[str]] = defaultdict(list)
    for ins in instrs:
        if ins.group is not None:
            groups[ins.group].append(ins.id)
    cm = cost_model or CostModel()
    dur: dict[str, float] = {}
    for ins in instrs:
        if ins.group is None:
            dur[ins.id] = ins.duration if ins.duration is not None else cm.duration(ins)
    for g, ids in groups.items():
        devs = sorted({by_id[i].device for i in ids})
        ds = [by_id[i].duration if by_id[i].duration is not None
              else cm.duration(by_id[i], devs) for i in ids]
        for i in ids:
            dur[i] = max(ds)
    for i, d in dur.items():
        if d < 0:
            raise PiperError(f"simulate: {i} has a negative duration ({d})")

    queues: dict[tuple, list[str]] = defaultdict(list)
    queue_of: dict[str, tuple] = {}
    for ins in instrs:
        q = (ins.device, ins.stream) if ins.ordered else (ins.device, ins.stream, ins.id)
        queues[q].append(ins.id)
        queue_of[ins.id] = q
    head = {q: 0 for q in queues}
    free_at = {q: 0.0 for q in queues}
    waiting: dict[str, int] = {}
    dependents: dict[str, list[str]] = defaultdict(list)
    for ins in instrs:
        distinct = set(ins.deps)
        waiting[ins.id] = len(distinct)
        for d in distinct:
            dependents[d].append(ins.id)
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    arrived: dict[str, int] = defaultdict(int)

    todo = list(queues)

    def finish(iid: str, t: float) -> None:
        end[iid] = t
        q = queue_of[iid]
        free_at[q] = t
        head[q] += 1
        todo.append(q)
        for k in dependents.get(iid, ()):
            waiting[k] -= 1
            if waiting[k] == 0:
                todo.append(queue_of[k])

    while todo:
        q = todo.pop()
        if head[q] >= len(queues[q]):
            continue
        iid = queues[q][head[q]]
        if iid in start or waiting[iid]:
            continue
        ins = by_id[iid]
        t = free_at[q]  # then the latest end of its deps (as max(), the first of equals)
        for d in ins.deps:
            e = end[d]
            if e > t:
                t = e
        start[iid] = t
        if ins.group is None:
            finish(iid, t + dur[iid])
            continue
        arrived[ins.group] += 1
        members = groups[ins.group]
        if arrived[ins.group] == len(members):
            t0 = max(start[m] for m in members)
            for mid in members:
                finish(mid, t0 + dur[mid])

    if len(end) < len(instrs):
        raise PiperError("simulate: programs deadlock: "
                         + "; ".join(_stuck(queues, head, by_id, end, start, groups)))

    devices = sorted({ins.device for ins in instrs})
    streams: dict[int, list[str]] = defaultdict(list)
    for ins in instrs:
        if ins.stream not in streams[ins.device]:
            streams[ins.device].append(ins.stream)
    work: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for i in instrs:
        if is_compute_stream(i.stream) and dur[i.id] > 0:
            work[i.device].append((end[i.id] - dur[i.id], end[i.id]))
    busy = {d: _union_length(sorted(work[d])) for d in devices}
    step = max(end.values(), default=0.0)

    base = base_mem or {}
    # (time, list position, 0 at start / 1 at end, delta, category): at equal
    # times memory changes in program order, an instruction's allocation
    # before its own release
    events: dict[int, list[tuple[float, int, int, int, str]]] = defaultdict(list)
    for seq, ins in enumerate(instrs):
        # (allocations() and the merged release only where they add to the
        # instruction's own dicts: most have neither)
        allocated = ins.allocations() if ins.mem_alloc_bytes else ins.alloc_by_kind
        for kind, b in allocated.items():
            if b:
                events[ins.device].append((start[ins.id], seq, 0, b, kind))
        released = ins.free_by_kind
        if ins.mem_free_bytes or ins.frees:
            released = dict(released)
            if ins.mem_free_bytes:
                released[ins.mem_kind] = released.get(ins.mem_kind, 0) + ins.mem_free_bytes
            for f in ins.frees:
                for kind, b in by_id[f].allocations().items():
                    released[kind] = released.get(kind, 0) + b
        for kind, b in released.items():
            if b:
                events[ins.device].append((end[ins.id], seq, 1, -b, kind))
    peak, series, kind_series, breakdown, kind_peaks, host_peak = {}, {}, {}, {}, {}, {}
    for d in devices:
        b0 = base.get(d, 0)
        cur_kind = dict(b0) if isinstance(b0, dict) else ({"base": b0} if b0 else {})
        cur = sum(v for k, v in cur_kind.items() if not k.startswith(HOST_PREFIX))
        pts = [(0.0, cur)]
        kpts = {k: [(0.0, v)] for k, v in cur_kind.items()}
        best, best_kind = cur, dict(cur_kind)
        kpeak = dict(cur_kind)
        host = host_best = sum(v for k, v in cur_kind.items() if k.startswith(HOST_PREFIX))
        for t, _seq, _phase, delta, kind in sorted(events[d]):
            if kind.startswith(HOST_PREFIX):
                host += delta
                host_best = max(host_best, host)
                cur_kind[kind] = cur_kind.get(kind, 0) + delta
                kpeak[kind] = max(kpeak.get(kind, 0), cur_kind[kind])
                continue
            cur += delta
            cur_kind[kind] = cur_kind.get(kind, 0) + delta
            kpeak[kind] = max(kpeak.get(kind, 0), cur_kind[kind])
            kp = kpts.setdefault(kind, [(0.0, 0)])
            if kp[-1][0] == t:
                kp[-1] = (t, cur_kind[kind])
            else:
                kp.append((t, cur_kind[kind]))
            if cur > best:
                best, best_kind = cur, dict(cur_kind)
            if pts[-1][0] == t:
                pts[-1] = (t, cur)
            else:
                pts.append((t, cur))
        if pts[-1][0] < step:
            pts.append((step, cur))
        for k, kp in kpts.items():
            if kp[-1][0] < step:
                kp.append((step, kp[-1][1]))
        peak[d], series[d] = best, pts
        kind_series[d] = kpts
        breakdown[d] = {k: v for k, v in best_kind.items() if v and not k.startswith(HOST_PREFIX)}
        kind_peaks[d] = kpeak
        host_peak[d] = host_best
    return SimResult(list(instrs), start, end, dur, step, devices, dict(streams), busy,
                     peak, series, kind_series, breakdown, unit, kind_peaks, host_peak)


def _name(ins: SimInstr) -> str:
    """How errors name an instruction: `meta["where"]` if it has one."""
    return ins.meta.get("where") or ins.id


def _stuck(queues, head, by_id, end, start, groups) -> list[str]:
    """For each stream that cannot go on: its next instruction and what it
    waits for (unfinished deps, or absent members of its group)."""
    stuck = []
    for q in sorted(queues):
        if head[q] >= len(queues[q]):
            continue
        ins = by_id[queues[q][head[q]]]
        if ins.id in end:
            continue
        why = [d for d in ins.deps if d not in end]
        if why:
            reason = "waits for " + ", ".join(_name(by_id[d]) for d in why[:4])
        elif ins.group is not None:
            absent = [m for m in groups[ins.group] if m not in start]
            if ins.meta.get("where") and ins.kind in ("send", "recv"):
                reason = "waits for its peer " + ", ".join(
                    f"{_name(by_id[m])} on device {by_id[m].device}" for m in absent[:4])
            else:
                reason = (f"waits in group {ins.group} for "
                          + ", ".join(f"{_name(by_id[m])} (device {by_id[m].device})"
                                      for m in absent[:4]))
        else:
            reason = "cannot start"
        stuck.append(f"device {q[0]} stream {q[1]} at {_name(ins)} {reason}")
    return stuck


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_s, cur_e = 0.0, None, None
    for s, e in intervals:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


# ------------------------------------------------------- schedules -> programs

DEFAULT_COSTS = {"F": 1.0, "I": 1.0, "W": 1.0}


def _cost_fn(costs) -> Callable:
    if callable(costs):
        return costs
    c = dict(DEFAULT_COSTS)
    c.update(costs or {})
    if "B" not in c:
        c["B"] = c["I"] + c["W"]

    def fn(action) -> float:
        return float(c[action.kind])

    fn.table = c  # type: ignore[attr-defined]
    return fn


def schedule_instrs(schedule, costs=None, comm: float = 0.0, act_bytes=1,
                    act_kept_for_w: float = 1.0, pair_cost: float | None = None,
                    pairs: bool = True) -> list[SimInstr]:
    """The instructions of a pipeline schedule, one program per rank.

    costs           {"F": .., "B": .., "I": .., "W": .., "OPT": ..} durations
                    (defaults F=I=W=1, B=I+W; "OPT" adds an optimizer step
                    per rank at the end), or a function action -> duration
    comm            duration of each transfer between stages on different
                    ranks; 0 means free (no transfer instructions at all);
                    a transfer runs on the sender's "comm" stream
    act_bytes       activation bytes a forward keeps until its backward:
                    a number, or a function stage -> bytes
    act_kept_for_w  share of it that W still needs when the backward is
                    split (the rest is released by I)
    pair_cost       duration of an overlapped F&B pair (default: F + B,
                    i.e. overlap hides communication, not compute); the
                    pair's two instructions are scaled to add up to it
    pairs           False: the two actions of an overlapped pair run as two
                    instructions, each waiting for its own inputs only (no
                    pair cost), as Piper's runtime runs them; True: both
                    start once the inputs of both are there
    """
    from piper.tasks.schedules import deps as action_deps, steps

    cost = _cost_fn(costs)
    table = getattr(cost, "table", {})
    abytes = act_bytes if callable(act_bytes) else (lambda s, _b=act_bytes: _b)
    split = {(a.stage, a.mb) for acts in schedule.orders.values() for a in acts if a.kind == "I"}
    stages = schedule.stages
    place = schedule.placement
    out: list[SimInstr] = []
    sent: set[str] = set()

    def key_id(k) -> str:
        return f"{k[0]}{k[1]}{k[2]}"

    def needs(a) -> list[str]:
        ids = []
        for k in action_deps(a, stages, split):
            src = key_id(k)
            if comm > 0 and place[k[0]] != place[a.stage]:
                src = f"send:{src}"
            ids.append(src)
        return ids

    def consumers_elsewhere(a) -> list[int]:
        if a.kind == "F" and a.stage + 1 < stages:
            nxt = a.stage + 1
        elif a.kind in ("B", "I") and a.stage > 0:
            nxt = a.stage - 1
        else:
            return []
        return [place[nxt]] if place[nxt] != place[a.stage] else []

    chunk = {}
    for r in sorted(schedule.orders):
        for i, s in enumerate(sorted(x for x, pr in place.items() if pr == r)):
            chunk[s] = i

    def emit(r: int, st: list) -> None:
        """The instructions of one step of rank r's order: one action, or
        an overlapped pair (both waiting for the inputs of both)."""
        base = [cost(a) for a in st]
        scale = 1.0
        if len(st) > 1:
            want = pair_cost if pair_cost is not None else table.get("F&B")
            if want is not None and sum(base) > 0:
                scale = want / sum(base)
        shared = sorted({d for a in st for d in needs(a)} - {str(a) for a in st})
        for a, c in zip(st, base):
            ab = abytes(a.stage)
            alloc = ab if a.kind == "F" else 0
            if a.kind == "B":
                release = ab
            elif a.kind == "I":
                release = ab - int(round(ab * act_kept_for_w))
            elif a.kind == "W":
                release = int(round(ab * act_kept_for_w))
            else:
                release = 0
            meta = {"stage": a.stage, "mb": a.mb, "rank": r, "chunk": chunk[a.stage]}
            if len(st) > 1:
                meta["pair"] = "&".join(str(x) for x in st)
            out.append(SimInstr(str(a), r, a.kind, c * scale, "compute", str(a),
                                shared if len(st) > 1 else needs(a),
                                mem_alloc_bytes=alloc, mem_free_bytes=release, meta=meta,
                                mem_kind="activations"))
        for a in st:
            for peer in consumers_elsewhere(a):
                sid = f"send:{a}"
                if comm > 0 and sid not in sent:
                    sent.add(sid)
                    out.append(SimInstr(sid, r, "send", comm, "comm", f"{a}>{peer}",
                                        [str(a)], peer=peer,
                                        meta={"stage": a.stage, "mb": a.mb, "rank": r}))

    for r in sorted(schedule.orders):
        for st in steps(schedule.orders[r]):
            if pairs or len(st) == 1:
                emit(r, st)
            else:
                for a in st:
                    emit(r, [a])
        if "OPT" in table:
            out.append(SimInstr(f"OPT{r}", r, "OPT", table["OPT"], "compute", "OPT",
                                [str(schedule.orders[r][-1])] if schedule.orders[r] else []))
    return out


def simulate_schedule(schedule, costs=None, comm: float = 0.0, act_bytes=1,
                      act_kept_for_w: float = 1.0, pair_cost: float | None = None,
                      cost_model: CostModel | None = None, pairs: bool = True) -> SimResult:
    """Simulate a pipeline `Schedule` (see `schedule_instrs` for the knobs)."""
    return simulate(schedule_instrs(schedule, costs, comm, act_bytes, act_kept_for_w,
                                    pair_cost, pairs), cost_model)


from piper.analysis.timeline import (  # noqa: E402  (re-exported for one import)
    plot_memory, plot_timeline, summary_table, to_chrome_trace)

__all__ = ["SimInstr", "SimResult", "simulate", "simulate_schedule", "schedule_instrs",
           "to_chrome_trace", "plot_timeline", "plot_memory", "summary_table"]
