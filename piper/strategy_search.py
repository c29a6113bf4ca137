"""Strategy search: rank directive lists by the simulator's step time, under a memory budget.

    result = piper.search(model, example_inputs, optimizer=opt, devices=4,
                          batches_per_step=8, memory_per_device=2**30, device="h100")
    print(result.table())                  # ranked, with what was pruned and why
    plan = piper.compile(model, example_inputs, optimizer=opt,
                         strategy=result.best.strategy)

Every candidate trains the same global batch: `batches_per_step` example
batches (the example inputs are one microbatch of one replica, as for
`piper.compile`), so with `dp` replicas each step holds
`batches_per_step / dp` microbatches. The space is the product of

- `pp`: pipeline devices (dividing `devices`, at most the model's "PP"
  regions; dp = devices / pp),
- `zero`: 0 (replicate only, the gradients all-reduced in buckets of
  `BUCKET_BYTES`, 25 MiB) or the ZeRO stage 1, 2, 3 (when dp > 1; ZeRO
  packs each stage's gradients itself),
- `schedule`: the named schedules (when pp > 1: gpipe, 1f1b, interleaved
  and dualpipe-v need two stages a device, zb-h1 and dualpipe-v split the
  backward),
- `recompute`: False / True (every stage recomputes its forward in the
  backward),

narrowed or widened with `space={"pp": [2, 4], "zero": [1, 3], ...}`.
`pinned` directives (e.g. a fixed `order(text=...)` or `fuse()`) are
added to every candidate.

Each candidate is first checked by closed forms that need no compiling:
divisibility (devices, microbatches, regions per device) and a lower bound
of its training-state memory (parameters, gradients and optimizer state of
the largest stage, divided as ZeRO divides them): a candidate whose bound
exceeds the budget is pruned, since its exact peak is at least that. The
rest share one capture: each is compiled (ending with the plan verifier)
and simulated with a cost source (`costs="analytic"` on `device`, the
default; `"profile"` times the stage functions on this CPU), which gives
its step time, bubble and exact peak memory per device; a peak over the
budget prunes it. Candidates that fit are ranked by step time (then peak
memory).
"""

from __future__ import annotations

import itertools
import math
import time
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
from piper.directives.strategy import (
    compile_plan,
    order,
    place,
    recompute,
    replicate,
    shard,
    split,
    split_backward,
)
from piper.passes.func_utils import graph_attrs

SCHEDULES = ("1f1b", "gpipe", "interleaved", "zb-h1", "dualpipe-v")
_TWO_CHUNKS = {"interleaved", "dualpipe-v"}
_SPLIT_BACKWARD = {"zb-h1", "dualpipe-v"}
SPACE_KEYS = ("pp", "zero", "schedule", "recompute")
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
    status: str = "new"  # ranked | pruned | failed
    reason: str = ""
    step_time: float | None = None  # seconds (or units, with unit costs)
    bubble: float | None = None  # mean idle share of the step over devices
    peak_bytes: int | None = None  # the largest device's peak
    bound_bytes: int = 0  # the closed-form lower bound of the peak

    @property
    def name(self) -> str:
        parts = [f"pp{self.pp}", f"dp{self.dp}", f"mb{self.microbatches}"]
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
                "peak_bytes": self.peak_bytes, "bound_bytes": self.bound_bytes}


@dataclass
class SearchResult:
    candidates: list[Candidate]
    device: str
    costs: str
    memory_per_device: int | None
    seconds: float

    @property
    def ranked(self) -> list[Candidate]:
        return [c for c in self.candidates if c.status == "ranked"]

    @property
    def best(self) -> Candidate:
        return self.ranked[0]

    def to_json(self) -> dict:
        return {"device": self.device, "costs": self.costs,
                "memory_per_device": self.memory_per_device, "seconds": self.seconds,
                "candidates": [c.to_json() for c in self.candidates]}

    def table(self) -> str:
        lines = [f"{'#':>3}  {'candidate':<34} {'step':>11} {'bubble':>7} {'peak':>11}  status"]
        for i, c in enumerate(self.candidates):
            rank = str(i + 1) if c.status == "ranked" else "-"
            step = f"{c.step_time * 1e3:.3f} ms" if c.step_time is not None else "-"
            bubble = f"{100 * c.bubble:.1f}%" if c.bubble is not None else "-"
            peak = format_bytes(c.peak_bytes) if c.peak_bytes is not None else "-"
            why = c.status + (f": {c.reason}" if c.reason else "")
            lines.append(f"{rank:>3}  {c.name:<34} {step:>11} {bubble:>7} {peak:>11}  {why}")
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
           "recompute": [False]}
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
        out[key] = list(values)
    return out


def _regions(module) -> int:
    tags = {o.tag_dict().get("PP") for o in module.walk() if isinstance(o, AtenOp)}
    tags.discard(None)
    return max(1, len(tags))


def candidates(devices: int, batches_per_step: int, regions: int, space: dict | None = None,
               pinned: Sequence = ()) -> list[Candidate]:
    """Every candidate of the space that can be built: those failing a closed-
    form check (divisibility, two regions a device for interleaved and
    dualpipe-v, a microbatch per stage for the 1F1B-like schedules) are left
    out; when none is left, search_captured says why."""
    sp = _space(space)
    pps = sp["pp"] or [p for p in range(1, devices + 1) if devices % p == 0]
    out: list[Candidate] = []
    for pp in pps:
        if devices % pp or pp > regions:
            continue
        dp = devices // pp
        if batches_per_step % dp:
            continue
        mb = batches_per_step // dp
        zeros = [z for z in sp["zero"] if dp > 1 or z == 0]
        schedules = [s for s in sp["schedule"]
                     if not (s in _TWO_CHUNKS and regions < 2 * pp)] if pp > 1 else [None]
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
            if dp > 1:
                strategy.append(replicate(dp, bucket_bytes=0 if zero else BUCKET_BYTES))
            if zero:
                strategy.append(shard(zero))
            if schedule is not None:
                strategy.append(order(schedule))
            strategy += list(pinned)
            out.append(Candidate(pp, dp, mb, zero, schedule, again, strategy))
    return out


def _state_bound(module, c: Candidate) -> int:
    """A lower bound of the largest device's peak, from tensors that must be
    live at once: a stage's whole gradient (its backward task returns every
    parameter's gradient together, before any reduction) and the parameters
    the device keeps through the step (their shards under ZeRO-3). Per
    stage, the average over the pp stages (the largest holds at least that)."""
    params = 0
    for fn in module.body.block.ops:
        if isinstance(fn, func.FuncOp) and fn.sym_name.data == "optimizer":
            params += sum(type_bytes(a.type) for i, a in enumerate(fn.body.block.args)
                          if graph_attrs(fn, i).get("kind") == "param")
    kept = params / (c.dp if c.zero >= 3 else 1)
    return int((kept + params) / c.pp)


def search(model, example_inputs, optimizer=None, devices: int = 1, batches_per_step=None,
           memory_per_device=None, device="h100", space: dict | None = None,
           pinned: Sequence = (), loss_fn=None, costs: str = "analytic",
           prune_with_bounds: bool = True) -> SearchResult:
    """Rank the strategies of `space` for `model` on `devices` devices; see
    the module docstring."""
    from piper.frontend.capture import capture  # lazy: imports torch

    captured = capture(model, example_inputs, loss_fn, (), optimizer)
    return search_captured(captured.module, devices, batches_per_step, memory_per_device,
                           device, space, pinned, costs, prune_with_bounds)


def search_captured(module, devices: int, batches_per_step=None, memory_per_device=None,
                    device="h100", space: dict | None = None, pinned: Sequence = (),
                    costs: str = "analytic", prune_with_bounds: bool = True) -> SearchResult:
    """`search` on an already captured step (graph IR), e.g. read by piper-search."""
    start = time.perf_counter()
    devices = _count("devices", devices)
    batches_per_step = _count("batches_per_step",
                              devices if batches_per_step is None else batches_per_step)
    if memory_per_device is not None:
        memory_per_device = _count("memory_per_device", memory_per_device)
    spec = device_spec(device) if isinstance(device, str) else device
    regions = _regions(module)
    cands = candidates(devices, batches_per_step, regions, space, pinned)
    if not cands:
        raise PiperError(
            f"search: no strategy for {devices} devices and {batches_per_step} batches a step: "
            f"pp must divide the devices and be at most the model's {regions} \"PP\" "
            f"region(s), and dp = devices / pp must divide batches_per_step")
    source = cost_source(costs, spec)
    for c in cands:
        if prune_with_bounds and memory_per_device is not None:
            c.bound_bytes = _state_bound(module, c)
            if c.bound_bytes > memory_per_device:
                c.status = "pruned"
                c.reason = (f"training state alone needs at least {c.bound_bytes} B a device "
                            f"(budget {memory_per_device} B)")
                continue
        m = module.clone()
        try:
            compile_plan(m, c.strategy, "search")
            result = simulate_plan(m, source)
        except PiperError as e:
            c.status, c.reason = "failed", str(e).splitlines()[0]
            continue
        c.step_time = result.step_time
        c.bubble = sum(result.bubble_time(d) for d in result.devices) / (
            len(result.devices) * result.step_time) if result.step_time else 0.0
        c.peak_bytes = max(result.peak_mem.values())
        if memory_per_device is not None and c.peak_bytes > memory_per_device:
            c.status = "pruned"
            c.reason = f"peak {c.peak_bytes} B exceeds the budget {memory_per_device} B"
            continue
        c.status = "ranked"
    order = {"ranked": 0, "pruned": 1, "failed": 2}
    # step times equal to 9 digits are a tie (the same schedule priced in
    # another order of additions): the smaller peak ranks first
    cands.sort(key=lambda c: (order[c.status], float(f"{c.step_time:.9g}")
                              if c.step_time is not None else math.inf, c.peak_bytes or 0))
    out = SearchResult(cands, spec.name, costs, memory_per_device,
                       time.perf_counter() - start)
    if not out.ranked:
        _nothing_fits(out)
    return out


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
