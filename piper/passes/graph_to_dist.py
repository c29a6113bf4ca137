"""convert-graph-to-dist: build the global training DAG from stage functions.

Input: the stage functions `pipeline-split` (and optionally
`split-backward`) produce, @F{s}, @B{s} or @I{s}/@W{s}, @OPT{s}, whose
arguments say where each value comes from (`graph.kind`, `graph.from`).
Output: one `dist.plan` with one task per stage function (microbatch 0,
replica 0), stage s on device `placement(s)`, every cross-device edge a
`dist.send`, training state loaded at the start and stored at the end, the
loss tangent as a `dist.fill`. Microbatching and replication are later
passes over this plan; the stage functions stay in the module.

Where stages go: `pp` and `placement` ('loop' or 'v', below), or an
explicit `stages="0:0,1:1,2:1,3:0"` (stage:device for every stage; the
`place` directive's form). `streams="1:compute1"` (stage:stream) runs those
stages' tasks on a named compute stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError
from piper.dialects import dist
from piper.ir import sanitize
from piper.passes.func_utils import parse_from

_FN = re.compile(r"^(F|B|I|W|OPT)(\d+)$")


def stage_functions(module: ModuleOp) -> dict[tuple[str, int], func.FuncOp]:
    """The stage functions of a module, by (kind, stage)."""
    out = {}
    for op in module.body.block.ops:
        if isinstance(op, func.FuncOp):
            m = _FN.match(op.sym_name.data)
            if m:
                out[(m.group(1), int(m.group(2)))] = op
    return out


def arg_info(fn: func.FuncOp, i: int, results: bool = False) -> dict[str, str]:
    attrs = fn.res_attrs if results else fn.arg_attrs
    if attrs is None:
        return {}
    return {k.removeprefix("graph."): v.data for k, v in attrs.data[i].data.items()
            if isinstance(v, StringAttr)}


# What a model with one pipeline stage needs to run on more devices.
ANNOTATE_PP = ('annotate its blocks, e.g. piper.annotate("PP", model.layers), or write '
               '`with piper.annotate("PP"):` around each block inside forward '
               '(docs/own_model.md)')


def placement(num_stages: int, pp: int, kind: str) -> list[int]:
    """Device of each stage: 'loop' puts stage s on s % pp (one or more
    chunks per device); 'v' runs down the devices and back up (two chunks
    per device, DualPipeV)."""
    if num_stages == 1 and pp > 1:
        raise PiperError(
            f"convert-graph-to-dist: the model has one pipeline stage (no PP regions, or one), "
            f"so it cannot run on pp={pp} devices: {ANNOTATE_PP}"
        )
    if num_stages % pp:
        raise PiperError(
            f"convert-graph-to-dist: {num_stages} stages do not divide over pp={pp} devices"
            f" (annotate a multiple of {pp} PP regions)"
        )
    if kind == "loop":
        return [s % pp for s in range(num_stages)]
    if kind == "v":
        if num_stages != 2 * pp:
            raise PiperError(
                f"convert-graph-to-dist: placement 'v' needs 2 stages per device "
                f"({2 * pp} for pp={pp}); the model has {num_stages}"
            )
        return [s if s < pp else 2 * pp - 1 - s for s in range(num_stages)]
    raise PiperError(f"convert-graph-to-dist: unknown placement '{kind}' (loop or v)")


def _stage_map(text: str, option: str, num_stages: int, conv) -> dict:
    """`"0:a,1:b"` -> {0: conv("a"), 1: conv("b")}; every stage < num_stages, once."""
    out: dict = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        s, sep, v = item.partition(":")
        try:
            stage = int(s)
            value = conv(v.strip()) if sep and v.strip() else None
        except ValueError:
            value = None
        if value is None:
            raise PiperError(f"convert-graph-to-dist: {option} entry '{item}' is not STAGE:VALUE")
        if not 0 <= stage < num_stages:
            raise PiperError(f"convert-graph-to-dist: {option} names stage {stage}; the model "
                             f"has stages 0..{num_stages - 1}")
        if stage in out:
            raise PiperError(f"convert-graph-to-dist: {option} gives stage {stage} twice")
        out[stage] = value
    return out


def explicit_placement(text: str, num_stages: int) -> list[int]:
    """Device of each stage from `"0:0,1:1,..."`: every stage once, devices
    0..pp-1 each running at least one stage."""
    m = _stage_map(text, "stages", num_stages, int)
    absent = [s for s in range(num_stages) if s not in m]
    if absent:
        raise PiperError(f"convert-graph-to-dist: stages gives no device for stage "
                         f"{', '.join(map(str, absent))}")
    bad = sorted({d for d in m.values() if d < 0})
    if bad:
        raise PiperError(f"convert-graph-to-dist: device {bad[0]} is negative")
    pp = max(m.values()) + 1
    idle = [d for d in range(pp) if d not in set(m.values())]
    if idle:
        raise PiperError(f"convert-graph-to-dist: device {idle[0]} runs no stage (devices must "
                         f"be 0..{pp - 1} with a stage each)")
    return [m[s] for s in range(num_stages)]


class PlanBuilder:
    """Appends dist ops to a plan block, caching loads and sends."""

    def __init__(self, plan: dist.PlanOp):
        self.plan = plan
        self.block = plan.body.block
        self.loads: dict[tuple[str, int], SSAValue] = {}
        self.sends: dict[tuple[SSAValue, int], SSAValue] = {}

    def add(self, op: Operation) -> Operation:
        self.block.add_op(op)
        return op

    def load(self, name: str, device: int, t) -> SSAValue:
        key = (name, device)
        if key not in self.loads:
            op = self.add(dist.LoadOp(name, device, t))
            op.result.name_hint = sanitize(name)
            self.loads[key] = op.result
        return self.loads[key]

    def on(self, value: SSAValue, device: int) -> SSAValue:
        """`value` made available on `device` (a send if it lives elsewhere)."""
        src = dist.device_of(value)
        if src is None or src == device:
            return value
        key = (value, device)
        if key not in self.sends:
            self.sends[key] = self.add(dist.SendOp(value, src, device)).result
        return self.sends[key]


@dataclass(frozen=True)
class ConvertGraphToDist(ModulePass):
    """Build a dist.plan (one microbatch, one replica) from stage functions."""

    name = "convert-graph-to-dist"

    pp: int = 0  # devices along the pipeline axis; 0: one per stage
    placement: str = "loop"
    stages: str = ""  # "stage:device,...": explicit placement (overrides pp/placement)
    streams: str = ""  # "stage:stream,...": compute stream of those stages' tasks

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        fns = stage_functions(op)
        stages = sorted({s for (k, s) in fns if k == "F"})
        if not stages:
            raise PiperError(
                "convert-graph-to-dist: no stage functions (@F0, ...); run pipeline-split first"
            )
        if stages != list(range(len(stages))):
            raise PiperError(f"convert-graph-to-dist: stages {stages} are not 0..{len(stages) - 1}")
        n = len(stages)
        if self.stages:
            where = explicit_placement(self.stages, n)
            pp = max(where) + 1
        else:
            pp = self.pp or n
            where = placement(n, pp, self.placement)
        streams = _stage_map(self.streams, "streams", n, str)
        for old in [o for o in op.body.block.ops if isinstance(o, dist.PlanOp)]:
            op.body.block.erase_op(old)
        plan = dist.PlanOp("step", {"pp": pp}, 1)
        b = PlanBuilder(plan)
        results: dict[str, list[SSAValue]] = {}
        grads: dict[tuple[int, str], SSAValue] = {}
        order = [("F", s) for s in stages]
        for s in reversed(stages):
            order += [(k, s) for k in ("B", "I", "W") if (k, s) in fns]
        order += [("OPT", s) for s in stages if ("OPT", s) in fns]
        for kind, s in order:
            fn = fns[(kind, s)]
            dev = where[s]
            args = []
            for i, t in enumerate(fn.function_type.inputs.data):
                info = arg_info(fn, i)
                args.append(self._arg(b, fn, info, t, dev, results, grads, s))
            task = b.add(dist.TaskOp(kind, s, 0, 0, dev, fn.sym_name.data, args,
                                     fn.function_type.outputs.data, streams.get(s)))
            results[fn.sym_name.data] = list(task.results)
            for i, r in enumerate(task.results):
                info = arg_info(fn, i, results=True)
                if info.get("name"):
                    r.name_hint = sanitize(f"{info['name']}_{kind}{s}")
                if kind == "OPT":
                    b.add(dist.StoreOp(info["name"], dev, r))
                elif info.get("kind") == "grad":
                    grads[(s, info["name"])] = r
                elif info.get("kind") == "loss":
                    b.add(dist.StoreOp(info.get("name") or "loss", dev, r, loss=True))
        op.body.block.add_op(plan)

    def _arg(self, b: PlanBuilder, fn, info, t, dev, results, grads, stage) -> SSAValue:
        kind = info.get("kind", "")
        name = info.get("name", "")
        where = f"argument '{name}' ({kind}) of @{fn.sym_name.data}"
        if "from" in info:
            ref = parse_from(info["from"])
            if ref is None:
                raise PiperError(f"convert-graph-to-dist: {where} has graph.from = "
                                 f"\"{info['from']}\"; expected \"FUNCTION#RESULT\" such as "
                                 "\"F0#1\"", op=fn)
            src, idx = ref
            if src not in results:
                raise PiperError(f"convert-graph-to-dist: {where} comes from @{src}, which has "
                                 "not run yet", op=fn)
            if idx >= len(results[src]):
                raise PiperError(f"convert-graph-to-dist: {where} comes from result {idx} of "
                                 f"@{src}, which has {len(results[src])} results", op=fn)
            return b.on(results[src][idx], dev)
        if kind in ("param", "buffer", "state"):
            return b.load(name, dev, t)
        if kind == "input":
            key = ("input:" + name, dev)
            if key not in b.loads:
                inp = b.add(dist.InputOp(name, 0, 0, dev, t))
                inp.result.name_hint = sanitize(name)
                b.loads[key] = inp.result
            return b.loads[key]
        if kind == "tangent":
            fill = b.add(dist.FillOp(1.0, dev, t))
            fill.result.name_hint = "tangent"
            return fill.result
        if kind == "grad" and (stage, name) in grads:
            return b.on(grads[(stage, name)], dev)
        raise PiperError(f"convert-graph-to-dist: cannot tell where {where} comes from")
