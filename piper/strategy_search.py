"""Strategy search: rank directive lists by the simulator's step time, under a memory budget.

    result = piper.search(model, example_inputs, optimizer=opt, devices=4,
                          batches_per_step=8, memory_per_device=2**30, device="h100")
    print(result.table())                  # ranked, with what was pruned and why
    plan = piper.compile(model, example_inputs, optimizer=opt,
                         strategy=result.best.strategy)

Every candidate trains the same global batch: `batches_per_step` example
batches (the example inputs are one microbatch of one replica, as for
`piper.compile`), so with `dp` replicas and `ep` expert ranks (which split
the tokens like replicas) each step holds `batches_per_step / (dp * ep)`
microbatches. The devices are pp x dp x ep x tp; the space is the product of

- `pp`: pipeline devices (dividing `devices`, at most the model's "PP"
  regions; dp = devices / (pp * ep * tp)),
- `zero`: 0 (replicate only, the gradients all-reduced in buckets of
  `BUCKET_BYTES`, 25 MiB) or the ZeRO stage 1, 2, 3 (when dp > 1; ZeRO
  packs each stage's gradients itself),
- `schedule`: the named schedules (when pp > 1: gpipe, 1f1b, interleaved
  and dualpipe-v need two stages a device, zb-h1 and dualpipe-v split the
  backward),
- `recompute`: False / True (every stage recomputes its forward in the
  backward),
- `tp`: tensor_parallel degrees with the automatic plan (default [1]: only
  when asked; left out where the plan finds no Linear pair),
- `ep`: expert_parallel degrees (default [1]; the model needs "EP" regions
  whose experts divide by it),

narrowed or widened with `space={"pp": [2, 4], "zero": [1, 3], ...}`.
`pinned` directives (e.g. a fixed `order(text=...)` or `fuse()`) are
added to every candidate.

Each candidate is first checked by closed forms that need no compiling:
divisibility (devices, microbatches, regions per device) and a lower bound
of its training-state memory (parameters, gradients and optimizer state of
the largest stage, divided as ZeRO divides them): a candidate whose bound
exceeds the budget is pruned, since its exact peak is at least that. The
rest share one capture, and those with the same graph level (pipeline-
split, recompute, split_backward) share that too; `workers` forked
processes (default os.cpu_count(); one with `costs="profile"`) each
compile (ending with the plan verifier) and simulate candidates with the
cost source (`costs="analytic"` on `device`, the default;
`"profile"` times the stage functions on this CPU), which gives its step
time, bubble and exact peak memory per device; a peak over the budget
prunes it. Candidates that fit are ranked by step time (then peak
memory).
"""

from __future__ import annotations

import gc
import itertools
import math
import multiprocessing as mp
import os
import pickle
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

from xdsl.dialects import func

from piper.analysis.cost_model import device_spec
from piper.analysis.plan_sim import simulate_plan
from piper.analysis.task_costs import cost_source
from piper.analysis.timeline import format_bytes
from piper.diagnostics import PiperError
from piper.dialects.dist import type_bytes
from piper.dialects.graph import AtenOp
from piper.directives import strategy as _strategy
from piper.directives.expert import expert_parallel
from piper.directives.strategy import (
    RESHARD,
    Order,
    Place,
    Shard,
    compile_plan,
    compile_strategy,
    graph_directives,
    order,
    place,
    recompute,
    replicate,
    shard,
    split,
    split_backward,
)
from piper.directives.tensor import tensor_parallel
from piper.passes.func_utils import graph_attrs
from piper.passes.tensor_parallel_auto import find_plan

SCHEDULES = ("1f1b", "gpipe", "interleaved", "zb-h1", "dualpipe-v")
_TWO_CHUNKS = {"interleaved", "dualpipe-v"}
_SPLIT_BACKWARD = {"zb-h1", "dualpipe-v"}
SPACE_KEYS = ("pp", "zero", "schedule", "recompute", "tp", "ep")
# gradient buckets of the replicas without ZeRO (replicate bucket_bytes; the
# default of PyTorch's DDP): one all-reduce per gradient costs a collective's
# fixed time per parameter, which on gloo dwarfs the bytes (docs/search.md)
BUCKET_BYTES = 25 << 20


@dataclass
class Candidate:
    """One directive list and what the search found of it."""

    pp: int
    dp: int
    microbatches: int
    zero: int
    schedule: str | None
    recompute: bool
    strategy: list = field(default_factory=list)
    tp: int = 1  # tensor_parallel degree (plan=None, the automatic plan)
    ep: int = 1  # expert_parallel degree
    status: str = "new"  # ranked | pruned | failed
    reason: str = ""
    step_time: float | None = None  # seconds (or units, with unit costs)
    bubble: float | None = None  # mean idle share of the step over devices
    peak_bytes: int | None = None  # the largest device's peak
    bound_bytes: int = 0  # the closed-form lower bound of the peak

    @property
    def name(self) -> str:
        parts = [f"pp{self.pp}", f"dp{self.dp}"]
        parts += [f"ep{self.ep}"] * (self.ep > 1) + [f"tp{self.tp}"] * (self.tp > 1)
        parts.append(f"mb{self.microbatches}")
        if self.zero:
            parts.append(f"zero{self.zero}")
        if self.schedule:
            parts.append(self.schedule)
        if self.recompute:
            parts.append("recompute")
        return " ".join(parts)

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status, "reason": self.reason,
                "strategy": [d.to_dict() for d in self.strategy],
                "step_time": self.step_time, "bubble": self.bubble,
                "peak_bytes": self.peak_bytes, "bound_bytes": self.bound_bytes,
                "pp": self.pp, "dp": self.dp, "ep": self.ep, "tp": self.tp,
                "microbatches": self.microbatches, "zero": self.zero,
                "schedule": self.schedule, "recompute": self.recompute}


@dataclass
class SearchResult:
    candidates: list[Candidate]
    device: str
    costs: str
    memory_per_device: int | None
    seconds: float
    phases: dict = field(default_factory=dict)  # seconds of each part of the search
    workers: int = 1

    @property
    def ranked(self) -> list[Candidate]:
        return [c for c in self.candidates if c.status == "ranked"]

    @property
    def best(self) -> Candidate:
        return self.ranked[0]

    def to_json(self) -> dict:
        return {"device": self.device, "costs": self.costs,
                "memory_per_device": self.memory_per_device, "seconds": self.seconds,
                "workers": self.workers, "phases": self.phases,
                "candidates": [c.to_json() for c in self.candidates]}

    def table(self) -> str:
        lines = [f"{'#':>3}  {'candidate':<40} {'step':>11} {'bubble':>7} {'peak':>11}  status"]
        for i, c in enumerate(self.candidates):
            rank = str(i + 1) if c.status == "ranked" else "-"
            step = f"{c.step_time * 1e3:.3f} ms" if c.step_time is not None else "-"
            bubble = f"{100 * c.bubble:.1f}%" if c.bubble is not None else "-"
            peak = format_bytes(c.peak_bytes) if c.peak_bytes is not None else "-"
            why = c.status + (f": {c.reason}" if c.reason else "")
            lines.append(f"{rank:>3}  {c.name:<40} {step:>11} {bubble:>7} {peak:>11}  {why}")
        if self.ranked:
            lines.append("best: " + _directives_text(self.best.strategy))
        return "\n".join(lines)


def _directives_text(strategy: Sequence) -> str:
    """The directive list as the JSON `strategy=` and piper-run take."""
    return "[" + ", ".join(repr(d) for d in strategy) + "]"


def _count(what: str, v, low: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise PiperError(f"search: {what} must be an integer of at least {low}, got {v!r}")
    return v


def _space(space: dict | None) -> dict:
    out = {"pp": None, "zero": [0, 1, 2, 3], "schedule": list(SCHEDULES),
           "recompute": [False], "tp": [1], "ep": [1]}
    for key, values in (space or {}).items():
        if key not in SPACE_KEYS:
            raise PiperError(f"search: unknown space key '{key}' (one of "
                             f"{', '.join(SPACE_KEYS)})")
        if not isinstance(values, list | tuple) or not values:
            raise PiperError(f"search: space['{key}'] must be a non-empty list, got {values!r}")
        for v in values:
            if key == "pp":
                _count("space['pp'] entries", v)
            elif key == "zero" and (isinstance(v, bool) or v not in (0, 1, 2, 3)):
                raise PiperError(f"search: space['zero'] entries are 0, 1, 2 or 3, got {v!r}")
            elif key == "schedule" and v not in SCHEDULES:
                raise PiperError(f"search: unknown schedule {v!r} in space['schedule'] (one "
                                 f"of {', '.join(SCHEDULES)})")
            elif key == "recompute" and not isinstance(v, bool):
                raise PiperError(f"search: space['recompute'] entries are True or False, "
                                 f"got {v!r}")
            elif key == "tp":
                tensor_parallel(v)  # its own error: "tensor_parallel: n must be ..."
            elif key == "ep":
                expert_parallel(v)
        out[key] = list(dict.fromkeys(values))
    return out


@dataclass(frozen=True)
class ModelFacts:
    """What the closed-form checks read of a captured step, found once per
    search: its "PP" regions, the experts ("EP" tags) of each region, the
    bytes of each parameter, which ones expert_parallel and tensor_parallel
    split."""

    regions: int = 1
    experts: tuple[int, ...] = ()  # distinct "EP" tags of each region with experts
    params: tuple[tuple[str, int], ...] = ()  # (name, bytes), every parameter
    expert_params: frozenset = frozenset()  # read only inside "EP" regions
    tp_params: frozenset | None = None  # split by tensor_parallel(plan=None) at pp=1
    linear_params: frozenset = frozenset()  # every 2-d weight and its bias
    tp_error: str = ""  # why tensor_parallel(plan=None) finds nothing
    numels: tuple[int, ...] = ()  # elements of each parameter (ZeRO shards them evenly)

    @classmethod
    def of(cls, module, want_tp: bool = False) -> ModelFacts:
        fns = {f.sym_name.data: f for f in module.body.block.ops if isinstance(f, func.FuncOp)}
        fwd = fns.get("forward")
        regions, experts = set(), {}
        for o in module.walk():
            if isinstance(o, AtenOp):
                tags = o.tag_dict()
                regions.add(tags.get("PP"))
                if "EP" in tags:
                    experts.setdefault(tags.get("PP"), set()).add(tags["EP"])
        regions.discard(None)
        params, numels = [], []
        opt = fns.get("optimizer")
        if opt is not None:
            for i, a in enumerate(opt.body.block.args):
                if graph_attrs(opt, i).get("kind") == "param":
                    params.append((graph_attrs(opt, i).get("name", ""), type_bytes(a.type)))
                    numels.append(math.prod(a.type.get_shape()))
        expert_params, linear = set(), set()
        if fwd is not None:
            for i, a in enumerate(fwd.body.block.args):
                info = graph_attrs(fwd, i)
                if info.get("kind") != "param":
                    continue
                name = info.get("name", "")
                users = [u.operation for u in a.uses]
                if users and all(isinstance(u, AtenOp) and "EP" in u.tag_dict() for u in users):
                    expert_params.add(name)
                if name.endswith(".weight") and len(a.type.get_shape()) == 2:
                    linear |= {name, name.removesuffix(".weight") + ".bias"}
        tp_params, tp_error = None, ""
        if want_tp and fwd is not None:
            try:
                plan = find_plan(fwd)
            except PiperError as e:  # compiling says it again, per candidate
                tp_error = str(e).splitlines()[0]
            else:
                tp_params = frozenset(f"{path}.{w}" for path, _ in plan
                                      for w in ("weight", "bias"))
                if not plan:
                    tp_error = ("the model has no Linear pair tensor_parallel(plan=None) "
                                "splits (Megatron's colwise -> rowwise pattern)")
        return cls(max(1, len(regions)), tuple(len(e) for e in experts.values()),
                   tuple(params), frozenset(expert_params), tp_params, frozenset(linear),
                   tp_error, tuple(numels))


def candidates(devices: int, batches_per_step: int, regions: int, space: dict | None = None,
               pinned: Sequence = (), facts: ModelFacts | None = None) -> list[Candidate]:
    """Every candidate of the space that can be built: those failing a closed-
    form check (divisibility, ZeRO only where every parameter divides over
    dp, two regions a device for interleaved and exactly two for
    dualpipe-v, a microbatch per stage for the 1F1B-like schedules, experts
    that divide by ep, Linear pairs for tp) are left out; when none is left,
    search_captured says why. The mesh is pp x dp x ep x tp devices; ep
    splits the tokens like dp (a step holds batches_per_step / (dp * ep)
    microbatches a replica), tp does not (its ranks read the same ones)."""
    sp = _space(space)
    facts = facts or ModelFacts(regions=regions)
    pps = sp["pp"] or [p for p in range(1, devices + 1) if devices % p == 0]
    out: list[Candidate] = []
    for pp, tp, ep in itertools.product(pps, sp["tp"], sp["ep"]):
        if devices % (pp * tp * ep) or pp > regions:
            continue
        if tp > 1 and facts.tp_params is not None and not facts.tp_params:
            continue  # no Linear pair to split: compiling would fail
        if ep > 1 and (not facts.experts or any(m % ep for m in facts.experts)):
            continue  # no experts, or not ep equal blocks of them in a region
        dp = devices // (pp * tp * ep)
        if batches_per_step % (dp * ep):
            continue
        mb = batches_per_step // (dp * ep)
        # ZeRO cuts every parameter into dp equal shards: one that does not
        # divide would be shard's error after compiling the rest
        even = all(n % dp == 0 for n in facts.numels)
        zeros = [z for z in sp["zero"] if z == 0 or (dp > 1 and even)]
        # interleaved spreads the regions over the devices, two or more a
        # device; dualpipe-v's V places exactly two stages a device
        schedules = [s for s in sp["schedule"]
                     if not (s in _TWO_CHUNKS and regions < 2 * pp)
                     and not (s == "dualpipe-v" and regions != 2 * pp)] if pp > 1 else [None]
        for zero, schedule, again in itertools.product(zeros, schedules, sp["recompute"]):
            if schedule is not None and mb < pp and schedule != "gpipe":
                continue  # 1F1B-like schedules need a microbatch per stage in flight
            strategy = []
            if again:
                strategy.append(recompute())
            if schedule in _SPLIT_BACKWARD:
                strategy.append(split_backward())
            where = {"pp": pp}
            if schedule == "dualpipe-v":
                where["placement"] = "v"
            strategy.append(place(**where))
            if mb > 1:
                strategy.append(split(mb))
            if dp > 1:  # ZeRO packs its own; an expert's gradient joins no bucket
                bucket = 0 if zero or ep > 1 else BUCKET_BYTES
                strategy.append(replicate(dp, bucket_bytes=bucket))
            if zero:
                strategy.append(shard(zero))
            if schedule is not None:
                strategy.append(order(schedule))
            if ep > 1:
                strategy.append(expert_parallel(ep))
            if tp > 1:
                strategy.append(tensor_parallel(tp))
            strategy += list(pinned)
            out.append(Candidate(pp, dp, mb, zero, schedule, again, strategy, tp=tp, ep=ep))
    return out


def _state_bound(module, c: Candidate, facts: ModelFacts | None = None) -> int:
    """A lower bound of the largest device's peak, from tensors that must be
    live at once: a stage's whole gradient (its backward task returns every
    parameter's gradient together, before any reduction) and the parameters
    the device keeps through the step (their shards under ZeRO-3). Experts
    count 1/ep (a device holds its block of them), the Linears tensor
    parallelism may split 1/tp: at pp=1 exactly the automatic plan's, with
    stages every 2-d weight and its bias (a stage's own plan may split pairs
    the whole model's keeps whole; dividing more keeps the bound below).
    Per device, the average over the pp devices (the largest holds at least
    that). Without ZeRO and at ZeRO-1 a device's gradients all live until
    the optimizer; from ZeRO-2 each stage's are scattered as they come
    (one stage's in flight at a time), so the gradient held is the
    average stage's: a device runs one stage under gpipe, 1f1b and zb-h1,
    else (pp=1, interleaved, dualpipe-v) its share of the regions."""
    facts = facts or ModelFacts.of(module, want_tp=c.tp > 1)
    split = facts.linear_params if c.pp > 1 or facts.tp_params is None else facts.tp_params
    params = 0.0
    for name, size in facts.params:
        if c.ep > 1 and name in facts.expert_params:
            size /= c.ep
        elif c.tp > 1 and name in split:
            size /= c.tp
        params += size
    kept = params / (c.dp if c.zero >= 3 else 1)
    stages = 1
    if c.zero >= 2 and c.schedule not in _strategy._ONE_STAGE_PER_DEVICE:
        stages = math.ceil(facts.regions / c.pp)
    return int((kept + params / stages) / c.pp)


def search(model, example_inputs, optimizer=None, devices: int = 1, batches_per_step=None,
           memory_per_device=None, device="h100", space: dict | None = None,
           pinned: Sequence = (), loss_fn=None, costs: str = "analytic",
           prune_with_bounds: bool = True, workers: int | None = None) -> SearchResult:
    """Rank the strategies of `space` for `model` on `devices` devices; see
    the module docstring."""
    from piper.frontend.capture import capture  # lazy: imports torch

    start = time.perf_counter()
    captured = capture(model, example_inputs, loss_fn, (), optimizer)
    seconds = time.perf_counter() - start
    out = search_captured(captured.module, devices, batches_per_step, memory_per_device,
                          device, space, pinned, costs, prune_with_bounds, workers)
    out.phases = {"capture": seconds, **out.phases}
    out.seconds += seconds
    return out


def search_captured(module, devices: int, batches_per_step=None, memory_per_device=None,
                    device="h100", space: dict | None = None, pinned: Sequence = (),
                    costs: str = "analytic", prune_with_bounds: bool = True,
                    workers: int | None = None) -> SearchResult:
    """`search` on an already captured step (graph IR), e.g. read by piper-search.
    `workers` processes (default: os.cpu_count()) compile and simulate the
    candidates, forked after the capture so they share it."""
    start = time.perf_counter()
    devices = _count("devices", devices)
    batches_per_step = _count("batches_per_step",
                              devices if batches_per_step is None else batches_per_step)
    if memory_per_device is not None:
        memory_per_device = _count("memory_per_device", memory_per_device)
    workers = _count("workers", (os.cpu_count() or 1) if workers is None else workers)
    spec = device_spec(device) if isinstance(device, str) else device
    sp = _space(space)
    for tp in sp["tp"]:
        if devices % tp:
            raise PiperError(f"search: space['tp'] entry {tp} does not divide the {devices} "
                             f"devices")
    for ep in sp["ep"]:
        if devices % ep:
            raise PiperError(f"search: space['ep'] entry {ep} does not divide the {devices} "
                             f"devices")
    facts = ModelFacts.of(module, want_tp=any(t > 1 for t in sp["tp"]))
    if any(e > 1 for e in sp["ep"]) and not facts.experts:
        raise PiperError("search: space['ep'] asks for expert parallelism, but the model has "
                         "no \"EP\" regions (piper.annotate(\"EP\", e) around each expert)")
    cands = candidates(devices, batches_per_step, facts.regions,
                       {k: v for k, v in sp.items() if v is not None}, pinned, facts)
    if not cands:
        raise PiperError(
            f"search: no strategy for {devices} devices and {batches_per_step} batches a step: "
            f"pp x ep x tp must divide the devices, pp be at most the model's {facts.regions} "
            f"\"PP\" region(s), and dp x ep (dp = devices / (pp x ep x tp)) divide "
            f"batches_per_step" + (f"; tp > 1: {facts.tp_error}" if facts.tp_error else "")
            + (f"; ep must divide each region's {'/'.join(map(str, set(facts.experts)))} "
               f"experts" if any(e > 1 for e in sp["ep"]) else ""))
    phases = {"enumerate": time.perf_counter() - start}
    source = cost_source(costs, spec)  # an unknown source: its error before any work
    tick = time.perf_counter()
    todo = []
    for c in cands:
        if prune_with_bounds and memory_per_device is not None:
            c.bound_bytes = _state_bound(module, c, facts)
            if c.bound_bytes > memory_per_device:
                c.status = "pruned"
                c.reason = (f"training state alone needs at least {c.bound_bytes} B a device "
                            f"(budget {memory_per_device} B)")
                continue
        todo.append(c)
    phases["bounds"] = time.perf_counter() - tick
    tick = time.perf_counter()
    # profiled costs time stage functions on this CPU: one at a time
    spent = _evaluate_all(module, todo, source, workers if costs != "profile" else 1)
    phases["compile+simulate"] = time.perf_counter() - tick
    phases["compile (summed over workers)"] = spent[0]
    phases["simulate (summed over workers)"] = spent[1]
    for c in todo:
        if c.status != "failed":
            if memory_per_device is not None and c.peak_bytes > memory_per_device:
                c.status = "pruned"
                c.reason = f"peak {c.peak_bytes} B exceeds the budget {memory_per_device} B"
            else:
                c.status = "ranked"
    _rank(cands)
    # candidates compile without the structural verification of their IR
    # (about half of compiling); the one returned first is compiled again
    # with it, and one that fails it gives way to the next
    tick = time.perf_counter()
    for c in list(cands):
        if c.status != "ranked":
            break
        try:
            compile_plan(module.clone(), c.strategy, "search")
        except PiperError as e:
            c.status, c.reason = "failed", str(e).splitlines()[0]
            continue
        break
    _rank(cands)
    phases["verify the best"] = time.perf_counter() - tick
    out = SearchResult(cands, spec.name, costs, memory_per_device,
                       time.perf_counter() - start, phases, workers)
    if not out.ranked:
        _nothing_fits(out)
    return out


# Candidates lower only data-parallel replica 0's programs (every replica's
# program is the same up to device numbers, so the simulator's step time and
# peaks are the whole plan's; test_search checks it): a pp x dp plan lowers
# and simulates pp programs, not pp x dp. The best is compiled whole.
_REPLICAS = "first"
# A candidate compiles in parts: the graph level up to ZeRO-3's
# re-computing (pipeline-split, recompute) and from it (split_backward,
# precision); place, split and replicate; shard; the order and the rest,
# lowered and simulated. Candidates that agree on a part's directives
# (and so on every part before it) share it: a forked child compiles it
# once, in place, and its own children go on from there. A work unit is the
# candidates of one graph level; within it 1f1b and gpipe share all but the
# order, the ZeRO stages their replicas. Forked children share their
# parent's pages copy-on-write instead of cloning the IR (a 32-layer GPT's
# clone is about 1 s of the 4 s a candidate took alone).
_PARTS = ((None, RESHARD), (RESHARD, Place), (Place, Shard), (Shard, Order), (Order, None))
_FORK_PER_CANDIDATE = hasattr(os, "fork")  # without fork: each whole, on a clone
# False: no two candidates share a part (each is its own work unit)
_SHARE_PARTS = True


def _graph_key(module, strategy) -> tuple:
    """What decides a candidate's first part: the pipeline-split it gets
    and the directives that rewrite stage functions before ZeRO-3's
    re-computing (recompute)."""
    items = [_strategy.Item(d, i, d) for i, d in enumerate(strategy)]
    return (repr(_strategy._pipeline_split(module, items)),
            tuple(repr(d) for d in graph_directives(strategy)
                  if _strategy._RANK[type(d)] < _strategy._rank_of(RESHARD)))


def _part_key(directives, level: int) -> tuple:
    """The directives of part `level` (a `_PARTS` index) as text: the first
    part's is the work unit's (`_graph_key`), so () here; the rest of the
    graph level's, the graph directives from RESHARD on (ZeRO-3's shard and
    replicate among them)."""
    start, stop = _PARTS[level]
    if start is None:
        return ()
    low = _strategy._rank_of(start)
    high = math.inf if stop is None else _strategy._rank_of(stop)
    if high <= 1:
        return tuple(repr(d) for d in graph_directives(directives)
                     if _strategy._RANK[type(d)] >= low)
    return tuple(repr(d) for d in directives if low <= _strategy._RANK[type(d)] < high)


def _failed(error: PiperError, compiling: float, simulating: float = 0.0) -> tuple:
    return None, None, None, str(error).splitlines()[0], compiling, simulating


def _evaluate_unit(module, strategies: dict[int, list], source) -> dict[int, tuple]:
    """Compile one work unit's candidates (strategies by index) on the
    captured step and simulate them with the cost source `source`: for
    each, (step time, bubble, peak, error or None, compile s, simulate s).
    In forked children sharing their parts (`_descend`), or without fork
    each on a clone."""
    if not _FORK_PER_CANDIDATE:
        return {i: _compile_and_simulate(module.clone(), s, source)
                for i, s in strategies.items()}
    return _in_child(lambda: _descend(module, strategies, 0, source))


def _descend(m, todo: dict[int, list], level: int, source) -> dict[int, tuple]:
    """Compile part `level` of every candidate of `todo` (strategies by
    index) on `m`, which holds the parts before it, and go on to the end:
    candidates that agree on the part compile it once, each such group in
    a forked child but the last, which has `m` to itself."""
    groups: dict[tuple, dict[int, list]] = {}
    for i, strategy in todo.items():
        groups.setdefault(_part_key(strategy, level), {})[i] = strategy
    out: dict[int, tuple] = {}
    for n, group in enumerate(groups.values()):
        if n == len(groups) - 1:
            out.update(_compile_part(m, group, level, source))
        else:
            out.update(_in_child(lambda g=group: _compile_part(m, g, level, source)))
    return out


def _compile_part(m, group: dict[int, list], level: int, source) -> dict[int, tuple]:
    """`_descend` for one group that agrees on part `level`, in place on `m`;
    a shared part's seconds are divided among the group."""
    start, stop = _PARTS[level]
    strategy = next(iter(group.values()))
    if stop is None:  # the last part: the same directives, the same result
        return dict.fromkeys(group, _compile_and_simulate(m, strategy, source, start))
    tick = time.perf_counter()
    try:
        compile_strategy(m, strategy, "search", verify_ir=False, start=start, stop=stop)
    except PiperError as e:
        return {i: _failed(e, (time.perf_counter() - tick) / len(group)) for i in group}
    spent = (time.perf_counter() - tick) / len(group)
    rest = _descend(m, group, level + 1, source)
    return {i: r[:4] + (r[4] + spent, r[5]) for i, r in rest.items()}


def _compile_and_simulate(m, directives, source, start=None) -> tuple:
    """`_evaluate_unit`'s result for directives compiled on `m`, in place
    (from part `start` on, when given)."""
    tick = time.perf_counter()
    try:
        compile_strategy(m, directives, "search", verify_ir=False, replicas=_REPLICAS,
                         start=start)
    except PiperError as e:
        return _failed(e, time.perf_counter() - tick)
    mid = time.perf_counter()
    try:
        result = simulate_plan(m, source)
    except PiperError as e:
        return _failed(e, mid - tick, time.perf_counter() - mid)
    bubble = sum(result.bubble_time(d) for d in result.devices) / (
        len(result.devices) * result.step_time) if result.step_time else 0.0
    return (result.step_time, bubble, max(result.peak_mem.values()), None, mid - tick,
            time.perf_counter() - mid)


def _in_child(fn):
    """fn() in a forked child process, its (picklable) result sent back over
    a pipe: the child changes the parent's objects only in its own
    copy-on-write pages. An error that is not the candidate's own (those
    fn returns) comes back as a RuntimeError with the child's traceback."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        try:
            gc.disable()  # short-lived: the parent's heap is not traversed (nor copied)
            os.close(read)
            try:
                out = ("ok", fn())
            except BaseException:  # noqa: BLE001 - reported to the parent
                out = ("error", traceback.format_exc())
            with os.fdopen(write, "wb") as f:
                f.write(pickle.dumps(out))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError("search: a candidate's compiler process died without a result")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise RuntimeError(f"search: compiling a candidate failed:\n{value}")
    return value


# The work forked workers inherit: (captured module, strategies, cost source).
_SHARED: tuple | None = None


def _work(unit: list[int]) -> dict[int, tuple]:
    module, strategies, source = _SHARED
    return _evaluate_unit(module, {i: strategies[i] for i in unit}, source)


def _evaluate_all(module, todo: list[Candidate], source, workers: int) -> tuple[float, float]:
    """Fill in each candidate's step time, bubble and peak (or mark it
    failed), in `workers` forked processes when more than one; return the
    compile and simulate seconds summed over them. Work goes out in units,
    the candidates of one graph level (`_PARTS`), the largest first."""
    global _SHARED
    units: dict[tuple, list[int]] = {}
    for i, c in enumerate(todo):
        key = _graph_key(module, c.strategy) if _SHARE_PARTS else (str(i),)
        units.setdefault(key, []).append(i)
    work = sorted(units.values(), key=lambda u: (-sum(1 + todo[i].microbatches * todo[i].pp
                                                        / 8 for i in u), u))
    results: dict[int, tuple] = {}
    if workers > 1 and len(work) > 1 and "fork" in mp.get_all_start_methods():
        _SHARED = (module, [c.strategy for c in todo], source)
        try:
            with mp.get_context("fork").Pool(min(workers, len(work))) as pool:
                for out in pool.imap_unordered(_work, work, chunksize=1):
                    results.update(out)
        finally:
            _SHARED = None
    else:
        for unit in work:
            results.update(_evaluate_unit(module, {i: todo[i].strategy for i in unit}, source))
    spent = [0.0, 0.0]
    for i, c in enumerate(todo):
        c.step_time, c.bubble, c.peak_bytes, error, compiling, simulating = results[i]
        spent[0] += compiling
        spent[1] += simulating
        if error is not None:
            c.status, c.reason = "failed", error
    return spent[0], spent[1]


def _rank(cands: list[Candidate]) -> None:
    """Ranked first, by step time (equal to 9 digits is a tie, the same
    schedule priced in another order of additions: the smaller peak first),
    then the pruned, then the failed."""
    rank = {"ranked": 0, "pruned": 1, "failed": 2}
    cands.sort(key=lambda c: (rank[c.status], float(f"{c.step_time:.9g}")
                              if c.step_time is not None else math.inf, c.peak_bytes or 0))


def _nothing_fits(result: SearchResult) -> None:
    head = f"search: no candidate fits in {result.memory_per_device} B a device"
    built = [c for c in result.candidates if c.peak_bytes is not None]
    if not built:
        failed = [c for c in result.candidates if c.status == "failed"]
        if failed and len(failed) == len(result.candidates):
            raise PiperError(f"search: every candidate failed to compile; the first "
                             f"({failed[0].name}): {failed[0].reason}")
        small = min(result.candidates, key=lambda c: c.bound_bytes)
        raise PiperError(f"{head}; the smallest lower bound is {small.bound_bytes} B "
                         f"({small.name}): {_lower_it(small)} would lower it")
    small = min(built, key=lambda c: c.peak_bytes)
    raise PiperError(f"{head}; the smallest peak found is {small.peak_bytes} B "
                     f"({small.name}): {_lower_it(small)} would lower it")


def _lower_it(c: Candidate) -> str:
    if c.zero < 3 and c.dp > 1:
        return "a higher ZeRO stage (shard(3))"
    if not c.recompute:
        return "recompute() or more pipeline stages"
    return "more devices"
