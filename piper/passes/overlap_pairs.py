"""overlap-pairs: interleave the pieces of each overlapped pair's two tasks.

An order entry `a&b` (DualPipeV's steady state pairs a forward chunk with
a backward chunk) says: run these two so that one's communication hides
under the other's computation. `order` marks both tasks `pair i`. A task
is one call until a pass cuts it into pieces at its communication:
expert_parallel cuts a stage with an MoE layer into `@F{s}_pre`,
`@F{s}_experts{b}`, `@F{s}_post` around the dispatch and combine
all_to_all, tensor_parallel cuts at each partial-sum all_reduce; the
pieces keep the pair. Run in the order `order` gave, a pair's pieces are
a1 a2 a3 b1 b2 b3: every all_to_all is waited for right after it starts,
with nothing to run meanwhile. This pass puts them, on every device, as

    a1 b1 a2 b2 a3 b3

so each piece runs while the other task's last collective is in flight:
b1 while a's dispatch travels, a2 while b's dispatch travels, b2 while
a's combine travels, and so on. Lowering waits for a collective just
before its first reader (lower-dist-to-sched), so the sched program
states the overlap: `collective` (a's dispatch), `call` b1, `wait`,
`call` a2. The runtime starts collectives asynchronously and waits at the
`wait`, so it executes that overlap, and the simulator's timeline shows it.

The pieces of a pair are the device's consecutive tasks with that pair
number, grouped by (kind, stage, microbatch) in order; the first two such
actions are interleaved, any further one (the `W` of a split backward in
the pair `F&B`) follows. The global op order is rebuilt from the new
device sequences (plan_order.interleave), so every program is still a
projection of one topological order and cannot deadlock. A plan with no
pair cut into pieces is left exactly as it is; so is one where the pieces'
order admits no global order (the two tasks of a pair would then depend
on each other, which the schedule's validation already rules out).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError
from piper.dialects import dist
from piper.passes.func_utils import the_plan
from piper.passes.plan_order import interleave, place_prefetched


def interleaved(group: list[dist.TaskOp]) -> list[dist.TaskOp]:
    """One pair's pieces: the first two actions' pieces alternated, then the rest."""
    actions: dict[tuple, list[dist.TaskOp]] = {}
    for t in group:
        actions.setdefault((t.kind.data, t.stage.data, t.mb.data), []).append(t)
    lists = list(actions.values())
    if len(lists) < 2:
        return group
    a, b = lists[0], lists[1]
    out = [t for k in range(max(len(a), len(b))) for t in (a[k:k + 1] + b[k:k + 1])]
    return out + [t for rest in lists[2:] for t in rest]


def device_sequences(block) -> tuple[dict[int, list[dist.TaskOp]], bool]:
    """Each device's tasks in plan order with its pairs' pieces interleaved,
    and whether any sequence changed."""
    by_dev: dict[int, list[dist.TaskOp]] = {}
    for o in block.ops:
        if isinstance(o, dist.TaskOp):
            by_dev.setdefault(o.device.data, []).append(o)
    changed = False
    seqs: dict[int, list[dist.TaskOp]] = {}
    for dev, tasks in by_dev.items():
        seq: list[dist.TaskOp] = []
        for pair, run in groupby(tasks, key=lambda t: t.pair):
            group = list(run)
            new = group if pair is None else interleaved(group)
            changed |= new != group
            seq += new
        seqs[dev] = seq
    return seqs, changed


@dataclass(frozen=True)
class OverlapPairs(ModulePass):
    """Interleave the pieces of every overlapped pair (see the module docstring)."""

    name = "overlap-pairs"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        block = the_plan(op, self.name).body.block
        seqs, changed = device_sequences(block)
        if not changed:
            return
        try:
            interleave(block, seqs, lockstep=True)
        except PiperError:
            return  # pieces that depend on each other: keep the order as given
        place_prefetched(block)
