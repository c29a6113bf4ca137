"""Helpers for passes that cut graph-level functions apart and wire them up.

Stage functions say where each value comes from and what it is with string
attributes on their arguments and results (`graph.name`, `graph.kind`,
`graph.from = "F0#2"`: result 2 of @F0). These helpers read and write those
attributes, give values unique names, and outline a list of ops into a new
`func.func`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, IntAttr, ModuleOp, StringAttr
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.utils.exceptions import DiagnosticException

from piper.diagnostics import PiperError
from piper.ir import sanitize as ir_sanitize
from piper.ir import use_before_definition
from piper.dialects import dist
from piper.dialects.dist import _int_array

# The order attributes print in: what a value is, then where it comes from.
_KEYS = ("name", "kind", "from")


def functions(module: ModuleOp) -> dict[str, func.FuncOp]:
    """The module's functions by name."""
    return {
        op.sym_name.data: op for op in module.body.block.ops if isinstance(op, func.FuncOp)
    }


def callee(call: func.CallOp) -> str:
    return call.callee.root_reference.data


def graph_attrs(fn: func.FuncOp, i: int, results: bool = False) -> dict[str, str]:
    """The `graph.*` string attributes of argument (or result) `i`, without
    the prefix: {"name": "fc.weight", "kind": "param"}."""
    attrs = fn.res_attrs if results else fn.arg_attrs
    if attrs is None:
        return {}
    return {
        k.removeprefix("graph."): v.data
        for k, v in attrs.data[i].data.items()
        if k.startswith("graph.") and isinstance(v, StringAttr)
    }


def make_attrs(attrs: Mapping[str, str]) -> DictionaryAttr:
    """`{"name": n, "kind": k}` as `{graph.name = n, graph.kind = k}`."""
    keys = [k for k in _KEYS if k in attrs] + [k for k in attrs if k not in _KEYS]
    return DictionaryAttr({f"graph.{k}": StringAttr(attrs[k]) for k in keys})


def parse_from(ref: str) -> tuple[str, int] | None:
    """"F0#2" -> ("F0", 2); None if `ref` is not of that form."""
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)#([0-9]+)", ref)
    return (m.group(1), int(m.group(2))) if m else None


def sanitize(name: str) -> str:
    """`name` as an SSA name hint without a `_<digits>` ending (piper.ir.sanitize)."""
    return ir_sanitize(name, numbered=False)


def _default_name(v: SSAValue) -> str:
    """`native_layer_norm_2` for result 2 of an aten op without a name."""
    target = getattr(v.owner, "target", None)
    if isinstance(target, StringAttr) and target.data.count(".") == 2:
        return f"{target.data.split('.')[1]}_{v.index}" if hasattr(v, "index") else "v"
    return "v"


class ValueNames:
    """Unique, stable names for values (their SSA name where they have one)."""

    def __init__(self):
        self._names: dict[SSAValue, str] = {}
        self._taken: set[str] = set()
        # base -> the last suffix it got: the suffixes below it are taken
        # (names are never given back), so the search resumes there.
        self._last: dict[str, int] = {}

    def reserve(self, name: str) -> None:
        self._taken.add(name)

    def __call__(self, v: SSAValue) -> str:
        if v not in self._names:
            base = v.name_hint or _default_name(v)
            n = self._last.get(base, 0)
            name = f"{base}_{n}" if n else base
            while name in self._taken:
                n += 1
                name = f"{base}_{n}"
            self._taken.add(name)
            self._last[base] = n
            self._names[v] = name
        return self._names[v]


def outline(
    name: str,
    args: Sequence[tuple[SSAValue, Attribute, Mapping[str, str], str | None]],
    ops: Sequence[Operation],
    results: Sequence[tuple[SSAValue, Mapping[str, str]]],
    lookup: Callable[[SSAValue], SSAValue] = lambda v: v,
) -> func.FuncOp:
    """A new function `name` running clones of `ops` in order.

    `args` are (key, type, attrs, name hint); `lookup(v)` maps each operand
    of `ops` to a key, which is an argument's key or the (original) result
    of an earlier op in `ops`; `results` are (key, attrs).
    """
    block = Block(arg_types=[t for _, t, _, _ in args])
    env: dict[SSAValue, SSAValue] = {}
    for (key, _, _, hint), a in zip(args, block.args, strict=True):
        env[key] = a
        a.name_hint = sanitize(hint) if hint else None

    def local(v: SSAValue) -> SSAValue:
        key = lookup(v)
        if key not in env:
            raise DiagnosticException(
                f"internal error: @{name} uses %{v.name_hint or '?'} before it is defined"
            )
        return env[key]

    for op in ops:
        mapper = {v: local(v) for v in op.operands}
        new = op.clone(value_mapper=mapper)
        block.add_op(new)
        for old, r in zip(op.results, new.results, strict=True):
            env[old] = r
            if r.name_hint:
                r.name_hint = sanitize(r.name_hint)
    returned = [local(k) for k, _ in results]
    block.add_op(func.ReturnOp(*returned))
    return func.FuncOp(
        name,
        ([t for _, t, _, _ in args], [r.type for r in returned]),
        Region(block),
        arg_attrs=ArrayAttr([make_attrs(a) for _, _, a, _ in args]),
        res_attrs=ArrayAttr([make_attrs(a) for _, a in results]),
    )


def require_stage_functions_level(module: ModuleOp, pass_name: str) -> None:
    """A pass that rewrites stage functions runs before the plan exists
    (dist.plan / sched.program take their signatures as they are)."""
    if any(o.name in ("dist.plan", "sched.program") for o in module.body.block.ops):
        raise PiperError(f"{pass_name}: the module is already a plan; {pass_name} rewrites the "
                         "stage functions and must run before place (convert-graph-to-dist)")


def the_plan(module: ModuleOp, pass_name: str) -> dist.PlanOp:
    """The module's one dist.plan: what every dist-level pass rewrites."""
    plans = [o for o in module.body.block.ops if isinstance(o, dist.PlanOp)]
    if len(plans) != 1:
        raise PiperError(
            f"{pass_name}: expected one dist.plan, found {len(plans)}; "
            "run place (or convert-graph-to-dist) first"
        )
    return plans[0]


def require_dependency_order(block: Block, pass_name: str) -> None:
    """The contract lowering and expert_parallel rely on: a plan's ops
    stand in one global order in which each op comes after the ops whose
    results it reads (split, replicate, shard and order re-sort the block
    by its data edges themselves). expert_parallel checks it first;
    lowering, which projects the order onto each device, checks it when a
    value is missing on a device, so a valid plan pays nothing. An op that
    reads a value defined later in the block breaks it: an error at that op."""
    found = use_before_definition(block)
    if found is not None:
        op, v, owner = found
        raise PiperError(
            f"{pass_name}: '{op.name}' uses %{v.name_hint or '?'} before the "
            f"'{owner.name}' that defines it; a plan's ops must stand in "
            "dependency order", op=op)


def set_mesh(plan: dist.PlanOp, mesh: dict[str, int]) -> None:
    """Give the plan the mesh `mesh` (axis name -> size, in order)."""
    plan.axes = ArrayAttr([StringAttr(a) for a in mesh])
    plan.shape = _int_array(list(mesh.values()))


def clone_on_axis(o: Operation, mapping: Mapping[SSAValue, SSAValue], b: int, n: int,
                  split_inputs: bool) -> Operation:
    """A copy of plan op `o` for rank b of a new innermost mesh axis of size
    n: operands through `mapping`, device d becomes d*n + b (`device`, `src`,
    `dst`, collective groups), a task's replica r becomes r*n + b. With
    `split_inputs` an input's replica too, so each rank of the axis reads its
    own slice of the batch (expert parallelism); without, every rank reads
    the same one (tensor parallelism). Result types stay as they were."""
    c = o.clone(value_mapper={v: mapping[v] for v in o.operands})
    for key in ("device", "src", "dst"):
        if key in c.properties:
            c.properties[key] = IntAttr(o.properties[key].data * n + b)
    if isinstance(c, dist.TaskOp) or (split_inputs and isinstance(c, dist.InputOp)):
        c.properties["replica"] = IntAttr(o.properties["replica"].data * n + b)
    if isinstance(c, dist.CollectiveOp):
        c.group = _int_array([d * n + b for d in o.members])
    return c
