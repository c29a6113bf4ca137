"""schedule{kind=...} / schedule{order=...}: order each device's tasks.

A schedule is data: per pipeline rank, the order of its (stage, kind,
microbatch) actions, e.g. `rank0: 0F0 0F1 0B0 0B1`. Named schedules (gpipe,
1f1b, interleaved, zb-h1, dualpipe-v) come from piper.directives.schedules;
`order` takes the text form directly, so any schedule can be printed,
edited and run again. The pass reorders the plan's ops into one global order
that follows every device's schedule and every data edge; when no such
order exists the schedule deadlocks, and the error names the devices and
the tasks they wait on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError
from piper.dialects import dist
from piper.passes.replicate_microbatch import the_plan

_ACTION = re.compile(r"^(\d+)(F|B|I|W)(\d+)$")


def parse_orders(text: str) -> dict[int, list[str]]:
    """`rank0: 0F0 0F1 ...` lines (or `;`-separated) -> labels per rank."""
    out: dict[int, list[str]] = {}
    for line in re.split(r"[;\n]", text):
        line = line.strip()
        if not line:
            continue
        head, sep, rest = line.partition(":")
        m = re.fullmatch(r"rank\s*(\d+)", head.strip())
        if not sep or not m:
            raise PiperError(f"schedule order: expected 'rankN: actions', got '{line}'")
        labels = rest.split()
        for a in labels:
            if not _ACTION.match(a):
                raise PiperError(
                    f"schedule order: '{a}' is not an action like 0F1 (stage, F/B/I/W, microbatch)"
                )
        out[int(m.group(1))] = labels
    return out


def named_orders(kind: str, p: int, m: int, stages: int,
                 placement: dict[int, int] | None = None) -> dict[int, list[str]]:
    """Per-rank labels of a named schedule for `stages` stages on `p` ranks;
    `placement` (stage -> rank) is the plan's, checked against the schedule's."""
    from piper.directives import schedules as S

    if stages % p:
        raise PiperError(f"schedule: {stages} stages do not divide over pp={p} devices")
    v = stages // p
    one_chunk = {"gpipe", "1f1b", "zb-h1"}
    makers = {
        "gpipe": lambda: S.gpipe(p, m),
        "1f1b": lambda: S.one_f_one_b(p, m),
        "interleaved": lambda: S.interleaved_1f1b(p, m, v),
        "zb-h1": lambda: S.zb_h1(p, m),
        "dualpipe-v": lambda: S.dualpipe_v(p, m),
    }
    if kind not in makers:
        raise PiperError(f"schedule: unknown schedule '{kind}' (one of {', '.join(makers)})")
    if kind in one_chunk and v != 1:
        raise PiperError(
            f"schedule: '{kind}' runs one stage per device; the plan has {v} per device "
            "(use 'interleaved', or fewer PP regions)"
        )
    if kind == "dualpipe-v" and v != 2:
        raise PiperError(
            f"schedule: 'dualpipe-v' needs 2 chunks per device; the plan has {v} "
            "(annotate 2*pp PP regions and use place(placement='v'))"
        )
    sched = makers[kind]()
    if placement is not None:
        for stage, rank in sorted(placement.items()):
            want = sched.placement.get(stage)
            if want is not None and want != rank:
                raise PiperError(
                    f"schedule: '{kind}' puts stage {stage} on rank {want}, the plan has it on "
                    f"rank {rank}" + (" (use place(placement='v'))" if kind == "dualpipe-v" else "")
                )
    return {r: [f"{a.stage}{a.kind}{a.mb}" for a in acts] for r, acts in sched.orders.items()}


@dataclass(frozen=True)
class Schedule(ModulePass):
    name = "schedule"

    kind: str = ""
    order: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        plan = the_plan(op, self.name)
        mesh = plan.mesh
        pp = mesh.get("pp", 1)
        per_rank = plan.num_devices // pp
        tasks = [o for o in plan.body.block.ops
                 if isinstance(o, dist.TaskOp) and o.kind.data != "OPT"]
        stages = 1 + max((t.stage.data for t in tasks), default=0)
        if self.order:
            orders = parse_orders(self.order)
        elif self.kind:
            where = {t.stage.data: t.device.data // per_rank for t in tasks}
            orders = named_orders(self.kind, pp, plan.microbatches.data, stages, where)
        else:
            raise PiperError("schedule: give kind=NAME or order=TEXT")
        apply_orders(plan, orders, per_rank)


def apply_orders(plan: dist.PlanOp, orders: dict[int, list[str]], per_rank: int) -> None:
    by_dev: dict[int, dict[str, Operation]] = {}
    for o in plan.body.block.ops:
        if isinstance(o, dist.TaskOp) and o.kind.data != "OPT":
            by_dev.setdefault(o.device.data, {})[o.label] = o
    seqs: dict[int, list[Operation]] = {}
    for dev, tasks in by_dev.items():
        rank = dev // per_rank
        labels = orders.get(rank)
        if labels is None:
            raise PiperError(f"schedule: no order for rank {rank} (device {dev})")
        labels = _expand_backward(labels, tasks)
        have, want = set(tasks), set(labels)
        if have != want or len(labels) != len(want):
            missing = sorted(have - want)
            extra = sorted(want - have)
            dup = sorted({x for x in labels if labels.count(x) > 1})
            raise PiperError(
                f"schedule: rank {rank} order does not match its tasks"
                + (f"; missing {' '.join(missing)}" if missing else "")
                + (f"; not on this rank {' '.join(extra)}" if extra else "")
                + (f"; repeated {' '.join(dup)}" if dup else "")
            )
        seqs[dev] = [tasks[label] for label in labels]
    block = plan.body.block
    ops = list(block.ops)
    index = {o: i for i, o in enumerate(ops)}
    nxt = {dev: 0 for dev in seqs}
    pos_in_seq = {t: (dev, i) for dev, seq in seqs.items() for i, t in enumerate(seq)}
    done: set[Operation] = set()
    order: list[Operation] = []
    remaining = list(ops)
    while remaining:
        picked = None
        for o in remaining:  # free ops first, in their original order
            if o in pos_in_seq or not _ready(o, done, index):
                continue
            picked = o
            break
        if picked is None:
            for dev, seq in seqs.items():
                i = nxt[dev]
                if i < len(seq) and _ready(seq[i], done, index):
                    picked = seq[i]
                    nxt[dev] += 1
                    break
        if picked is None:
            stuck = []
            for dev, seq in sorted(seqs.items()):
                i = nxt[dev]
                if i < len(seq):
                    t = seq[i]
                    waits = sorted({v.owner.label for v in t.operands if v.owner not in done
                                    and isinstance(v.owner, dist.TaskOp)}
                                   | {_producer_task(v.owner, done) for v in t.operands
                                      if v.owner not in done and isinstance(v.owner, dist.SendOp)})
                    stuck.append(f"device {dev} at {t.label} waits for {', '.join(waits) or 'inputs'}")
            raise PiperError("schedule deadlocks: " + "; ".join(stuck))
        order.append(picked)
        done.add(picked)
        remaining.remove(picked)
    for o in ops:
        o.detach()
    for o in order:
        block.add_op(o)


def _expand_backward(labels: list[str], tasks: dict) -> list[str]:
    """A full backward `sBm` where the plan split it runs as `sIm` then `sWm`."""
    out = []
    for label in labels:
        m = _ACTION.match(label)
        if m and m.group(2) == "B" and label not in tasks:
            i, w = f"{m.group(1)}I{m.group(3)}", f"{m.group(1)}W{m.group(3)}"
            if i in tasks and w in tasks:
                out += [i, w]
                continue
        out.append(label)
    return out


def _producer_task(op: Operation, done) -> str:
    while isinstance(op, dist.SendOp):
        op = op.value.owner
    return op.label if isinstance(op, dist.TaskOp) else op.name


def _ready(op: Operation, done: set[Operation], index) -> bool:
    return all(v.owner in done or v.owner not in index for v in op.operands)
