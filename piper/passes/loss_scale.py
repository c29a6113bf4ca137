"""loss-scale{scale=65536 dynamic=true growth=2 backoff=0.5 interval=2000}:
fp16 loss scaling, as `torch.amp.GradScaler` does it, on a plan.

fp16's exponent range is small: gradients of an fp16 backward underflow
unless the loss is multiplied by a large scale first. This pass rewrites
a dist.plan (after every other dist-level pass) so that each step:

- multiplies the loss tangent by the scale (training state "loss_scale",
  fp32, one copy per device): each function that takes the tangent gets
  the scale as an argument of kind "loss_scale" and multiplies first, in
  fp32, before precision's cast to fp16 (GradScaler.scale);
- unscales every gradient an optimizer task reads (times the fp32
  reciprocal of the scale, computed in fp64 as GradScaler does) and finds
  whether any of them is inf or nan, in a task `@OPT{s}_unscale` before
  the optimizer (GradScaler.unscale_);
- sums those found-inf flags on each device and all-reduces them (max)
  over the whole mesh (on more than one device), so every rank, whatever
  shard or stage it holds, skips or takes the step together;
- skips the step where the flag is set: each optimizer result (parameter,
  state, step count) is `where(found_inf, old, new)`, so a skipped step
  leaves every bit of the training state as it was (GradScaler.step);
- with `dynamic`, updates the scale as `torch._amp_update_scale_` does
  (`@loss_scale_update`): times `backoff` on inf/nan (the growth tracker,
  state "loss_scale_growth_tracker", back to 0), times `growth` after
  `interval` good steps in a row (if the result is finite).

Ops stay in one dependency order: the unscale tasks stand before their
optimizer tasks, the all-reduce after the last of them, and every
optimizer task (with what reads it) moves after the all-reduce.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr, TensorType, f32, f64, i32
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError
from piper.dialects import dist
from piper.dialects.graph import ArgRefAttr, AtenOp
from piper.dialects.graph_values import to_attr
from piper.passes.func_utils import functions, graph_attrs, make_attrs, the_plan
from piper.passes.retype import infer_types

SCALE = "loss_scale"  # training state: the scale (fp32 scalar)
TRACKER = "loss_scale_growth_tracker"  # training state: good steps in a row (int32)
UPDATE = "loss_scale_update"
_SCALAR = TensorType(f32, [])
_COUNT = TensorType(i32, [])


class _Builder:
    """Appends aten ops to a block, their result types inferred."""

    def __init__(self, block: Block):
        self.block = block

    def __call__(self, target: str, *args, name: str = "", **kwargs) -> SSAValue:
        inputs: list[SSAValue] = []
        refs: dict[int, int] = {}
        for x in (*args, *kwargs.values()):
            if isinstance(x, SSAValue) and id(x) not in refs:
                refs[id(x)] = len(inputs)
                inputs.append(x)

        def ref(x):
            if isinstance(x, SSAValue):
                return ArgRefAttr(refs[id(x)])
            return x if isinstance(x, Attribute) else None  # a dtype: as it stands

        a = [to_attr(x, ref) for x in args]
        kw = {k: to_attr(v, ref) for k, v in kwargs.items()}
        op = AtenOp(target, inputs, a, kw, infer_types(AtenOp(target, [], a, kw, []),
                                                        [v.type for v in inputs]))
        self.block.add_op(op)
        if name:
            op.outputs[0].name_hint = name
        return op.outputs[0]


def _function(name: str, args: list[tuple[TensorType, dict[str, str]]],
              body, results_attrs: list[dict[str, str]]) -> func.FuncOp:
    block = Block(arg_types=[t for t, _ in args])
    for a, (_, attrs) in zip(block.args, args, strict=True):
        a.name_hint = attrs["name"].replace(".", "_").replace(":", "_")
    outs = body(_Builder(block), list(block.args))
    block.add_op(func.ReturnOp(*outs))
    return func.FuncOp(name, ([t for t, _ in args], [v.type for v in outs]), Region(block),
                       arg_attrs=ArrayAttr([make_attrs(a) for _, a in args]),
                       res_attrs=ArrayAttr([make_attrs(a) for a in results_attrs]))


@dataclass(frozen=True)
class LossScale(ModulePass):
    name = "loss-scale"

    scale: float = 65536.0   # the initial (dynamic) or fixed scale
    dynamic: bool = True     # update the scale as GradScaler does
    growth: float = 2.0
    backoff: float = 0.5
    interval: int = 2000

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if not self.scale > 0 or self.scale == float("inf"):
            raise PiperError(f"loss-scale: scale must be a positive number, got {self.scale}")
        if self.dynamic and not (self.growth >= 1 and 0 < self.backoff <= 1
                                 and self.interval >= 1):
            raise PiperError("loss-scale: needs growth >= 1, 0 < backoff <= 1 and "
                             f"interval >= 1 (got {self.growth}, {self.backoff}, "
                             f"{self.interval})")
        plan = the_plan(op, self.name)
        fns = functions(op)
        if UPDATE in fns or any(graph_attrs(fn, i).get("kind") == SCALE
                                for fn in fns.values()
                                for i in range(len(fn.body.block.args))):
            raise PiperError("loss-scale: the plan is already loss-scaled")
        ops = list(plan.body.block.ops)
        tasks = [o for o in ops if isinstance(o, dist.TaskOp)]
        opts = [t for t in tasks if t.kind.data == "OPT"]
        if not opts:
            raise PiperError("loss-scale: the plan has no optimizer task")
        devices = sorted({t.device.data for t in tasks})
        module_block = op.body.block

        # the scale, loaded where the step starts on every device
        scale = {}
        for d in devices:
            ld = dist.LoadOp(SCALE, d, _SCALAR)
            ld.result.name_hint = SCALE
            scale[d] = ld
        order: list[Operation] = [scale[d] for d in devices]
        scale = {d: s.result for d, s in scale.items()}

        # the functions that take the tangent multiply it by the scale
        scaled = {}
        for name, fn in fns.items():
            kinds = [graph_attrs(fn, i).get("kind") for i in range(len(fn.body.block.args))]
            if "tangent" in kinds:
                scaled[name] = _scale_tangent(fn, kinds.index("tangent"))
                module_block.insert_op_after(scaled[name], fn)
        # each optimizer function: an unscale function before it, and a skip
        unscale: dict[str, tuple[func.FuncOp, list[int]]] = {}
        skipping: dict[str, func.FuncOp] = {}
        for t in opts:
            name = t.callee.root_reference.data
            if name not in unscale:
                unscale[name] = _unscale_function(fns[name])
                skipping[name] = _skip_step(fns[name])
                module_block.insert_op_after(skipping[name], fns[name])
        if self.dynamic:
            module_block.insert_op_before(self._update_function(), plan)
        for name, (fn, _) in unscale.items():
            module_block.insert_op_after(fn, fns[name])

        found_of: dict[int, list[SSAValue]] = {d: [] for d in devices}
        rebuilt: dict[Operation, Operation] = {}
        waiting: dict[int, tuple[dist.TaskOp, list[SSAValue]]] = {}  # order index -> OPT task
        last_unscale = -1
        for o in ops:
            if isinstance(o, dist.TaskOp) and o.callee.root_reference.data in scaled:
                n = _task(o, [*o.args, scale[o.device.data]],
                          scaled[o.callee.root_reference.data])
                order.append(n)
                rebuilt[o] = n
            elif isinstance(o, dist.TaskOp) and o.kind.data == "OPT":
                d = o.device.data
                fn, grads = unscale[o.callee.root_reference.data]
                u = dist.TaskOp("OPT", o.stage.data, o.mb.data, o.replica.data, d,
                                fn.sym_name.data, [*(o.args[i] for i in grads), scale[d]],
                                fn.function_type.outputs.data,
                                o.stream.data if o.stream is not None else None)
                args = list(o.args)
                for r, i in zip(u.res, grads, strict=False):
                    r.name_hint = f"{o.args[i].name_hint or 'grad'}_unscaled"
                    args[i] = r
                u.res[-1].name_hint = "found_inf"
                order.append(u)
                last_unscale = len(order) - 1
                found_of[d].append(u.res[-1])
                waiting[len(order)] = (o, args)
                order.append(o)  # replaced once the flag exists
            else:
                order.append(o)

        # per device: the sum of its flags (or 0); then the max over the mesh
        tail: list[Operation] = []
        local = []
        for d in devices:
            fs = found_of[d]
            if len(fs) == 1:
                local.append(fs[0])
                continue
            f = dist.SumOp(fs, 1.0, d) if fs else dist.FillOp(0.0, d, _SCALAR)
            f.results[0].name_hint = "found_inf"
            tail.append(f)
            local.append(f.results[0])
        if len(devices) == 1:  # nothing to agree on
            found = dict(zip(devices, local, strict=True))
        else:
            ar = dist.AllReduceOp(local, devices, [_SCALAR] * len(devices),
                                  {"reduce": StringAttr("max")})
            tail.append(ar)
            found = dict(zip(devices, ar.outputs, strict=True))
            for v in ar.outputs:
                v.name_hint = "found_inf_all"
        for k, (o, args) in waiting.items():
            n = _task(o, [*args, found[o.device.data]], skipping[o.callee.root_reference.data])
            order[k] = n
            rebuilt[o] = n
        if self.dynamic:
            for d in devices:
                tr = dist.LoadOp(TRACKER, d, _COUNT)
                tr.result.name_hint = "growth_tracker"
                # named like an optimizer task of the device (its stage, replica)
                like = next((o for o in opts if o.device.data == d), None)
                stage, rep = (like.stage.data, like.replica.data) if like else (0, 0)
                t = dist.TaskOp("OPT", stage, 0, rep, d, UPDATE,
                                [scale[d], tr.result, found[d]], [_SCALAR, _COUNT])
                t.res[0].name_hint, t.res[1].name_hint = "loss_scale_new", "growth_tracker_new"
                tail += [tr, t, dist.StoreOp(SCALE, d, t.res[0]),
                         dist.StoreOp(TRACKER, d, t.res[1])]
        order[last_unscale + 1:last_unscale + 1] = tail

        for old, new in rebuilt.items():
            for r, s in zip(old.res, new.res, strict=True):
                s.name_hint = r.name_hint
                r.replace_all_uses_with(s)
        block = plan.body.block
        for o in list(block.ops):
            o.detach()
        for o in rebuilt:
            o.erase()
        for o in _dependency_order(order):
            block.add_op(o)

    def _update_function(self) -> func.FuncOp:
        """`torch._amp_update_scale_`: scale x backoff on inf/nan (tracker
        0); else tracker + 1, and at `interval` scale x growth if that is
        finite (tracker 0)."""
        g, b, n = self.growth, self.backoff, self.interval

        def body(e, args):
            s, tr, found = args
            inf = e("aten.gt.Scalar", found, 0.0, name="skip")
            good = e("aten.add.Tensor", tr, 1, name="good")
            at = e("aten.logical_and.default", e("aten.eq.Scalar", good, n), e("aten.logical_not.default", inf),
                   name="grow")
            grown = e("aten.mul.Tensor", s, g, name="grown")
            ok = e("aten.logical_and.default", at, e("aten.isfinite.default", grown))
            backed = e("aten.mul.Tensor", s, b, name="backed")
            kept = e("aten.where.self", ok, grown, s)
            new_s = e("aten.where.self", inf, backed, kept, name="scale")
            zero = e("aten.zeros_like.default", tr)
            reset = e("aten.logical_or.default", inf, at)
            new_t = e("aten.where.self", reset, zero, good, name="tracker")
            return [new_s, new_t]

        return _function(UPDATE, [(_SCALAR, {"name": SCALE, "kind": "state"}),
                                  (_COUNT, {"name": TRACKER, "kind": "state"}),
                                  (_SCALAR, {"name": "found_inf", "kind": "found_inf"})],
                         body, [{"name": SCALE, "kind": "state"},
                                {"name": TRACKER, "kind": "state"}])


def _task(t: dist.TaskOp, args: Sequence[SSAValue], fn: func.FuncOp) -> dist.TaskOp:
    """`t` calling `fn` (its rewritten copy) with other arguments."""
    return dist.TaskOp(t.kind.data, t.stage.data, t.mb.data, t.replica.data, t.device.data,
                       fn.sym_name.data, list(args), [r.type for r in t.res],
                       t.stream.data if t.stream is not None else None)


def _add_arg(fn: func.FuncOp, t: TensorType, attrs: dict[str, str]) -> SSAValue:
    """A new last argument of `fn`."""
    block = fn.body.block
    a = block.insert_arg(t, len(block.args))
    a.name_hint = attrs["name"]
    fn.function_type = func.FunctionType.from_lists(
        [*fn.function_type.inputs.data, t], list(fn.function_type.outputs.data))
    fn.arg_attrs = ArrayAttr([*fn.arg_attrs.data, make_attrs(attrs)])
    return a


def _scale_tangent(fn: func.FuncOp, k: int) -> func.FuncOp:
    """`@{fn}_scaled`: argument k of `fn` (the tangent) times a new
    argument, the scale, in fp32 where the function starts (GradScaler's
    `loss * scale`). `fn` stays as it is for @train_step."""
    fn = fn.clone()
    fn.sym_name = StringAttr(f"{fn.sym_name.data}_scaled")
    s = _add_arg(fn, _SCALAR, {"name": SCALE, "kind": SCALE})
    block = fn.body.block
    t = block.args[k]
    first = block.first_op
    mul = AtenOp("aten.mul.Tensor", [t, s], [ArgRefAttr(0), ArgRefAttr(1)], {},
                 [TensorType(f32, t.type.get_shape())])
    mul.outputs[0].name_hint = "tangent_scaled"
    if t.type.element_type != f32:
        raise PiperError(f"loss-scale: the loss tangent of @{fn.sym_name.data} is "
                         f"{t.type.element_type}, expected f32")
    block.insert_op_before(mul, first)
    t.replace_all_uses_with(mul.outputs[0])
    mul.operands[0] = t  # the multiplication itself reads the tangent
    return fn


def _unscale_function(opt: func.FuncOp) -> tuple[func.FuncOp, list[int]]:
    """`@{opt}_unscale(grads..., scale) -> (grads x 1/scale..., found_inf)`
    and the positions of the gradients among `opt`'s arguments: what
    `torch._amp_foreach_non_finite_check_and_unscale_` does (the inverse
    scale in fp64, rounded to fp32; found_inf 1.0 if any gradient holds an
    inf or nan)."""
    grads = [i for i in range(len(opt.body.block.args))
             if graph_attrs(opt, i).get("kind") == "grad"]
    if not grads:
        raise PiperError(f"loss-scale: @{opt.sym_name.data} reads no gradient")
    types = [opt.body.block.args[i].type for i in grads]
    attrs = [{k: v for k, v in graph_attrs(opt, i).items() if k != "from"} for i in grads]

    def body(e, args):
        *gs, s = args
        inv = e("aten._to_copy.default", s, dtype=f64)
        inv = e("aten.reciprocal.default", inv)
        inv = e("aten._to_copy.default", inv, dtype=f32, name="inv_scale")
        ok = None
        outs = []
        for g in gs:
            fin = e("aten.isfinite.default", g)
            fin = e("aten.all.default", fin)
            ok = fin if ok is None else e("aten.logical_and.default", ok, fin)
            outs.append(e("aten.mul.Tensor", g, inv, name=f"{g.name_hint}_unscaled"))
        bad = e("aten.logical_not.default", ok)
        outs.append(e("aten._to_copy.default", bad, dtype=f32, name="found_inf"))
        return outs

    return (_function(f"{opt.sym_name.data}_unscale",
                      [*zip(types, attrs, strict=True), (_SCALAR, {"name": SCALE, "kind": SCALE})],
                      body, [*attrs, {"name": "found_inf", "kind": "found_inf"}]), grads)


def _skip_step(opt: func.FuncOp) -> func.FuncOp:
    """`@{opt}_skip`: `opt` with a last argument, the found-inf flag; each
    result is `where(found_inf > 0, old, new)`, the old value being the
    argument of the same name and kind (GradScaler.step skips the
    optimizer). `opt` stays as it is for @train_step."""
    name = opt.sym_name.data
    opt = opt.clone()
    opt.sym_name = StringAttr(f"{name}_skip")
    block = opt.body.block
    f = _add_arg(opt, _SCALAR, {"name": "found_inf", "kind": "found_inf"})
    by_key = {}
    for i, a in enumerate(block.args[:-1]):
        at = graph_attrs(opt, i)
        if at.get("kind") in ("param", "state"):
            by_key[(at.get("name"), at.get("kind"))] = a
    ret = block.last_op
    e = _Builder(Block())
    skip = e("aten.gt.Scalar", f, 0.0, name="skip")
    outs = []
    for k, v in enumerate(ret.operands):
        at = graph_attrs(opt, k, True)
        old = by_key.get((at.get("name"), at.get("kind")))
        if old is None:
            raise PiperError(f"loss-scale: result {k} of @{name} "
                             f"('{at.get('name')}') is no parameter or state it reads")
        outs.append(e("aten.where.self", skip, old, v,
                      name=v.name_hint or ""))
    for o in list(e.block.ops):
        o.detach()
        block.insert_op_before(o, ret)
    for k, v in enumerate(outs):
        ret.operands[k] = v
    return opt


def _dependency_order(ops: list[Operation]) -> list[Operation]:
    """`ops` in their order, except that an op waits (as little as it
    must) until the ops defining its operands stand before it."""
    index = {id(o): k for k, o in enumerate(ops)}
    defined_by = {r: o for o in ops for r in o.results}
    missing: dict[int, int] = {}
    waiters: dict[int, list[int]] = {}
    ready: list[int] = []
    for k, o in enumerate(ops):
        deps = {index[id(defined_by[v])] for v in o.operands if v in defined_by}
        missing[k] = len(deps)
        for j in deps:
            waiters.setdefault(j, []).append(k)
        if not deps:
            heapq.heappush(ready, k)
    out = []
    while ready:
        k = heapq.heappop(ready)
        out.append(ops[k])
        for w in waiters.get(k, ()):
            missing[w] -= 1
            if missing[w] == 0:
                heapq.heappush(ready, w)
    if len(out) != len(ops):
        raise PiperError("loss-scale: the plan's ops read each other in a cycle")
    return out
