"""The strategy language: a short list of directives, each a pass.

    strategy = [
        piper.place(pp=2),                 # stages over 2 pipeline devices
        piper.split(4),                    # 4 microbatches
        piper.replicate(2),                # data parallel over 2 replicas
        piper.order(schedule="1f1b"),      # or order(text="rank0: 0F0 ...")
    ]

The same list can be written as JSON (`[{"directive": "split", "n": 4},
...]`). `compile_plan` runs the passes the directives stand for, from the
captured graph to one verified program per device; an error names the
directive that caused it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from xdsl.dialects.builtin import ModuleOp

from piper.diagnostics import PiperError


@dataclass(frozen=True)
class Place:
    """Put pipeline stages on `pp` devices ('loop': stage s on s % pp;
    'v': down and back up, two stages per device)."""

    pp: int = 0
    placement: str = "loop"

    def passes(self) -> list[str]:
        return [f'convert-graph-to-dist{{pp={self.pp} placement="{self.placement}"}}']


@dataclass(frozen=True)
class Split:
    """Microbatch the step into `n` microbatches."""

    n: int

    def passes(self) -> list[str]:
        return [f"microbatch{{n={self.n}}}"]


@dataclass(frozen=True)
class Replicate:
    """Data parallelism over `n` replicas (gradients all-reduced)."""

    n: int
    axis: str = "dp"

    def passes(self) -> list[str]:
        return [f'replicate{{n={self.n} axis="{self.axis}"}}']


@dataclass(frozen=True)
class Shard:
    """ZeRO: shard optimizer state (1), gradients (2), parameters (3)
    over the replicas of `axis`."""

    stage: int = 1
    axis: str = "dp"

    def passes(self) -> list[str]:
        return [f'zero{{stage={self.stage} axis="{self.axis}"}}']


@dataclass(frozen=True)
class Recompute:
    """Activation checkpointing: backward re-runs its stage's forward
    (all stages, or the listed ones)."""

    stages: tuple[int, ...] = ()

    def passes(self) -> list[str]:
        if self.stages:
            return [f"recompute{{stages={','.join(map(str, self.stages))}}}"]
        return ["recompute"]


@dataclass(frozen=True)
class SplitBackward:
    """Split each backward into input-grad (I) and weight-grad (W) tasks."""

    def passes(self) -> list[str]:
        return ["split-backward"]


@dataclass(frozen=True)
class Order:
    """Per-device order of tasks: a named schedule or explicit text."""

    schedule: str = ""
    text: str = ""

    def passes(self) -> list[str]:
        if self.text:
            return [f'schedule{{order="{self.text}"}}']
        return [f'schedule{{kind="{self.schedule}"}}']


DIRECTIVES = {"place": Place, "split": Split, "replicate": Replicate, "shard": Shard,
              "recompute": Recompute, "split_backward": SplitBackward, "order": Order}
# Directives apply in level order whatever order the list gives them in.
_RANK = {Recompute: 0, SplitBackward: 0.5, Place: 1, Split: 2, Replicate: 3, Shard: 4, Order: 9}


def place(pp: int = 0, placement: str = "loop") -> Place:
    return Place(pp, placement)


def split(n: int) -> Split:
    return Split(n)


def replicate(n: int, axis: str = "dp") -> Replicate:
    return Replicate(n, axis)


def order(schedule: str = "", text: str = "") -> Order:
    if bool(schedule) == bool(text):
        raise PiperError("order: give exactly one of schedule=NAME or text=ORDER")
    return Order(schedule, text.replace("\n", "; "))


def shard(stage: int = 1, axis: str = "dp") -> Shard:
    return Shard(stage, axis)


def recompute(stages: tuple[int, ...] = ()) -> Recompute:
    return Recompute(tuple(stages))


def split_backward() -> SplitBackward:
    return SplitBackward()


def to_json(directives) -> str:
    out = []
    for d in directives:
        name = next(k for k, v in DIRECTIVES.items() if isinstance(d, v))
        out.append({"directive": name, **asdict(d)})
    return json.dumps(out, indent=1)


def from_json(text: str) -> list:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise PiperError(f"strategy: not valid JSON ({e.msg})", f"line {e.lineno}:{e.colno}") from None
    if not isinstance(items, list):
        raise PiperError("strategy: expected a JSON list of directives")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("directive") not in DIRECTIVES:
            raise PiperError(
                f"strategy: entry {i} must be an object with \"directive\" one of "
                f"{', '.join(DIRECTIVES)}"
            )
        cls = DIRECTIVES[item["directive"]]
        args = {k: tuple(v) if isinstance(v, list) else v
                for k, v in item.items() if k != "directive"}
        known = {f.name for f in fields(cls)}
        bad = sorted(set(args) - known)
        if bad:
            raise PiperError(f"strategy: entry {i} ({item['directive']}) has unknown fields {bad}")
        out.append(cls(**args))
    return out


def describe(d) -> str:
    name = next(k for k, v in DIRECTIVES.items() if isinstance(d, v))
    args = " ".join(f"{k}={v!r}" for k, v in asdict(d).items() if v not in ("", 0))
    return f"{name}({args})" if args else name


def pipeline(directives) -> list[tuple[str, object]]:
    """(pass spec, directive) in the order they run."""
    ds = list(directives)
    for d in ds:
        if type(d) not in _RANK:
            raise PiperError(f"strategy: {d!r} is not a directive")
    if not any(isinstance(d, Place) for d in ds):
        ds.append(Place())
    if sum(isinstance(d, Order) for d in ds) > 1:
        raise PiperError("strategy: more than one order directive")
    ds.sort(key=lambda d: _RANK[type(d)])
    steps: list[tuple[str, object]] = [("pipeline-split", None)]
    for d in ds:
        steps += [(p, d) for p in d.passes()]
    steps += [("lower-dist-to-sched", None), ("verify-plan", None)]
    return steps


def compile_plan(module: ModuleOp, directives) -> ModuleOp:
    """Run the strategy's passes on a captured module (in place)."""
    from xdsl.context import Context
    from xdsl.passes import PassPipeline

    from piper.ir import context
    from piper.passes import all_passes
    from piper.tools.piper_opt import verify_with_locations

    ctx: Context = context()
    available = all_passes()
    for spec, d in pipeline(directives):
        try:
            PassPipeline.parse_spec(available, spec).apply(ctx, module)
            verify_with_locations(module, {})
        except PiperError as e:
            if d is not None:
                e.message = f"directive {describe(d)}: {e.message}"
            raise
    return module
