"""Pipeline schedules as data.

A schedule says, for every pipeline rank, the order in which that rank runs
its actions. An action is one task of one stage on one microbatch:

    F  forward
    B  full backward (input gradient and weight gradient together)
    I  backward for the input gradient only
    W  backward for the weight gradient only (after the I of the same task)

Its text form is `<stage><kind><microbatch>`: `0F3`, `2B1`, `1I0`, `1W0`.
Two actions joined by `&` (`0F5&7B2`) are an overlapped pair: the rank
starts them together (both need their inputs first), so a runtime may run
one's communication under the other's computation. A schedule prints as one
line per rank and parses back from the same text:

    rank0: 0F0 0F1 0B0 0B1
    rank1: 1F0 1B0 1F1 1B1

Named schedules (`gpipe`, `one_f_one_b`, `interleaved_1f1b`, `zb_h1`,
`dualpipe_v`) are generators of this data; `explicit` reads the text; and
`validate` checks any of them: every task is there exactly once, every
action sits on the rank its stage is placed on, and running all ranks in
lockstep (each rank in its own order, an action waits for the actions it
needs) finishes, or the error names the ranks that are stuck and what they
wait for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from piper.diagnostics import PiperError
from piper.tasks.filters import Filter
from piper.tasks.orders import Orders, rank_lines

KINDS = ("F", "B", "I", "W")
_ACTION = re.compile(r"^(\d+)([FBIW])(\d+)$", re.ASCII)


@dataclass(frozen=True)
class Action:
    """One task of a schedule: `stage`, `kind` (F/B/I/W), microbatch `mb`.

    `overlap` marks the second action of an overlapped pair: it starts
    together with the action before it on its rank. It is not part of the
    action's identity (equality and hashing look at stage, kind, mb).
    """

    stage: int
    kind: str
    mb: int
    overlap: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PiperError(f"schedule: action kind '{self.kind}' is not one of F, B, I, W")
        if self.stage < 0 or self.mb < 0:
            raise PiperError(f"schedule: action {self} has a negative stage or microbatch")

    def __str__(self) -> str:
        return f"{self.stage}{self.kind}{self.mb}"

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.stage, self.kind, self.mb)


def parse_action(token: str) -> list[Action]:
    """`0F3` -> [Action]; `0F5&7B2` -> the overlapped pair (second marked)."""
    out = []
    for i, part in enumerate(token.split("&")):
        m = _ACTION.match(part)
        if not m:
            raise PiperError(
                f"schedule: '{token}' is not an action like 0F1 (stage, F/B/I/W, microbatch)"
                " or an overlapped pair like 0F5&7B2"
            )
        out.append(Action(int(m.group(1)), m.group(2), int(m.group(3)), overlap=i > 0))
    return out


def parse_orders(text: str) -> dict[int, list[Action]]:
    """`rankN: actions` lines in the order text grammar (piper/tasks/orders.py),
    every entry an exact action or an overlapped pair of them."""
    return {rank: [a for tok in toks for a in parse_action(tok)]
            for rank, toks in rank_lines(text, "schedule").items()}


def format_actions(actions: list[Action]) -> str:
    toks: list[str] = []
    for a in actions:
        if a.overlap and toks:
            toks[-1] += f"&{a}"
        else:
            toks.append(str(a))
    return " ".join(toks)


def format_orders(orders: dict[int, list[Action]]) -> str:
    return "\n".join(f"rank{r}: {format_actions(orders[r])}" for r in sorted(orders))


def steps(actions: list[Action]) -> list[tuple[Action, ...]]:
    """A rank's order as steps: single actions and overlapped pairs."""
    out: list[list[Action]] = []
    for a in actions:
        if a.overlap and out:
            out[-1].append(a)
        else:
            out.append([a])
    return [tuple(s) for s in out]


@dataclass
class Schedule:
    """A pipeline schedule: `p` ranks, `m` microbatches, `v` stages per rank.

    `placement[stage]` is the rank that runs the stage; `orders[rank]` the
    actions that rank runs, in order. `str(schedule)` is the editable text
    form, which `explicit` reads back.
    """

    name: str
    p: int
    m: int
    v: int
    placement: dict[int, int]
    orders: dict[int, list[Action]]

    @property
    def stages(self) -> int:
        return len(self.placement)

    def __str__(self) -> str:
        place = " ".join(f"{s}:{self.placement[s]}" for s in sorted(self.placement))
        return (f"# {self.name}: pp={self.p} microbatches={self.m} stages={self.stages}"
                f" placement(stage:rank)={place}\n" + format_orders(self.orders))

    def text(self) -> str:
        """The order lines only (what `explicit` and `schedule{order=...}` take)."""
        return format_orders(self.orders)


# ---------------------------------------------------------------- generators

def _check_pm(name: str, p: int, m: int) -> None:
    if p < 1:
        raise PiperError(f"{name}: pp must be at least 1; got {p}")
    if m < 1:
        raise PiperError(f"{name}: microbatches must be at least 1; got {m}")


def gpipe(p: int, m: int) -> Schedule:
    """All forwards, then all backwards: activation of m microbatches live."""
    _check_pm("gpipe", p, m)
    orders = {r: [Action(r, "F", i) for i in range(m)] + [Action(r, "B", i) for i in range(m)]
              for r in range(p)}
    return Schedule("gpipe", p, m, 1, {s: s for s in range(p)}, orders)


def one_f_one_b(p: int, m: int) -> Schedule:
    """1F1B: rank r warms up with p-r-1 forwards, then alternates F and B.

    Same bubble as GPipe, but rank r holds at most p-r activations.
    """
    _check_pm("1f1b", p, m)
    orders = {}
    for r in range(p):
        warm = min(p - r - 1, m)
        acts = [Action(r, "F", i) for i in range(warm)]
        for i in range(m - warm):
            acts += [Action(r, "F", warm + i), Action(r, "B", i)]
        acts += [Action(r, "B", i) for i in range(m - warm, m)]
        orders[r] = acts
    return Schedule("1f1b", p, m, 1, {s: s for s in range(p)}, orders)


def interleaved_1f1b(p: int, m: int, v: int) -> Schedule:
    """Interleaved 1F1B: v chunks per rank, stage s on rank s % p.

    Microbatches go through a rank's chunks in rounds of p (Megatron-LM's
    interleaved schedule, Narayanan et al. 2021): the k-th forward of a rank
    is chunk (k // p) % v of microbatch (k // (p*v)) * p + k % p, backwards
    take the chunks in reverse. Rank r warms up with (p-r-1)*2 + (v-1)*p
    forwards (all of them when m == p). The bubble shrinks by v:
    (p-1)/(v*m + p-1) of the step.
    """
    _check_pm("interleaved", p, m)
    if v < 1:
        raise PiperError(f"interleaved: chunks per rank must be at least 1; got {v}")
    if m % p:
        raise PiperError(f"microbatches ({m}) must be a multiple of pp ({p}) for interleaved")
    total = v * m

    def fwd(r: int, k: int) -> Action:
        return Action(((k // p) % v) * p + r, "F", (k // (p * v)) * p + k % p)

    def bwd(r: int, k: int) -> Action:
        return Action((v - 1 - (k // p) % v) * p + r, "B", (k // (p * v)) * p + k % p)

    orders = {}
    for r in range(p):
        warm = total if m == p else min((p - r - 1) * 2 + (v - 1) * p, total)
        acts = [fwd(r, k) for k in range(warm)]
        for i in range(total - warm):
            acts += [fwd(r, warm + i), bwd(r, i)]
        acts += [bwd(r, k) for k in range(total - warm, total)]
        orders[r] = acts
    return Schedule(f"interleaved_1f1b(v={v})", p, m, v,
                    {s: s % p for s in range(v * p)}, orders)


def zb_h1(p: int, m: int) -> Schedule:
    """ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024).

    1F1B with every B split into I (input gradient, on the critical path)
    and W (weight gradient, off it). Rank r warms up like 1F1B (p-r-1
    forwards), then runs F, I pairs; its W's trail its I's by r microbatches,
    so the last ranks pass input gradients upstream as early as they can
    and their postponed W's fill the cool-down, where 1F1B idles. Every rank
    holds at most p activations (1F1B's peak, on rank 0). With F = I = W and
    m >= p the bubble is (p-1)(F+I-W), a third of 1F1B's (p-1)(F+I+W).
    """
    _check_pm("zb_h1", p, m)
    orders = {}
    for r in range(p):
        warm = min(p - r - 1, m)
        acts = [Action(r, "F", i) for i in range(warm)]
        nw = 0

        def w_upto(i: int) -> None:  # W's of microbatches up to i - r
            nonlocal nw
            while nw <= i - r:
                acts.append(Action(r, "W", nw))
                nw += 1

        for i in range(m - warm):
            acts += [Action(r, "F", warm + i), Action(r, "I", i)]
            w_upto(i)
        for i in range(m - warm, m):
            acts.append(Action(r, "I", i))
            w_upto(i)
        acts += [Action(r, "W", k) for k in range(nw, m)]
        orders[r] = acts
    return Schedule("zb_h1", p, m, 1, {s: s for s in range(p)}, orders)


def dualpipe_v(p: int, m: int) -> Schedule:
    """DualPipeV (DeepSeek's DualPipe cut to a V; DeepSeek-AI 2024/2025).

    2p stages on p ranks, two chunks per rank: chunk 0 is stage r, chunk 1
    is stage 2p-1-r, so a microbatch goes down the ranks and comes back up.
    Rank r runs eight phases:

      1. 2(p-r-1) forwards of chunk 0
      2. r+1 times: forward chunk 0, forward chunk 1
      3. p-r-1 times: I chunk 1, W (deferred queue), forward chunk 1
      4. m-2p+r+1 times: F chunk 0 & B chunk 1, then F chunk 1 & B chunk 0
         (overlapped pairs; on the last rank the very first pair runs as
         two plain actions)
      5. p-r-1 times: B chunk 1, then F chunk 1 & B chunk 0
      6. r+1 times: backward chunk 1, backward chunk 0; from the middle of
         this phase on, a backward is an I whose W joins the queue
      7. p-r-1 times: W from the queue, I chunk 0
      8. r+1 W's from the queue

    The steady state (phase 4) pairs a forward with a backward of the other
    chunk; the W's fill the ramp-down. The phases need m >= 2p; with fewer
    microbatches there is no steady state to pair, and the V is scheduled
    by `_v_greedy` (same placement, I/W split, W's filling idle slots).
    """
    name = "dualpipe_v"
    _check_pm(name, p, m)
    if m < 2 * p:
        return _v_greedy(p, m)
    orders = {}
    for r in range(p):
        stage = (r, 2 * p - 1 - r)
        nf, nb = [0, 0], [0, 0]
        wq: list[Action] = []
        acts: list[Action] = []

        def f(c: int, overlap: bool = False) -> None:
            acts.append(Action(stage[c], "F", nf[c], overlap))
            nf[c] += 1

        def b(c: int, zb: bool = False, overlap: bool = False) -> None:
            if zb:
                acts.append(Action(stage[c], "I", nb[c], overlap))
                wq.append(Action(stage[c], "W", nb[c]))
            else:
                acts.append(Action(stage[c], "B", nb[c], overlap))
            nb[c] += 1

        def w() -> None:
            acts.append(wq.pop(0))

        for _ in range(2 * (p - r - 1)):
            f(0)
        for _ in range(r + 1):
            f(0)
            f(1)
        for _ in range(p - r - 1):
            b(1, zb=True)
            w()
            f(1)
        for i in range(m - 2 * p + r + 1):
            if i == 0 and r == p - 1:
                f(0)
                b(1)
            else:
                f(0)
                b(1, overlap=True)
            f(1)
            b(0, overlap=True)
        for _ in range(p - r - 1):
            b(1)
            f(1)
            b(0, overlap=True)
        zb = False
        for i in range(r + 1):
            if i == (r + 1) // 2 and r % 2 == 1:
                zb = True
            b(1, zb=zb)
            if i == (r + 1) // 2 and r % 2 == 0:
                zb = True
            b(0, zb=zb)
        for _ in range(p - r - 1):
            w()
            b(0, zb=True)
        for _ in range(r + 1):
            w()
        orders[r] = acts
    placement = {s: (s if s < p else 2 * p - 1 - s) for s in range(2 * p)}
    return Schedule(name, p, m, 2, placement, orders)


def _v_greedy(p: int, m: int) -> Schedule:
    """The V of DualPipeV for m < 2p microbatches, by a lockstep list
    schedule with unit costs: at each step every rank runs one ready
    action, an I first (the deepest stage, then the oldest microbatch: it
    frees activations and unblocks the rank above), else a forward (of the
    returning chunk first), else a deferred W; the W's left over end the
    step. Every action waits for the actions it needs, so the order is
    complete and cannot deadlock."""
    stages = 2 * p
    placement = {s: (s if s < p else stages - 1 - s) for s in range(stages)}
    mine = {r: sorted((s for s in range(stages) if placement[s] == r), reverse=True)
            for r in range(p)}
    split = {(s, i) for s in range(stages) for i in range(m)}
    done: set[tuple[int, str, int]] = set()
    nf = {s: 0 for s in range(stages)}
    ni = {s: 0 for s in range(stages)}
    wq: dict[int, list[Action]] = {r: [] for r in range(p)}
    orders: dict[int, list[Action]] = {r: [] for r in range(p)}
    total = 3 * stages * m
    while len(done) < total:
        ran = []
        for r in range(p):
            pick = None
            for kind, count in (("I", ni), ("F", nf)):
                for st in mine[r]:
                    if count[st] < m:
                        a = Action(st, kind, count[st])
                        if all(d in done for d in deps(a, stages, split)):
                            pick = a
                            break
                if pick is not None:
                    break
            if pick is None and wq[r]:
                pick = wq[r].pop(0)
            if pick is None:
                continue
            if pick.kind == "I":
                ni[pick.stage] += 1
                wq[r].append(Action(pick.stage, "W", pick.mb))
            elif pick.kind == "F":
                nf[pick.stage] += 1
            orders[r].append(pick)
            ran.append(pick.key)
        if not ran:  # unreachable: the DAG always has a ready action
            raise PiperError(f"dualpipe_v: no action is ready (pp={p}, microbatches={m})")
        done.update(ran)  # what ran this step is ready for the next
    return Schedule("dualpipe_v", p, m, 2, placement, orders)


def explicit(text: str, name: str = "explicit") -> Schedule:
    """A schedule from its text form; placement is read off the orders."""
    orders = parse_orders(text)
    p = max(orders) + 1
    missing = [r for r in range(p) if r not in orders]
    if missing:
        raise PiperError(f"schedule: no order for rank {', '.join(map(str, missing))}")
    placement: dict[int, int] = {}
    for r, acts in sorted(orders.items()):
        for a in acts:
            other = placement.setdefault(a.stage, r)
            if other != r:
                raise PiperError(
                    f"schedule: stage {a.stage} has actions on rank {other} and rank {r}"
                    f" (e.g. {a}); a stage lives on one rank")
    stages = max(placement) + 1
    absent = [s for s in range(stages) if s not in placement]
    if absent:
        raise PiperError(f"schedule: no action for stage {', '.join(map(str, absent))}")
    m = 1 + max(a.mb for acts in orders.values() for a in acts)
    v = stages // p if stages % p == 0 else 0
    return Schedule(name, p, m, v, placement, orders)


NAMED = {
    "gpipe": lambda p, m, v=1: gpipe(p, m),
    "1f1b": lambda p, m, v=1: one_f_one_b(p, m),
    "interleaved": lambda p, m, v=2: interleaved_1f1b(p, m, v),
    "zb-h1": lambda p, m, v=1: zb_h1(p, m),
    "dualpipe-v": lambda p, m, v=2: dualpipe_v(p, m),
}


def named(kind: str, p: int, m: int, v: int | None = None) -> Schedule:
    """A named schedule by its directive name (gpipe, 1f1b, interleaved, ...)."""
    if kind not in NAMED:
        raise PiperError(f"schedule: unknown schedule '{kind}' (one of {', '.join(NAMED)})")
    return NAMED[kind](p, m) if v is None else NAMED[kind](p, m, v)


ONE_CHUNK = ("gpipe", "1f1b", "zb-h1")
SPLIT_BACKWARD = ("zb-h1", "dualpipe-v")  # schedule I and W tasks


def for_plan(kind: str, p: int, m: int, stages: int,
             placement: dict[int, int] | None = None,
             split_backward: bool | None = None) -> Schedule:
    """The named schedule `kind` for a plan of `stages` stages on `p`
    pipeline ranks and `m` microbatches; `placement` (stage -> rank), the
    plan's, must agree with the schedule's; `split_backward`, whether the
    plan's backwards are split into I and W (None: not known). Errors say
    what the plan lacks."""
    if kind not in NAMED:
        raise PiperError(f"schedule: unknown schedule '{kind}' (one of {', '.join(NAMED)})")
    if stages % p:
        raise PiperError(f"schedule: {stages} stages do not divide over pp={p} devices")
    v = stages // p
    if kind in ONE_CHUNK and v != 1:
        raise PiperError(
            f"schedule: '{kind}' runs one stage per device; the plan has {v} per device "
            "(use 'interleaved', or fewer PP regions)")
    if kind == "interleaved" and v < 2:
        raise PiperError(
            f"schedule: 'interleaved' needs at least 2 stages per device; the plan has {v} "
            f"({stages} stages on pp={p}: annotate more PP regions than devices, or use '1f1b')")
    if kind in SPLIT_BACKWARD and split_backward is False:
        raise PiperError(
            f"schedule: '{kind}' schedules input-grad (I) and weight-grad (W) tasks; the plan's "
            "backwards are not split (add split_backward() to the strategy)")
    if kind == "dualpipe-v" and v != 2:
        raise PiperError(
            f"schedule: 'dualpipe-v' needs 2 chunks per device; the plan has {v} "
            "(annotate 2*pp PP regions and use place(placement='v'))")
    sched = named(kind, p, m, v if kind == "interleaved" else None)
    if placement is not None:
        for stage, rank in sorted(placement.items()):
            want = sched.placement.get(stage)
            if want is not None and want != rank:
                raise PiperError(
                    f"schedule: '{kind}' puts stage {stage} on rank {want}, the plan has it on "
                    f"rank {rank}" + (" (use place(placement='v'))" if kind == "dualpipe-v" else ""))
    return sched


def named_orders(kind: str, p: int, m: int, stages: int,
                 placement: dict[int, int] | None = None,
                 split_backward: bool | None = None) -> Orders:
    """The order of a named schedule (piper/tasks/schedules.py), one exact
    filter per action."""
    sched = for_plan(kind, p, m, stages, placement, split_backward)
    return {r: [tuple(Filter.task(a.stage, a.kind, a.mb) for a in st) for st in steps(acts)]
            for r, acts in sched.orders.items()}


# ---------------------------------------------------------------- validation

def deps(a: Action, stages: int, split: set[tuple[int, int]]) -> list[tuple[int, str, int]]:
    """Keys of the actions `a` needs finished first.

    `split` holds the (stage, mb) whose backward is split into I and W.
    """
    def bwd(s: int) -> tuple[int, str, int]:
        return (s, "I" if (s, a.mb) in split else "B", a.mb)

    if a.kind == "F":
        return [(a.stage - 1, "F", a.mb)] if a.stage > 0 else []
    if a.kind in ("B", "I"):
        out = [(a.stage, "F", a.mb)]
        if a.stage + 1 < stages:
            out.append(bwd(a.stage + 1))
        return out
    return [(a.stage, "I", a.mb)]  # W


def validate(schedule: Schedule) -> None:
    """Raise PiperError unless the schedule is complete, placed and deadlock-free."""
    s = schedule
    name = s.name
    if s.v and s.stages != s.v * s.p:
        raise PiperError(f"{name}: {s.stages} stages on pp={s.p} is not {s.v} chunks per rank")
    if name.startswith("dualpipe") and s.v != 2:
        raise PiperError(f"dualpipe_v needs 2 chunks per device; schedule has {s.v}")
    if set(s.orders) - set(range(s.p)):
        bad = sorted(set(s.orders) - set(range(s.p)))
        raise PiperError(f"{name}: orders for rank {bad} but pp is {s.p}")
    seen: dict[tuple[int, str, int], int] = {}
    for r in range(s.p):
        for a in s.orders.get(r, []):
            if a.stage not in s.placement:
                raise PiperError(f"{name}: rank {r} runs {a} but there is no stage {a.stage}")
            if s.placement[a.stage] != r:
                raise PiperError(f"{name}: {a} is on rank {r} but stage {a.stage} is placed"
                                 f" on rank {s.placement[a.stage]}")
            if a.mb >= s.m:
                raise PiperError(f"{name}: {a} names microbatch {a.mb}; there are {s.m}")
            if a.key in seen:
                raise PiperError(f"{name}: {a} appears twice (rank {seen[a.key]} and rank {r})")
            seen[a.key] = r
        for st in steps(s.orders.get(r, [])):
            if len(st) > 2 or (len(st) == 2 and sorted(x.kind for x in st) not in (
                    ["B", "F"], ["F", "I"])):
                raise PiperError(f"{name}: rank {r} overlaps "
                                 f"{'&'.join(map(str, st))}; a pair is one F and one B or I")
    split: set[tuple[int, int]] = set()
    missing: list[str] = []
    for stage in range(s.stages):
        for mb in range(s.m):
            has = {k for k in KINDS if (stage, k, mb) in seen}
            if "F" not in has:
                missing.append(f"{stage}F{mb}")
            if "B" in has and has & {"I", "W"}:
                raise PiperError(f"{name}: {stage}B{mb} and {stage}I{mb}/{stage}W{mb} both"
                                 " present; a backward is either B or I+W")
            if "B" not in has:
                if {"I", "W"} <= has:
                    split.add((stage, mb))
                elif "I" in has or "W" in has:
                    lack = "W" if "I" in has else "I"
                    missing.append(f"{stage}{lack}{mb}")
                else:
                    missing.append(f"{stage}B{mb}")
    if missing:
        more = f" (and {len(missing) - 8} more)" if len(missing) > 8 else ""
        raise PiperError(f"{name}: missing actions {' '.join(missing[:8])}{more}")
    _check_progress(s, split)


def _check_progress(s: Schedule, split: set[tuple[int, int]]) -> None:
    """Lockstep run: each round every rank whose next step is ready runs it."""
    prog = {r: steps(s.orders.get(r, [])) for r in range(s.p)}
    pos = {r: 0 for r in range(s.p)}
    done: set[tuple[int, str, int]] = set()
    while True:
        ready = []
        for r in range(s.p):
            if pos[r] < len(prog[r]):
                st = prog[r][pos[r]]
                mine = {a.key for a in st}
                if all(d in done for a in st for d in deps(a, s.stages, split) if d not in mine):
                    if any(d in mine for a in st for d in deps(a, s.stages, split)):
                        raise PiperError(f"{s.name}: rank {r} overlaps "
                                         f"{'&'.join(map(str, st))}, but one needs the other")
                    ready.append(r)
        if not ready:
            break
        for r in ready:
            done.update(a.key for a in prog[r][pos[r]])
            pos[r] += 1
    stuck = []
    for r in range(s.p):
        if pos[r] < len(prog[r]):
            st = prog[r][pos[r]]
            waits = sorted({d for a in st for d in deps(a, s.stages, split) if d not in done},
                           key=lambda k: (k[0], k[2], k[1]))
            where = "; ".join(f"{k[0]}{k[1]}{k[2]} (rank {s.placement[k[0]]})" for k in waits)
            stuck.append(f"rank {r} at {'&'.join(map(str, st))} waits for {where}")
    if stuck:
        raise PiperError(f"{s.name}: schedule deadlocks: " + "; ".join(stuck))
