"""The global op order of a dist.plan, in time linear in the plan's size.

A plan's ops stand in one global order that lowering projects onto each
device. Three passes set it: every pass that adds ops re-sorts them
topologically (`topological_order`), `schedule` interleaves each device's
task sequence (`interleave`), and both then honour `prefetch` on
collectives (`place_prefetched`). Plans reach 10^5 ops (96 layers x 64
stages x 256 microbatches), so nothing here may be quadratic.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from xdsl.ir import Block, Operation

from piper.diagnostics import PiperError
from piper.dialects import dist
from piper.dialects.dist import _devices_of_op


def _rebuild(block: Block, order: Sequence[Operation]) -> None:
    for o in list(block.ops):
        o.detach()
    for o in order:
        block.add_op(o)


def _producers(op: Operation, index: dict[Operation, int]) -> Iterable[Operation]:
    for v in op.operands:
        if v.owner in index:
            yield v.owner


def topological_order(ops: list[Operation]) -> list[Operation]:
    """Stable topological order of `ops` (edges between them only): repeated
    sweeps over the ops in their order, each taking every op whose producers
    are already placed; the result keeps ops in place when they are free.

    Computed without the sweeps: an op lands in sweep max(sweep of each
    producer before it, 1 + sweep of each producer after it), and the new
    order is (sweep, old position)."""
    # the working lists hold positions: each lookup of an op by hash costs a
    # Python-level __hash__ call
    index = {o: i for i, o in enumerate(ops)}
    users: list[list[int]] = [[] for _ in ops]
    missing = [0] * len(ops)
    for i, o in enumerate(ops):
        for p in _producers(o, index):
            missing[i] += 1
            users[index[p]].append(i)
    sweep = [0] * len(ops)
    ready = [i for i in range(len(ops)) if missing[i] == 0]
    seen = 0
    while ready:
        ip = ready.pop()
        seen += 1
        for iu in users[ip]:
            sweep[iu] = max(sweep[iu], sweep[ip] + (1 if ip > iu else 0))
            missing[iu] -= 1
            if missing[iu] == 0:
                ready.append(iu)
    if seen != len(ops):
        raise PiperError("the plan has a dependency cycle")
    return [ops[i] for i in sorted(range(len(ops)), key=lambda i: (sweep[i], i))]


def interleave(block: Block, seqs: dict[int, list[Operation]], lockstep: bool = False,
               group: dict[int, int] | None = None) -> None:
    """One global order following every device's task sequence `seqs` and
    every data edge. Ops in no sequence go first, in their current order,
    as soon as their inputs are there; otherwise the first device (in
    `seqs` order) whose next task is ready runs it; with `lockstep`, the
    ready device that has run the fewest tasks, so that the members of a
    collective reach it together and it starts (in every member's
    program) before any member's next task. `group` (device -> group
    number) makes devices that run the same sequence (the replicas of one
    pipeline rank) go together: when one runs its k-th task, the others
    run theirs right after it, before any other device's task (ops in no
    sequence that it freed follow them). Every replica's program is then the
    same up to device numbers (lower-dist-to-sched{replicas=first} relies
    on it), and none waits at a collective for a replica that ran ahead.
    When no op can go, the schedule deadlocks: the error names each
    device's next task and what it waits for."""
    ops = list(block.ops)
    # the working lists hold positions in `ops` (as in topological_order)
    index = {o: i for i, o in enumerate(ops)}
    dev_rank = {dev: i for i, dev in enumerate(seqs)}
    at = {dev: [index[t] for t in seq] for dev, seq in seqs.items()}  # seqs as positions
    in_seq: list[tuple[int, int] | None] = [None] * len(ops)  # (device, place in its seq)
    for dev, seq in at.items():
        for i, k in enumerate(seq):
            in_seq[k] = (dev, i)
    missing = [sum(1 for _ in _producers(o, index)) for o in ops]
    nxt = {dev: 0 for dev in seqs}
    free = [k for k in range(len(ops)) if in_seq[k] is None and missing[k] == 0]
    heapq.heapify(free)

    def key(dev) -> tuple[int, ...]:
        if group is None:
            return (nxt[dev] if lockstep else 0, dev_rank[dev])
        return (nxt[dev] if lockstep else 0, group[dev], nxt[dev], dev_rank[dev])

    devs: list[tuple[int, ...]] = []  # key of devices whose next task is ready
    for dev, seq in at.items():
        if seq and missing[seq[0]] == 0:
            devs.append(key(dev))
    heapq.heapify(devs)
    rank_dev = list(seqs)
    # each device's group mates, in `seqs` order (none without `group`)
    mates: dict[int, list[int]] = {}
    if group is not None:
        members: dict[int, list[int]] = {}
        for dev in seqs:
            members.setdefault(group[dev], []).append(dev)
        mates = {dev: [o for o in members[group[dev]] if o != dev] for dev in seqs}
    order: list[Operation] = []

    def place(op: Operation) -> None:
        order.append(op)
        for r in op.results:
            for use in r.uses:
                k = index.get(use.operation)
                if k is None:
                    continue
                missing[k] -= 1
                if missing[k] == 0:
                    where = in_seq[k]
                    if where is None:
                        heapq.heappush(free, k)
                    elif nxt[where[0]] == where[1]:
                        heapq.heappush(devs, key(where[0]))

    def run(dev: int) -> None:
        op = seqs[dev][nxt[dev]]
        nxt[dev] += 1
        seq = at[dev]
        if nxt[dev] < len(seq) and missing[seq[nxt[dev]]] == 0:
            heapq.heappush(devs, key(dev))
        place(op)

    while len(order) < len(ops):
        if free:
            place(ops[heapq.heappop(free)])
        elif devs:
            k = heapq.heappop(devs)
            dev = rank_dev[k[-1]]
            if group is not None and k[2] != nxt[dev]:
                continue  # it ran already, beside a member of its group
            i = nxt[dev]
            run(dev)
            # the rest of the group runs its i-th task before any device goes on
            for other in mates.get(dev, ()):
                if nxt[other] == i and i < len(at[other]) and missing[at[other][i]] == 0:
                    run(other)
        else:
            raise PiperError("schedule deadlocks: " + _stuck(seqs, nxt, set(order)))
    _rebuild(block, order)


def _stuck(seqs, nxt, done) -> str:
    out = []
    for dev, seq in sorted(seqs.items()):
        i = nxt[dev]
        if i < len(seq):
            t = seq[i]
            waits = sorted({_producer_task(v.owner) for v in t.operands if v.owner not in done})
            out.append(f"device {dev} at {t.label} waits for {', '.join(waits) or 'inputs'}")
    return "; ".join(out)


def _producer_task(op: Operation) -> str:
    while isinstance(op, dist.SendOp):
        op = op.value.owner
    return op.label if isinstance(op, dist.TaskOp) else op.name


def place_prefetched(block: Block) -> None:
    """Move each collective with `prefetch k` down to just before the task
    that runs k compute tasks ahead of its first user, on the member that
    needs it soonest (it stays put if it already stands later)."""
    ops = list(block.ops)
    marked = [o for o in ops if isinstance(o, dist.CollectiveOp) and o.prefetch is not None]
    if not marked:
        return
    pos = {o: i for i, o in enumerate(ops)}
    tasks: dict[int, list[int]] = {}  # device -> positions of its tasks
    nth: dict[Operation, int] = {}  # task -> its index on its device
    for i, o in enumerate(ops):
        if isinstance(o, dist.TaskOp):
            lst = tasks.setdefault(o.device.data, [])
            nth[o] = len(lst)
            lst.append(i)
    def readers(c: Operation) -> list[Operation]:
        """What reads the collective's results, through the unpacks of a
        packed collective (which move with it)."""
        out = []
        for r in c.results:
            for u in r.uses:
                if isinstance(u.operation, dist.UnpackOp):
                    out += [w.operation for x in u.operation.results for w in x.uses]
                else:
                    out.append(u.operation)
        return out

    target: dict[Operation, int] = {}
    for c in marked:
        k = c.prefetch.data
        first = [u for u in readers(c) if u in nth]
        if not first:
            continue
        best = None
        for dev in c.members:
            users = [t for t in first if t.device.data == dev]
            if not users:
                continue
            j = min(nth[t] for t in users) - k
            at = tasks[dev][j] if j >= 0 else pos[c]
            best = at if best is None else min(best, at)
        if best is None:
            continue
        best = min([best] + [pos[u] for u in readers(c)])
        if best > pos[c]:
            target[c] = best
    if not target:
        return
    before: dict[int, list[Operation]] = {}
    moved: set[Operation] = set()
    for c in marked:
        if c in target:
            unpacks = list(dict.fromkeys(u.operation for r in c.results for u in r.uses
                                         if isinstance(u.operation, dist.UnpackOp)))
            before.setdefault(target[c], []).extend([c, *unpacks])
            moved.update([c, *unpacks])
    order = []
    for i, o in enumerate(ops):
        order.extend(before.get(i, ()))
        if o not in moved:
            order.append(o)
    _rebuild(block, order)


def start_early(out: list[Operation], early: set[Operation]) -> list[Operation]:
    """`out` with every op of `early` moved up to just after the last op
    it reads (a collective: to just before the next compute task on one of
    its devices, so other ops keep their order): a gradient bucket is
    packed and its reduction started as soon as its gradients exist, so it
    runs while the rest of the backward computes (its wait stays before
    the optimizer that reads it). Early ops that land on the same place
    keep their order."""
    pos = {o: i for i, o in enumerate(out)}
    tasks: dict[int, list[int]] = {}  # device -> positions of its tasks
    for i, o in enumerate(out):
        if isinstance(o, dist.TaskOp):
            tasks.setdefault(o.device.data, []).append(i)
    target: dict[Operation, int] = {}  # early op -> the op it goes just before
    for o in out:
        if o not in early:
            continue
        lo = max((target[v.owner] if v.owner in target else pos[v.owner] + 1
                  for v in o.operands if v.owner in pos), default=0)
        devs = _devices_of_op(o)
        if len(devs) > 1:
            nxt = [t[k] for t in (tasks.get(d, []) for d in devs)
                   if (k := bisect_left(t, lo)) < len(t)]
            lo = min(nxt, default=len(out))
        target[o] = min(lo, pos[o])
    return sorted(out, key=lambda o: (target[o], 0, pos[o]) if o in target else (pos[o], 1, 0))


def optimizers_by_readiness(out: list[Operation]) -> list[Operation]:
    """`out` with the optimizer tasks (each with the unpacks, sums, loads and
    fills that feed it alone and the stores of its results) in the order their
    reduced gradients become available, in the slots they held (loads
    several of them read go first): the optimizer of the first reduced
    bucket runs while later buckets are still in flight. Optimizer tasks
    are independent of each other, so results do not change."""
    pos = {o: i for i, o in enumerate(out)}
    groups: list[tuple[int, int, list[Operation]]] = []
    shared: dict[Operation, None] = {}
    readers: dict[Operation, set[Operation]] = {}  # an unpack's results feed many tasks

    def read_only_by(o: Operation, t: Operation) -> bool:
        if o not in readers:
            readers[o] = {u.operation for r in o.results for u in r.uses}
        return readers[o] == {t}

    for t in out:
        if not (isinstance(t, dist.TaskOp) and t.kind.data == "OPT"):
            continue
        feeds = [v.owner for v in t.args if isinstance(v.owner, dist.UnpackOp | dist.SumOp)
                 and read_only_by(v.owner, t)]
        for v in t.args:
            if isinstance(v.owner, dist.LoadOp | dist.FillOp) and v.owner in pos:
                if all(u.operation is t for u in v.owner.result.uses):
                    feeds.append(v.owner)
                elif all(isinstance(u.operation, dist.TaskOp) and u.operation.kind.data == "OPT"
                         for u in v.owner.result.uses):
                    shared[v.owner] = None
        stores = [u.operation for r in t.results for u in r.uses
                  if isinstance(u.operation, dist.StoreOp)]
        reduced = [v.owner for v in t.args if isinstance(v.owner, dist.CollectiveOp)]
        reduced += [v.owner for f in feeds if isinstance(f, dist.UnpackOp | dist.SumOp)
                    for v in f.operands if isinstance(v.owner, dist.CollectiveOp)]
        # a sum of unpacked chunks (ZeRO's packed reduce-scatters): the collectives
        # behind the unpacks
        reduced += [w.owner for f in feeds if isinstance(f, dist.SumOp)
                    for v in f.operands if isinstance(v.owner, dist.UnpackOp)
                    for w in v.owner.operands if isinstance(w.owner, dist.CollectiveOp)]
        ready = max((pos[c] for c in reduced if c in pos), default=-1)
        groups.append((ready, pos[t], list(dict.fromkeys(feeds)) + [t] + stores))
    if len(groups) < 2:
        return out
    # each device's optimizers in readiness order, in the places its
    # optimizers held among all devices' (other devices' order is kept)
    by_dev: dict[int, list] = {}
    for g in sorted(groups, key=lambda g: g[:2]):
        by_dev.setdefault(_task_device(g), []).append(g)
    order = [by_dev[_task_device(g)].pop() for g in groups[::-1]][::-1]
    # each group after its last outside input, none before the first
    # optimizer's old place
    key: dict[Operation, tuple] = {}
    anchor = min(g[1] for g in groups) - 1
    for rank, (_, _, members) in enumerate([(-2, -2, list(shared))] + order):
        inside = set(members)
        deps = [pos[v.owner] for o in members for v in o.operands
                if v.owner in pos and v.owner not in inside]
        anchor = max([anchor] + deps)
        for k, o in enumerate(members):
            key[o] = (anchor, 1, rank, k)
    new = sorted(out, key=lambda o: key.get(o, (pos[o], 0, 0, 0)))
    at = {o: i for i, o in enumerate(new)}

    def backwards(o: Operation) -> bool:
        """An edge into or out of `o` that now points backwards."""
        return (any(at[v.owner] > at[o] for v in o.operands if v.owner in at)
                or any(at[u.operation] < at[o] for r in o.results for u in r.uses
                       if u.operation in at))

    # the ops outside the groups keep their order, so only an edge of a
    # moved op (one with a key) can point backwards
    if any(backwards(o) for o in key):
        return out  # something else reads an optimizer's result early: keep the order
    return new


def _task_device(group) -> int:
    """The device of the optimizer task in a (ready, position, members) group."""
    return next(o.device.data for o in group[2] if isinstance(o, dist.TaskOp))
