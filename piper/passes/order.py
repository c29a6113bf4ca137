"""order{schedule=...} / order{text=...}: order each device's tasks.

A schedule is data: per pipeline rank, the order of its tasks, each entry a
filter (piper/tasks/filters.py) in text form:

    rank0: 0F0 0F1 0B0 0B1                  one task per entry (stage, kind, mb)
    rank1: [PASS=F] [PASS=B]                all forwards, then all backwards
    rank0: 0F0 [PP=0 PASS=F MB=1|2|3] 0B0&3F1

An entry takes the tasks of the rank it matches that no earlier entry
took, in microbatch order (forwards by stage up, backwards by stage down,
I before W); `sBm` where the plan split that backward means `sIm sWm`.
`a&b` is an overlapped pair, run in that order; both tasks get the
property `pair i` (i: the entry's index), and `overlap-pairs` (run after
the passes that cut tasks into pieces) interleaves the pieces of the two. Every non-optimizer task
must be taken (optimizer tasks run when ready unless an entry names them).
Every replica of a pipeline rank (devices rank*dp .. rank*dp+dp-1) runs
the rank's order. Named schedules (gpipe, 1f1b, interleaved, zb-h1,
dualpipe-v) come from piper.tasks.schedules.

The pass reorders the plan's ops into one global order that follows every
device's order and every data edge (piper/passes/plan_order.py); when none
exists the schedule deadlocks, and the error names the devices and the
tasks they wait on. An entry that matches no task, or only tasks an
earlier entry took, and a task no entry takes, are errors naming them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntAttr, ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.traits import SymbolTable

from piper.diagnostics import PiperError
from piper.tasks.filters import KINDS_OF_PASS, Filter, function_tags
from piper.tasks.orders import Orders, parse_orders
from piper.tasks.schedules import named_orders
from piper.dialects import dist
from piper.passes.plan_order import interleave, place_prefetched
from piper.passes.func_utils import the_plan

def _natural(t: dist.TaskOp) -> tuple:
    """Order of the tasks one entry takes: microbatch, forwards before
    backwards, forwards by stage up, backwards by stage down, I before W,
    the optimizer last."""
    k, s = t.kind.data, t.stage.data
    if k == "F":
        return (0, t.mb.data, 0, s, 0)
    if k == "OPT":
        return (1, 0, 0, s, 0)
    return (0, t.mb.data, 1, -s, 1 if k == "W" else 0)


class DeviceTasks:
    """The tasks of one device, indexed for filter lookups: an entry that
    lists its stages / kinds / microbatches is looked up key by key, so a
    long order of narrow entries costs what its tasks do, not entries x tasks."""

    def __init__(self, tasks: list[dist.TaskOp], tags_of):
        self.tasks = tasks
        self.by_key = {(t.stage.data, t.kind.data, t.mb.data): t for t in tasks}
        self.stages = sorted({t.stage.data for t in tasks})
        self.kinds = sorted({t.kind.data for t in tasks})
        self.mbs = sorted({t.mb.data for t in tasks})
        self.tags_of = tags_of

    def _candidates(self, f: Filter):
        def listed(name, everything):
            v = f.get(name)
            return everything if v is None or v == "*" else v

        stages = listed("PP", self.stages)
        kinds = f.kinds() or self.kinds
        mbs = listed("MB", self.mbs)
        if "OPT" in kinds and f.get("MB") is None:
            mbs = sorted(set(mbs) | {0})
        if len(stages) * len(kinds) * len(mbs) > len(self.tasks):
            return self.tasks
        return [t for s in stages for k in kinds for m in mbs
                if (t := self.by_key.get((s, k, m))) is not None]

    def select(self, f: Filter) -> list[dist.TaskOp]:
        """Every task of the device `f` matches, in natural order."""
        ex = f.exact()
        if ex is not None:
            stage, pass_, mb = ex
            whole = self.by_key.get((stage, "B", mb)) if pass_ == "B" else None
            if whole is not None:
                return [whole]
            return [t for k in KINDS_OF_PASS[pass_]
                    if (t := self.by_key.get((stage, k, mb))) is not None]
        return sorted((t for t in self._candidates(f)
                       if f.matches(t.stage.data, t.kind.data,
                                    None if t.kind.data == "OPT" else t.mb.data,
                                    self.tags_of(t))),
                      key=_natural)


def resolve(orders: Orders, plan: dist.PlanOp, per_rank: int) -> dict[int, list[Operation]]:
    """Each device's task sequence from its rank's entries."""
    tag_cache: dict[str, dict] = {}

    def tags_of(t: dist.TaskOp) -> dict:
        name = t.callee.root_reference.data
        if name not in tag_cache:
            fn = SymbolTable.lookup_symbol(plan, t.callee)
            tag_cache[name] = function_tags(fn) if fn is not None else {}
        return tag_cache[name]

    by_dev: dict[int, list[dist.TaskOp]] = {}
    for o in plan.body.block.ops:
        if isinstance(o, dist.TaskOp):
            by_dev.setdefault(o.device.data, []).append(o)
    ranks = {dev // per_rank for dev in by_dev}
    extra = sorted(set(orders) - ranks)
    if extra:
        raise PiperError(f"order: an order for rank {extra[0]}, but the plan's pipeline ranks "
                         f"are 0..{max(ranks)}")
    seqs: dict[int, list[Operation]] = {}
    for dev, tasks in by_dev.items():
        rank = dev // per_rank
        entries = orders.get(rank)
        if entries is None:
            raise PiperError(f"order: no order for rank {rank} (device {dev})")
        try:
            seqs[dev] = _device_sequence(rank, dev, entries, DeviceTasks(tasks, tags_of))
        except PiperError as e:
            e.rank = rank  # lets the strategy name the order directive of this rank
            raise
    return seqs


def _device_sequence(rank: int, dev: int, entries, index: DeviceTasks) -> list[Operation]:
    """Entries in turn, each taking the matching tasks no earlier one took."""
    tasks = index.tasks
    taken: dict[Operation, int] = {}
    seq: list[Operation] = []
    for i, entry in enumerate(entries):
        mine: list[dist.TaskOp] = []
        for f in entry:
            found = index.select(f)
            if not found:
                raise PiperError(f"order: rank {rank} order entry {i} ({f.text()}) "
                                 f"matches no task of device {dev}")
            new = [t for t in found if t not in taken]
            if not new:
                raise PiperError(f"order: rank {rank} order repeats {f.text()} (entry {i}; "
                                 f"entry {taken[found[0]]} already ordered it)")
            for t in new:
                taken[t] = i
            mine.extend(new)
        if len(entry) == 2:  # an overlapped pair: overlap-pairs interleaves its pieces
            for t in mine:
                t.properties["pair"] = IntAttr(i)
        seq.extend(mine)
    missing = [t.label for t in tasks if t.kind.data != "OPT" and t not in taken]
    if missing:
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise PiperError(f"order: rank {rank} order does not match its tasks; "
                         f"missing {' '.join(missing[:8])}{more}")
    return seq


@dataclass(frozen=True)
class Order(ModulePass):
    """The `order` directive: each pipeline rank's task order, from a named
    `schedule` (gpipe, 1f1b, interleaved, zb-h1, dualpipe-v) or from order
    `text` (`rank0: 0F0 0B0; rank1: ...`, piper/tasks/orders.py)."""

    name = "order"

    schedule: str = ""
    text: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        plan = the_plan(op, self.name)
        pp = plan.mesh.get("pp", 1)
        per_rank = plan.num_devices // pp
        if bool(self.schedule) == bool(self.text):
            raise PiperError(f"{self.name}: give exactly one of schedule=NAME or text=ORDER")
        if self.text:
            orders = parse_orders(self.text)
        else:
            tasks = [o for o in plan.body.block.ops
                     if isinstance(o, dist.TaskOp) and o.kind.data != "OPT"]
            stages = 1 + max((t.stage.data for t in tasks), default=0)
            where = {t.stage.data: t.device.data // per_rank for t in tasks}
            split = any(t.kind.data == "I" for t in tasks)
            orders = named_orders(self.schedule, pp, plan.microbatches.data, stages, where, split)
        seqs = resolve(orders, plan, per_rank)
        # the devices of one pipeline rank (its replicas) run the same sequence
        interleave(plan.body.block, seqs, group={d: d // per_rank for d in seqs})
        place_prefetched(plan.body.block)


@dataclass(frozen=True)
class Schedule(ModulePass):
    """`schedule{kind=NAME}` / `schedule{order=TEXT}`: the old name and options
    of `order{schedule=NAME}` / `order{text=TEXT}`, kept for one release."""

    name = "schedule"

    kind: str = ""
    order: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        Order(schedule=self.kind, text=self.order).apply(ctx, op)
