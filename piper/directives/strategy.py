"""The strategy language: a short list of directives, each a pass.

Core directives select what they apply to with a filter (see
piper/tasks/filters.py) and say exactly what happens:

    strategy = [
        piper.place({"PP": 0}, devices=[0]),        # stage 0 on pipeline device 0
        piper.place({"PP": 1}, devices=[1]),
        piper.split(4),                             # 4 microbatches
        piper.replicate(n=2, bucket_bytes=1 << 20), # data parallel, bucketed all-reduce
        piper.shard(stage=1),                       # ZeRO-1
        piper.order(0, ["0F0", "0F1", {"PP": 0, "PASS": "B"}]),   # device 0's task order
        piper.order(1, [{"PASS": "F", "MB": 0}, ...]),
    ]

Convenient forms are generators that expand into core directives:
`place(pp=2)` / `place(pp=2, placement="v")` into one `place` per stage,
`order(schedule="1f1b")` / `order(text="rank0: ...")` into one `order` per
pipeline device. `expand(strategy, model)` returns the core list; it prints
as JSON (`to_json`) and compiles, read back (`from_json`), to the identical
plan. A JSON strategy is a list of objects, `{"directive": "place",
"filter": {"PP": 1}, "devices": [1]}`, and may live in a file.

`compile_plan` runs the passes the directives stand for, from the captured
graph to one verified program per device. An error names the directive
that caused it: its position in the list (`strategy[3]`) and its text.
Full reference: docs/directives.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import VerifyException

from piper.diagnostics import PiperError, first_line, op_location
from piper.directives.base import Directive, json_value
from piper.directives.expert import ExpertParallel, expert_parallel
from piper.directives.tensor import TensorParallel, tensor_parallel
from piper.directives.fuse import Fuse, fuse
from piper.directives.offload import Offload, offload
from piper.directives.precision import Precision, precision
from piper.directives.options import MAX_COUNT, choice, filter_of, flag, identifier, integer
from piper.dialects.graph import AtenOp
from piper.ir import context, gc_paused, verify_with_locations
from piper.passes.func_utils import functions
from piper.passes.graph_to_dist import ANNOTATE_PP
from piper.passes.graph_to_dist import placement as loop_or_v
from piper.passes.lower_dist_to_sched import LowerDistToSched
from piper.passes.order import Order as OrderPass
from piper.passes.overlap_pairs import OverlapPairs
from piper.passes.pipeline_split import STAGE_TAG, PipelineSplit
from piper.passes.place import Place as PlacePass
from piper.passes.recompute import Recompute as RecomputePass
from piper.passes.shard import Shard as ShardPass
from piper.passes.split_backward import SplitBackward as SplitBackwardPass
from piper.passes.split_replicate import Replicate as ReplicatePass
from piper.passes.split_replicate import Split as SplitPass
from piper.passes.verify_plan import VerifyPlan
from piper.tasks.filters import ALL, Filter, check_names, split_tokens, stage_tags
from piper.tasks.orders import format_orders, parse_entry, parse_orders
from piper.tasks.schedules import NAMED, named_orders

# An order entry: one filter, or an overlapped pair of them.
Entry = tuple[Filter, ...]


# ---------------------------------------------------------------- directives


@dataclass(frozen=True, repr=False)
class Place(Directive):
    """Core: the stages `filter` selects run on pipeline device `devices[0]`
    (tasks on compute stream `stream`). Generator (no filter): stages over
    `pp` devices, 'loop' (stage s on s % pp) or 'v' (down and back up)."""

    directive: ClassVar[str] = "place"

    filter: Filter | None = None
    devices: tuple[int, ...] = ()
    stream: str = "compute"
    pp: int = 0
    placement: str = "loop"

    @property
    def generator(self) -> bool:
        return self.filter is None


@dataclass(frozen=True, repr=False)
class Split(Directive):
    """Microbatch the step into `n` microbatches along the batch dim."""

    directive: ClassVar[str] = "split"

    n: int
    filter: Filter = ALL
    dim: int = 0


@dataclass(frozen=True, repr=False)
class Replicate(Directive):
    """Data parallelism over `n` replicas on mesh axis `axis`: gradients
    all-reduced on `stream`, packed into buckets of `bucket_bytes`."""

    directive: ClassVar[str] = "replicate"

    n: int
    axis: str = "dp"
    filter: Filter = ALL
    stream: str = "comm"
    bucket_bytes: int = 0


@dataclass(frozen=True, repr=False)
class Shard(Directive):
    """ZeRO over the replicas of `axis`: optimizer state (1), gradients (2),
    parameters (3) of the stages `filter` selects."""

    directive: ClassVar[str] = "shard"

    stage: int = 1
    axis: str = "dp"
    filter: Filter = ALL
    gather_stream: str = "comm"
    reduce_stream: str = "comm"
    prefetch: int = -1
    pack: bool = True  # packed collectives: one gather per task, one scatter per stage
    # stage 3: the backward gathers parameters again; nothing computed from
    # them alone is kept from the forward (recompute{only=params})
    reshard_after_forward: bool = True


@dataclass(frozen=True, repr=False)
class Recompute(Directive):
    """Activation checkpointing: backward re-runs its stage's forward
    (all stages, or the listed ones)."""

    directive: ClassVar[str] = "recompute"

    stages: tuple[int, ...] = ()

    def passes(self) -> list[RecomputePass]:
        return [RecomputePass(stages=self.stages)]


@dataclass(frozen=True, repr=False)
class SplitBackward(Directive):
    """Split each backward into input-grad (BI) and weight-grad (BW) tasks."""

    directive: ClassVar[str] = "split_backward"

    def passes(self) -> list[SplitBackwardPass]:
        return [SplitBackwardPass()]


@dataclass(frozen=True, repr=False)
class Order(Directive):
    """Core: pipeline device `device` runs its tasks in the order of `tasks`
    (filters; a pair runs overlapped). Generator: a named `schedule`, or
    `text` (`rank0: 0F0 0B0; rank1: ...`), for every device."""

    directive: ClassVar[str] = "order"

    schedule: str = ""
    text: str = ""
    device: int = -1
    tasks: tuple[Entry, ...] = ()

    @property
    def generator(self) -> bool:
        return self.device < 0

    def _json_option(self, name: str, v):
        if name == "tasks":  # an entry is one filter or an overlapped pair
            return [_entry_json(e) for e in v]
        return super()._json_option(name, v)


DIRECTIVES = {"place": Place, "split": Split, "replicate": Replicate, "shard": Shard,
              "recompute": Recompute, "split_backward": SplitBackward, "order": Order}
# Directives apply in level order whatever order the list gives them in.
_RANK = {Recompute: 0, SplitBackward: 0.5, Place: 1, Split: 2, Replicate: 3, Shard: 4, Order: 9}
# Kernel fusion rewrites the final stage functions, so it runs after every
# directive that changes them (piper/directives/fuse.py).
DIRECTIVES["fuse"] = Fuse
_RANK[Fuse] = 10
# overlap-pairs comes with `order`, after the passes that cut tasks into pieces
_OVERLAP_RANK = 9.9
# Expert parallelism cuts scheduled F/B tasks in place: after the order,
# before fusion (piper/directives/expert.py).
DIRECTIVES["expert_parallel"] = ExpertParallel
_RANK[ExpertParallel] = 9.5
# Tensor parallelism cuts scheduled tasks at their partial sums in place:
# after the order and after expert_parallel (whose cut functions, experts'
# included, it splits; tp is the innermost mesh axis, pp x dp x ep x tp),
# before fusion (piper/directives/tensor.py).
DIRECTIVES["tensor_parallel"] = TensorParallel
_RANK[TensorParallel] = 9.6
# Mixed precision re-types the stage functions: a graph-level directive,
# after recompute and split_backward (piper/directives/precision.py).
DIRECTIVES["precision"] = Precision
_RANK[Precision] = 0.75
# Offload rewrites the lowered programs: a core directive with no
# dist-level pass; its pass runs after lower-dist-to-sched
# (piper/directives/offload.py).
DIRECTIVES["offload"] = Offload
_RANK[Offload] = 11


# ---------------------------------------------------------------- builders


# Every option is checked here, where the directive is made (Python or JSON):
# piper/directives/options.py.
_int = integer


def _stage_filter(what: str, spec) -> Filter:
    f = filter_of(f"{what}: filter", spec)
    bad = [k for k in ("PASS", "MB") if k in f.names]
    if bad:
        raise PiperError(f"{what}: filter {f} selects stages; {bad[0]} is a property of tasks "
                         "(use PP and the model's tags)")
    return f


def place(filter=None, devices=None, stream: str = "compute", *, pp: int | None = None,  # noqa: A002
          placement: str = "loop") -> Place:
    """`place({"PP": 1}, devices=[1])`, or the generator `place(pp=2, placement="v")`
    (`place()`: one device per stage)."""
    if isinstance(filter, int) and not isinstance(filter, bool) and devices is None:
        pp, filter = filter, None  # place(2): the old positional pp
    return _place(filter, devices, stream, pp, placement)


def _place(filter=None, devices=None, stream: str = "compute", pp: int | None = None,  # noqa: A002
           placement: str = "loop") -> Place:
    """`place` without the positional shortcut (what the JSON form means)."""
    identifier("place: stream", stream)
    if filter is None:
        if devices is not None:
            raise PiperError("place: devices=... needs a filter, e.g. place({\"PP\": 1}, devices=[1])")
        pp = 0 if pp is None else _int("place: pp", pp, 1, MAX_COUNT)
        choice("place: placement", placement, ("loop", "v"))
        return Place(None, (), stream, pp, placement)
    if pp is not None:
        raise PiperError("place: give a filter and devices, or pp=N, not both")
    if placement != "loop":
        raise PiperError("place: placement= goes with pp=N (the generator), not with a filter")
    f = _stage_filter("place", filter)
    if isinstance(devices, int) and not isinstance(devices, bool):
        devices = [devices]
    if not isinstance(devices, list | tuple) or len(devices) != 1:
        raise PiperError(f"place: devices must name one pipeline device, as [d] (a stage runs "
                         f"on one; use replicate for more), got {devices!r}")
    _int("place: devices[0]", devices[0], 0, MAX_COUNT - 1)
    return Place(f, tuple(devices), stream)


def split(n: int, filter="*", dim: int = 0) -> Split:  # noqa: A002
    """Microbatch every stage's step into `n` microbatches along the batch dim."""
    _int("split: n", n, 1, MAX_COUNT)
    if _int("split: dim", dim) != 0:
        raise PiperError(f"split: dim must be 0 (only dim=0, the batch dim, can be split), "
                         f"got {dim}")
    return Split(n, _stage_filter("split", filter), dim)


def replicate(n: int | None = None, axis: str = "dp", *, filter="*",  # noqa: A002
              devices: int | None = None, stream: str = "comm", bucket_bytes: int = 0) -> Replicate:
    """Data parallelism over `n` (or `devices`) replicas."""
    if n is None and devices is None:
        raise PiperError("replicate: give n (the number of replicas)")
    if n is not None:
        _int("replicate: n", n, 1, MAX_COUNT)
    if devices is not None:
        _int("replicate: devices", devices, 1, MAX_COUNT)
    if n is not None and devices is not None and n != devices:
        raise PiperError(f"replicate: n={n} and devices={devices} disagree")
    n = n if n is not None else devices
    identifier("replicate: axis", axis)
    identifier("replicate: stream", stream)
    _int("replicate: bucket_bytes", bucket_bytes)
    return Replicate(n, axis, _stage_filter("replicate", filter), stream, bucket_bytes)


def shard(stage: int = 1, axis: str = "dp", *, filter="*", gather_stream: str = "comm",  # noqa: A002
          reduce_stream: str = "comm", prefetch: int = -1, pack: bool = True,
          reshard_after_forward: bool = True) -> Shard:
    """ZeRO-`stage` (1: optimizer state, 2: + gradients, 3: + parameters).
    `pack`: move a task's parameter shards in one all_gather and a stage's
    gradients in one reduce_scatter (per microbatch from stage 2), packed,
    instead of one collective per tensor. `reshard_after_forward` (stage
    3): each backward gathers its parameters again and re-computes what
    its forward computed from them alone (a transposed or cast weight), so
    no full parameter lives from a forward to its backward; False keeps
    the forward's (less communication, more memory)."""
    if not isinstance(stage, int) or isinstance(stage, bool) or stage not in (1, 2, 3):
        raise PiperError(f"shard: stage must be 1, 2 or 3, got {stage!r}")
    identifier("shard: axis", axis)
    identifier("shard: gather_stream", gather_stream)
    identifier("shard: reduce_stream", reduce_stream)
    _int("shard: prefetch", prefetch, -1)
    if prefetch >= 0 and stage != 3:
        raise PiperError(f"shard: prefetch gathers parameters early, so it needs stage=3; got "
                         f"stage={stage}")
    flag("shard: pack", pack)
    flag("shard: reshard_after_forward", reshard_after_forward)
    return Shard(stage, axis, _stage_filter("shard", filter), gather_stream, reduce_stream,
                 prefetch, pack, reshard_after_forward)


def _entries(tasks) -> tuple[Entry, ...]:
    if isinstance(tasks, str):
        try:
            return tuple(parse_entry(t) for t in split_tokens(tasks))
        except PiperError as e:
            raise PiperError(f"order: tasks: {e.message.removeprefix('order: ')}") from None
    if not isinstance(tasks, list | tuple):
        raise PiperError(f"order: tasks must be a list of task filters (or their text, "
                         f"\"0F0 0B0\"), got {tasks!r}")
    out = []
    for i, t in enumerate(tasks):
        if isinstance(t, list | tuple):
            if not 1 <= len(t) <= 2:
                raise PiperError(f"order: tasks[{i}]: an overlapped pair has two tasks, "
                                 f"got {list(t)}")
            out.append(tuple(filter_of(f"order: tasks[{i}]", x) for x in t))
        else:
            out.append((filter_of(f"order: tasks[{i}]", t),))
    return tuple(out)


def order(device=None, tasks=None, *, schedule: str = "", text: str = "") -> Order:
    """`order(0, ["0F0", {"PP": 0, "PASS": "B"}])`: device 0's task order; or the
    generators `order(schedule="1f1b")`, `order(text="rank0: 0F0 ...")`."""
    if isinstance(device, str) and tasks is None and not schedule and not text:
        schedule, device = device, None  # order("1f1b")
    return _order(device, tasks, schedule, text)


def _order(device=None, tasks=None, schedule: str = "", text: str = "") -> Order:
    """`order` without the positional shortcut (what the JSON form means)."""
    if not isinstance(schedule, str):
        raise PiperError(f"order: schedule must be the name of a schedule ({', '.join(NAMED)}), "
                         f"got {schedule!r}")
    if not isinstance(text, str):
        raise PiperError(f"order: text must be order text ('rank0: 0F0 0B0; rank1: ...'), "
                         f"got {text!r}")
    if device is None:
        if tasks is not None:
            raise PiperError("order: tasks=[...] needs a device, e.g. order(0, [\"0F0\", ...])")
        if bool(schedule) == bool(text):
            raise PiperError("order: give exactly one of schedule=NAME or text=ORDER")
        if schedule:
            choice("order: schedule", schedule, tuple(NAMED))
        else:
            try:
                parse_orders(text)  # linear; a bad order is refused where it is written
            except PiperError as e:
                raise PiperError(f"order: text: {e.message.removeprefix('order: ')}") from None
        return Order(schedule, text.replace("\n", "; "))
    if schedule or text:
        raise PiperError("order: give a device and its tasks, or schedule= / text=, not both")
    _int("order: device", device, 0, MAX_COUNT - 1)
    entries = _entries(tasks if tasks is not None else ())
    if not entries:
        raise PiperError(f"order: device {device} has an empty task list")
    return Order(device=device, tasks=entries)


def recompute(stages: tuple[int, ...] = ()) -> Recompute:
    if not isinstance(stages, list | tuple | range):
        raise PiperError(f"recompute: stages must be a list of stage numbers, got {stages!r}")
    return Recompute(tuple(_int(f"recompute: stages[{i}]", s, 0, MAX_COUNT - 1)
                           for i, s in enumerate(stages)))


def split_backward() -> SplitBackward:
    return SplitBackward()


# ---------------------------------------------------------------- JSON / text


def _name_of(d) -> str:
    for k, v in DIRECTIVES.items():
        if type(d) is v:
            return k
    raise PiperError(f"strategy: {d!r} is not a directive")


_DEFAULTS = {cls: {f.name: f.default for f in fields(cls)} for cls in
             (Place, Split, Replicate, Shard, Order)}


def _entry_json(e: Entry):
    one = [json_value(f) for f in e]
    return one[0] if len(one) == 1 else one


def to_dict(d) -> dict:
    """One directive as a JSON object (fields left at their default omitted)."""
    _name_of(d)
    return d.to_dict()


def to_json(directives, compact: bool = True) -> str:
    """The strategy as JSON text: one directive per line (compact), or indented."""
    items = [to_dict(d) for d in directives]
    if not compact:
        return json.dumps(items, indent=1)
    return "[\n" + ",\n".join(" " + json.dumps(i) for i in items) + "\n]\n"


# The JSON form of each directive is made by the same builders as the
# Python form (without the positional shortcuts: `"filter": 2` is not pp=2).
_BUILDERS = {"place": _place, "split": split, "replicate": replicate, "shard": shard,
             "order": _order, "recompute": recompute, "split_backward": split_backward,
             "fuse": fuse, "expert_parallel": expert_parallel,
             "tensor_parallel": tensor_parallel, "precision": precision, "offload": offload}


def from_dict(item, where: str = "entry 0"):
    """One directive from its JSON object."""
    kind = item.get("directive") if isinstance(item, dict) else None
    if not isinstance(kind, str) or kind not in DIRECTIVES:
        raise PiperError(
            f"strategy: {where} must be an object with \"directive\" one of "
            f"{', '.join(DIRECTIVES)}")
    cls = DIRECTIVES[kind]
    args = {k: v for k, v in item.items() if k != "directive"}
    known = {f.name for f in fields(cls)} | ({"devices"} if cls is Replicate else set())
    bad = sorted(set(args) - known)
    if bad:
        raise PiperError(f"strategy: {where} ({kind}) has unknown fields {bad}")
    try:
        return _BUILDERS[kind](**args)
    except TypeError as e:
        raise PiperError(f"strategy: {where} ({kind}): {e}") from None
    except PiperError as e:
        e.message = f"strategy: {where}: {e.message}"
        raise


# A strategy nests a few levels (list, directive, tasks, pair, filter, values);
# deeper JSON is refused before json.loads recurses into it.
MAX_JSON_DEPTH = 32
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_depth(text: str, source: str) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH, at the bracket that
    goes too deep (line:col). Cheap when there are few brackets."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                line = text.count("\n", 0, m.start()) + 1
                col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
                raise PiperError(f"strategy: JSON nested deeper than {MAX_JSON_DEPTH} levels",
                                 f"{source}:{line}:{col}")
        elif c in "]}":
            depth -= 1


def from_json(text: str, source: str = "strategy") -> list:
    """Directives from JSON text (a list of objects)."""
    _check_depth(text, source)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise PiperError(f"strategy: not valid JSON ({e.msg})",
                         f"{source}:{e.lineno}:{e.colno}") from None
    if not isinstance(items, list):
        raise PiperError("strategy: expected a JSON list of directives", source)
    try:
        return [from_dict(item, f"entry {i}") for i, item in enumerate(items)]
    except PiperError as e:
        e.location = e.location or source  # the file the entry is in
        raise


def load(strategy) -> tuple[list, str]:
    """(directives, source name) from a list, JSON text, or a JSON file path."""
    if isinstance(strategy, str | os.PathLike):
        s = os.fspath(strategy)
        if not s.lstrip().startswith(("[", "{")):  # not JSON text: a file path
            try:
                with open(s, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise PiperError(f"strategy: cannot read {s}: {e.strerror}") from None
            try:
                text = data.decode()
            except UnicodeDecodeError as e:
                line = data.count(b"\n", 0, e.start) + 1
                raise PiperError(f"strategy: the file is not UTF-8 text (byte "
                                 f"0x{data[e.start]:02x} on line {line})", s) from None
            return from_json(text, s), s
        return from_json(s), "strategy"
    if strategy is None:
        return [], "strategy"
    if isinstance(strategy, list | tuple):
        return list(strategy), "strategy"
    hint = " (put it in a list: [...])" if type(strategy) in _RANK else ""
    raise PiperError(f"strategy must be a list of directives, JSON text, or the path of a "
                     f".json file; got {strategy!r} ({type(strategy).__name__}){hint}")


def describe(d) -> str:
    """Short text of a directive for messages: `place({"PP": 1}, devices=[1])`."""
    name = _name_of(d)
    if type(d) not in _DEFAULTS:
        args = " ".join(f"{k}={v!r}" for k, v in asdict(d).items() if v not in ("", 0, None, ()))
        return f"{name}({args})" if args else name
    parts = []
    for k, default in _DEFAULTS[type(d)].items():
        v = getattr(d, k)
        if v == default:
            continue
        if isinstance(v, Filter):
            parts.append(str(v) if k == "filter" and type(d) is Place else f"{k}={v}")
        elif k == "tasks":
            toks = ["&".join(f.text() for f in e) for e in v]
            shown = " ".join(toks[:6]) + (f" ... ({len(toks)} entries)" if len(toks) > 6 else "")
            parts.append(f"[{shown}]")
        elif k == "device":
            parts.append(str(v))
        elif isinstance(v, tuple):
            parts.append(f"{k}={list(v)}")
        else:
            parts.append(f"{k}={v!r}")
    return f"{name}({', '.join(parts)})"


# ---------------------------------------------------------------- expansion


@dataclass
class ModelInfo:
    """What expansion needs to know of the model: its stages, the tags each
    carries, and whether backwards are split into BI/BW."""

    stages: int
    tags: dict[int, dict[str, frozenset[int]]] = field(default_factory=dict)
    split_backward: bool = False  # the module has I/W functions already

    @staticmethod
    def of(module: ModuleOp) -> ModelInfo:
        tags = stage_tags(module)
        forwards = [s for s in tags if _has_fn(module, f"F{s}")]
        if not forwards:
            raise PiperError("strategy: the module has no stage functions (@F0, ...)")
        return ModelInfo(max(forwards) + 1, tags, _has_fn(module, "I0"))

    @property
    def tag_names(self) -> set[str]:
        return {k for t in self.tags.values() for k in t}

    def stages_of(self, f: Filter) -> list[int]:
        return [s for s in range(self.stages) if f.matches(s, tags=self.tags.get(s, {}))]


def _has_fn(module: ModuleOp, name: str) -> bool:
    return any(isinstance(o, func.FuncOp) and o.sym_name.data == name
               for o in module.body.block.ops)


@dataclass
class Item:
    """A core directive and the user's directive it came from (for errors)."""

    directive: object
    index: int  # position in the user's list (-1: added by default)
    origin: object


def _blame(e: PiperError, item: Item, source: str) -> PiperError:
    """Name the directive (position and text) an error comes from, once."""
    if getattr(e, "blamed", False):
        return e
    e.message = f"directive {describe(item.origin)}: {e.message}"
    if item.index >= 0:
        loc = f"{source}[{item.index}]"
        e.location = loc if e.location is None else f"{loc}: {e.location}"
    if item.directive is not item.origin:
        e.context = (e.context + "\n" if e.context else "") + \
            f"  (expanded to {describe(item.directive)})"
    e.blamed = True
    return e


def _check(items: list[Item], source: str) -> None:
    for i, it in enumerate(items):
        if type(it.directive) not in _RANK:
            raise PiperError(f"strategy: entry {i} ({it.directive!r}) is not a directive",
                             f"{source}[{it.index}]")


def expand_items(items: list[Item], info: ModelInfo, source: str = "strategy") -> list[Item]:
    """Generators replaced by the core directives they stand for; the user's
    order is kept, a default `place` is added when there is none."""
    if not any(isinstance(it.directive, Place) for it in items):
        d = Place()
        items = [Item(d, -1, d)] + list(items)
    out: list[Item] = []
    for it in items:
        d = it.directive
        if isinstance(d, Place) and d.generator:
            try:
                where = loop_or_v(info.stages, d.pp or info.stages, d.placement)
            except PiperError as e:
                raise _blame(e, it, source) from None
            out += [Item(Place(Filter.of({"PP": s}), (dev,), d.stream), it.index, d)
                    for s, dev in enumerate(where)]
        elif not (isinstance(d, Order) and d.generator):
            out.append(it)
    places = _stage_devices(out, info, source)
    pp = 1 + max(places.values())
    m = next((it.directive.n for it in out if isinstance(it.directive, Split)), 1)
    split = info.split_backward or any(isinstance(it.directive, SplitBackward) for it in items)
    final: list[Item] = []
    for it in items:
        d = it.directive
        if isinstance(d, Place):
            final += [x for x in out if x.origin is d and x.index == it.index]
        elif isinstance(d, Order) and d.generator:
            try:
                final += [Item(o, it.index, d)
                          for o in _expand_order(d, pp, m, info, places, split)]
            except PiperError as e:
                raise _blame(e, it, source) from None
        else:
            final.append(it)
    return final


def _expand_order(d: Order, pp: int, m: int, info: ModelInfo, places,
                  split_backward: bool) -> list[Order]:
    if d.schedule:
        orders = named_orders(d.schedule, pp, m, info.stages, places, split_backward)
    else:
        orders = parse_orders(d.text)
    return [Order(device=r, tasks=tuple(orders[r])) for r in sorted(orders)]


def _stage_devices(items: list[Item], info: ModelInfo, source: str) -> dict[int, int]:
    """Stage -> pipeline device from the core `place` directives, checked:
    every stage placed once, devices 0..pp-1 each running a stage."""
    where: dict[int, tuple[int, Item]] = {}
    last = None
    for it in items:
        d = it.directive
        if not isinstance(d, Place):
            continue
        last = it
        try:
            check_names(d.filter, info.tag_names, "place")
            stages = info.stages_of(d.filter)
            if not stages:
                hint = f"; {ANNOTATE_PP}" if info.stages == 1 else ""
                raise PiperError(f"place: filter {d.filter} matches no stage (the model has "
                                 f"stages 0..{info.stages - 1}){hint}")
            for s in stages:
                if s in where:
                    other = where[s][1]
                    raise PiperError(f"place: stage {s} is already placed by "
                                     f"{source}[{other.index}] {describe(other.directive)}")
                where[s] = (d.devices[0], it)
        except PiperError as e:
            raise _blame(e, it, source) from None
    try:
        absent = [s for s in range(info.stages) if s not in where]
        if absent:
            raise PiperError(f"place: no place directive covers stage "
                             f"{', '.join(map(str, absent))}")
        devs = {dev for dev, _ in where.values()}
        idle = [dv for dv in range(len(devs) + 1) if dv not in devs and dv < max(devs)]
        if idle:
            raise PiperError(f"place: pipeline device {idle[0]} runs no stage; devices must be "
                             f"0..{max(devs)} with at least one stage each")
    except PiperError as e:
        raise _blame(e, last, source) from None
    return {s: dev for s, (dev, _) in where.items()}


def expand(strategy, model=None, *, stages: int | None = None) -> list:
    """The core directives a strategy stands for.

    `model` is what the strategy will compile: a CapturedStep
    (`piper.capture(...)`) or a captured / pipeline-split module; or give
    the number of `stages` (for models without tags beyond PP)."""
    directives, source = load(strategy)
    items = [Item(d, i, d) for i, d in enumerate(directives)]
    _check(items, source)
    if model is not None:
        module = getattr(model, "module", model).clone()
        _graph_level(module, items, source)
        info = ModelInfo.of(module)
    elif stages is not None:
        info = ModelInfo(_int("expand: stages", stages, 1))
    else:
        raise PiperError("expand: give the model (a CapturedStep or module) or stages=N")
    return [it.directive for it in expand_items(items, info, source)]


# ---------------------------------------------------------------- compiling


class Clock:
    """Seconds spent in each step of a compilation, in order: `(what,
    seconds)` pairs, what is a pass name or `verify <level>` (what
    bench/compile_bench.py reads)."""

    def __init__(self):
        self.steps: list[tuple[str, float]] = []

    @contextmanager
    def __call__(self, what: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.steps.append((what, time.perf_counter() - t0))


class _NoClock(Clock):
    def __call__(self, what: str):
        return nullcontext()


_NO_CLOCK = _NoClock()


# Passes that build the plan or the programs and may add functions, but
# never change a function that is already there: a function verified before
# them needs no second look after them.
_PLAN_ONLY = frozenset({"place", "split", "replicate", "shard", "order", "overlap-pairs",
                        "lower-dist-to-sched",
                        "verify-plan"})


def _verify(module, after: str, clock: Clock = _NO_CLOCK, level: str = "",
            skip: frozenset = frozenset()) -> frozenset:
    """Verify every op of the module (in verify_with_locations' order) but
    the top-level ops in `skip`; return the top-level ops it verified."""
    top = list(module.body.block.ops)
    try:
        with clock(f"verify {level or after}"):
            # the IR here is built by Piper's passes, in dependency order
            if not skip:
                verify_with_locations(module, {}, dominance=False)
            else:
                module.verify(verify_nested_ops=False)
                for op in reversed(top):
                    if op not in skip:
                        verify_with_locations(op, {}, dominance=False)
    except PiperError as e:
        e.message = f"after {after}: {e.message}"
        raise
    except VerifyException as e:  # the module op itself, as verify_with_locations says it
        raise PiperError(f"after {after}: '{module.name}' op {first_line(e)}",
                         op_location(module, {})) from None
    return frozenset(top)


def _run(p: ModulePass, items: list[Item], module, ctx: Context, source, verify: bool = True,
         clock: Clock = _NO_CLOCK) -> frozenset:
    """Apply one pass; an error names the directive it comes from. Plans
    reach 10^5 ops, so the dist-level passes are verified together, once
    (piper-opt verifies after every pass). Return the top-level ops the
    verification saw (none without it)."""
    try:
        with clock(p.name):
            p.apply(ctx, module)
        if verify:
            return _verify(module, f"pass '{p.name}'", clock, p.name)
        return frozenset()
    except PiperError as e:
        rank = getattr(e, "rank", None)
        culprit = next((it for it in items if isinstance(it.directive, Order)
                        and it.directive.device == rank), None) if rank is not None else None
        if culprit is None and items:
            culprit = items[0]
        if culprit is not None:
            raise _blame(e, culprit, source) from None
        raise


def _graph_level(module: ModuleOp, items: list[Item], source: str,
                 clock: Clock = _NO_CLOCK, verify: bool = True, low: float = -math.inf,
                 high: float = 1) -> frozenset:
    """pipeline-split, then the directives that rewrite stage functions;
    each verified after it (unless `verify` is False); only the passes
    ranked in [low, high) (pipeline-split when low is -inf). Return the
    top-level ops the last verification saw (none if none ran)."""
    ctx = context()
    verified = frozenset()
    if low == -math.inf and "F0" not in functions(module):
        # the stages place() puts on devices: an annotation error is its error
        places = [it for it in items if isinstance(it.directive, Place)]
        verified = _run(_pipeline_split(module, items), places[:1], module, ctx, source,
                        verify, clock)
    steps = [(_RANK[type(it.directive)], p, it) for it in items
             if _RANK[type(it.directive)] < 1 for p in it.directive.passes()]
    steps += _reshard_steps(module, items)
    for _, p, it in sorted((s for s in steps if low <= s[0] < high), key=lambda s: s[0]):
        verified = _run(p, [it], module, ctx, source, verify, clock)
    return verified


def graph_directives(directives) -> list:
    """The directives that decide the graph level besides the stages (what
    pipeline-split makes of place and order): those ranked before place,
    and a ZeRO-3 `shard` that reshards after the forward with the
    `replicate` of its axis. Candidates of a search that agree on them
    share their graph level."""
    reshard = {d.axis for d in directives if _reshards(d)}
    return [d for d in directives if _RANK.get(type(d), 1) < 1 or _reshards(d)
            or (isinstance(d, Replicate) and d.axis in reshard)]


def _reshards(d) -> bool:
    """A ZeRO-3 `shard` that reshards after the forward."""
    return isinstance(d, Shard) and d.stage == 3 and d.reshard_after_forward


# ZeRO-3 with reshard_after_forward re-computes, in each backward, what its
# forward saved from parameters alone: a graph-level pass of a dist-level
# directive, after recompute (which leaves nothing saved) and before
# split_backward (the re-computation goes with the input gradient). As
# compile_strategy's `start` / `stop`, RESHARD cuts the graph level there.
_RESHARD_RANK = 0.25
RESHARD = "reshard"


def _rank_of(boundary) -> float:
    """The rank a `start` / `stop` boundary stands for: a directive class's,
    or RESHARD's."""
    if boundary == RESHARD:
        return _RESHARD_RANK
    if boundary not in _RANK:
        raise PiperError(f"compile_strategy: start and stop are directive classes (Place, "
                         f"Shard, ...) or RESHARD, got {boundary!r}")
    return _RANK[boundary]


def _reshard_steps(module: ModuleOp, items: list[Item]) -> list[tuple[float, ModulePass, Item]]:
    """recompute{only=params} of the stages a ZeRO-3 `shard` covers, when it
    reshards after the forward over more than one replica (one replica
    gathers nothing)."""
    replicas = {it.directive.axis: it.directive.n for it in items
                if isinstance(it.directive, Replicate)}
    out = []
    for it in items:
        d = it.directive
        if _reshards(d) and replicas.get(d.axis, 1) > 1:
            stages = ModelInfo.of(module).stages_of(d.filter)
            if stages:  # none: shard's own error, at the dist level
                out.append((_RESHARD_RANK, RecomputePass(stages=tuple(stages), only="params"),
                            it))
    return out


# Named schedules that run one stage per pipeline device.
_ONE_STAGE_PER_DEVICE = ("gpipe", "1f1b", "zb-h1")


def _pipeline_split(module: ModuleOp, items: list[Item]) -> PipelineSplit:
    """pipeline-split, with `stages` when `place(pp=k)` and a schedule of one
    stage per device meet more PP regions than devices: the regions are
    spread evenly over the k stages (consecutive regions together)."""
    pp = [it.directive.pp for it in items
          if isinstance(it.directive, Place) and it.directive.generator and it.directive.pp]
    named = [it.directive.schedule for it in items
             if isinstance(it.directive, Order) and it.directive.schedule]
    if not pp or not named or named[0] not in _ONE_STAGE_PER_DEVICE:
        return PipelineSplit()
    fwd = functions(module).get("forward")
    regions = {o.tag_dict().get(STAGE_TAG) for o in fwd.body.block.ops
               if isinstance(o, AtenOp)} - {None} if fwd is not None else set()
    return PipelineSplit(stages=pp[0] if len(regions) > pp[0] else 0)


def _join(pairs) -> str:
    return ",".join(f"{k}:{v}" for k, v in pairs)


def _place_pass(places: list[Item], where: dict[int, int], info: ModelInfo) -> PlacePass:
    """The one `place` pass the core place directives (stage -> device
    `where`, checked) stand for."""
    streams = {s: it.directive.stream for it in places if it.directive.stream != "compute"
               for s in info.stages_of(it.directive.filter)}
    return PlacePass(devices=_join(sorted(where.items())), streams=_join(sorted(streams.items())))


def _order_pass(orders: list[Item], pp: int, info: ModelInfo, source: str) -> OrderPass:
    """The one `order` pass the core order directives (one per device) stand for."""
    by_dev: dict[int, Item] = {}
    for it in orders:
        d = it.directive
        try:
            if d.device in by_dev:
                raise PiperError(f"order: device {d.device} is given two orders (also "
                                 f"{source}[{by_dev[d.device].index}])")
            if d.device >= pp:
                raise PiperError(f"order: device {d.device} is out of range; the pipeline "
                                 f"devices are 0..{pp - 1}")
            for e in d.tasks:
                for f in e:
                    check_names(f, info.tag_names, "order")
        except PiperError as e:
            raise _blame(e, it, source) from None
        by_dev[d.device] = it
    absent = [r for r in range(pp) if r not in by_dev]
    if absent:
        raise _blame(PiperError(f"order: no order for pipeline device {absent[0]} (every "
                                f"device of 0..{pp - 1} needs one)"), orders[-1], source)
    return OrderPass(text=format_orders({r: list(it.directive.tasks) for r, it in by_dev.items()}))


def _whole_model(d, info: ModelInfo) -> None:
    """split and replicate apply to every stage."""
    check_names(d.filter, info.tag_names, _name_of(d))
    covered = info.stages_of(d.filter)
    if covered != list(range(info.stages)):
        raise PiperError(
            f"{_name_of(d)}: filter {d.filter} selects stages {covered} of "
            f"0..{info.stages - 1}; it applies to the whole model (use \"*\")")


def _shard_pass(d: Shard, covered: list[int], info: ModelInfo) -> ShardPass:
    partial = covered != list(range(info.stages))
    return ShardPass(stage=d.stage, axis=d.axis,
                     stages=",".join(map(str, covered)) if partial else "",
                     gather_stream="" if d.gather_stream == "comm" else d.gather_stream,
                     reduce_stream="" if d.reduce_stream == "comm" else d.reduce_stream,
                     prefetch=d.prefetch, pack=d.pack)


def _core_passes(items: list[Item], info: ModelInfo, source: str) -> list[tuple[float, ModulePass, list[Item]]]:
    """(rank, pass, the items it comes from) for every directive."""
    places = [it for it in items if isinstance(it.directive, Place)]
    where = _stage_devices(places, info, source)
    steps: list[tuple[float, ModulePass, list[Item]]] = [
        (_RANK[Place], _place_pass(places, where, info), places)]
    pp = 1 + max(where.values())
    seen: dict[type, Item] = {}
    shard_stages: dict[int, Item] = {}
    for it in items:
        d = it.directive
        try:
            if isinstance(d, Split | Replicate):
                if type(d) in seen:
                    raise PiperError(f"{_name_of(d)} is given twice (also "
                                     f"{source}[{seen[type(d)].index}])")
                seen[type(d)] = it
                _whole_model(d, info)
                p = SplitPass(n=d.n) if isinstance(d, Split) else ReplicatePass(
                    n=d.n, axis=d.axis, stream="" if d.stream == "comm" else d.stream,
                    bucket_bytes=d.bucket_bytes)
                steps.append((_RANK[type(d)], p, [it]))
            elif isinstance(d, Shard):
                check_names(d.filter, info.tag_names, "shard")
                covered = info.stages_of(d.filter)
                if not covered:
                    raise PiperError(f"shard: filter {d.filter} matches no stage")
                for s in covered:
                    if s in shard_stages:
                        raise PiperError(f"shard: stage {s} is already sharded by "
                                         f"{source}[{shard_stages[s].index}]")
                    shard_stages[s] = it
                steps.append((_RANK[Shard], _shard_pass(d, covered, info), [it]))
            elif not isinstance(d, Place | Order):
                steps += [(_RANK[type(d)], p, [it]) for p in d.passes()
                          if _RANK[type(d)] >= 1]
        except PiperError as e:
            raise _blame(e, it, source) from None
    orders = [it for it in items if isinstance(it.directive, Order)]
    if orders:
        steps.append((_RANK[Order], _order_pass(orders, pp, info, source), orders))
        # after every pass that cuts tasks into pieces (tensor/expert parallel)
        steps.append((_OVERLAP_RANK, OverlapPairs(), orders))
    return sorted(steps, key=lambda s: s[0])


def compile_strategy(module: ModuleOp, directives, source: str = "strategy",
                     clock: Clock | None = None, verify_ir: bool = True,
                     replicas: str = "all", start: type | None = None,
                     stop: type | None = None) -> list:
    """Run the strategy's passes on a captured module (in place); return the
    core directives it expanded to (graph-level ones first). A `Clock`
    records the seconds of every pass and verification. `verify_ir=False`
    skips the structural verification of the graph level, the plan and the
    programs (the plan verifier, verify-plan, still runs): for a search
    that compiles many candidates and verifies the ones it returns.
    `replicas="first"` lowers only data-parallel replica 0's programs
    (lower-dist-to-sched's option: the simulator prices such a plan
    exactly, nothing runs it) and so skips verify-plan, which needs every
    program.

    `start` and `stop` (directive classes, or RESHARD: the graph level
    before and from ZeRO-3's re-computing) compile a part, for a search
    whose candidates share their first parts: `stop=Shard` runs the graph
    level and the dist-level passes of the directives ranked before shard
    (those ranked at or after it are left out, so their errors are not
    this part's), with no verification and no lowering; `start=Shard`
    goes on from there, on a module compiled so with the same
    directives."""
    clock = clock or _NO_CLOCK
    low = -math.inf if start is None else _rank_of(start)
    high = math.inf if stop is None else _rank_of(stop)
    with gc_paused():
        items = [Item(d, i, d) for i, d in enumerate(directives)]
        _check(items, source)
        verified = frozenset()
        if low < 1:  # pipeline-split reads place and order: all items
            verified = _graph_level(module, items, source, clock, verify_ir and stop is None,
                                    low, min(high, 1))
        if high <= 1:  # a part of the graph level
            return []
        items = [it for it in items if _RANK[type(it.directive)] < high]
        with clock("expand"):
            info = ModelInfo.of(module)
            graph = [it for it in items if _RANK[type(it.directive)] < 1]
            core = expand_items([it for it in items if _RANK[type(it.directive)] >= 1], info,
                                source)
            ctx = context()
            steps = _core_passes(core, info, source)
            # graph-level directives' plan passes run after every other
            # dist-level pass (loss scaling reads the final optimizer tasks)
            steps += [(_RANK[Fuse] - 0.05, p, [it]) for it in graph
                      for p in getattr(it.directive, "plan_passes", list)()]
            steps = sorted((s for s in steps if low <= s[0] < high), key=lambda s: s[0])
        # Plans reach 10^5 tasks and 10^6 instructions: the graph level is
        # verified once (after its passes), the plan after the dist-level
        # passes, the programs after lowering; a function already verified is
        # verified again only if a pass that may change functions ran since.
        for _, p, owners in steps:
            _run(p, owners, module, ctx, source, verify=False, clock=clock)
            if p.name not in _PLAN_ONLY:
                verified = frozenset()
        if stop is not None:  # a part: the rest compiles with start=stop
            return [it.directive for it in graph + core]
        if verify_ir:
            verified = _verify(module, "the strategy's dist-level passes", clock, "dist",
                               verified)
        _run(LowerDistToSched(replicas=replicas), [], module, ctx, source, verify=False,
             clock=clock)
        for it in graph + core:  # directives that rewrite the programs (offload)
            for p in getattr(it.directive, "sched_passes", list)():
                _run(p, [it], module, ctx, source, verify=False, clock=clock)
        if replicas == "all":
            _run(VerifyPlan(), [], module, ctx, source, verify=False, clock=clock)
        if verify_ir:
            _verify(module, "lower-dist-to-sched", clock, "sched", verified)
    return [it.directive for it in graph + core]


def compile_plan(module: ModuleOp, directives, source: str = "strategy",
                 verify_ir: bool = True, replicas: str = "all") -> ModuleOp:
    """Run the strategy's passes on a captured module (in place)."""
    compile_strategy(module, directives, source, verify_ir=verify_ir, replicas=replicas)
    return module
