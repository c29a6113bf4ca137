"""microbatch{n} and replicate{n}: the two directives that multiply a plan.

Both clone part of the dist.plan and then reconcile the per-step ops that
consumed the cloned values:

- `microbatch{n=4}` clones every per-microbatch op (inputs, F/B/I/W tasks,
  the tangent, the sends between them) n times; per-step consumers (the
  optimizer, the loss store) get the `dist.sum` of the n copies. The tangent
  becomes 1/n so the step computes the mean loss over microbatches, as one
  process training on the whole batch does.
- `replicate{n=2}` (data parallelism) adds a mesh axis (`dp` by default) and
  clones the whole plan once per replica on its own devices; the gradients
  entering each optimizer task are all-reduced (sum) across replicas, the
  tangent and loss are scaled by 1/n. `stream="grads"` puts the gradient
  all-reduces on that stream. `bucket_bytes=N` packs a stage's gradients
  (same element type, in argument order) into buckets of at most N bytes,
  `dist.pack` -> one all_reduce -> `dist.unpack`, so a stage with many
  small parameters sends few large messages; a gradient larger than N gets
  a bucket of its own (no pack). Each bucket's pack and all-reduce stand
  right after the task that produces its last gradient, so it overlaps
  the rest of the backward, and the optimizer tasks run in the order
  their buckets were started (the first reduced stage's optimizer runs
  while later buckets are in flight); the loss all-reduce is waited for
  at the end of the step.

Captured shapes are one microbatch on one replica: the global batch is
microbatches x replicas x the captured batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import IntAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError
from piper.dialects import dist
from piper.dialects.dist import _int_array
from piper.passes.plan_order import order_topologically


def the_plan(module: ModuleOp, pass_name: str) -> dist.PlanOp:
    plans = [o for o in module.body.block.ops if isinstance(o, dist.PlanOp)]
    if len(plans) != 1:
        raise PiperError(
            f"{pass_name}: expected one dist.plan, found {len(plans)}; "
            "run convert-graph-to-dist first"
        )
    return plans[0]


def _per_microbatch(plan: dist.PlanOp) -> set[Operation]:
    """Ops that belong to one microbatch (everything a microbatch's data
    flows through before the per-step optimizer / stores)."""
    mine: set[Operation] = set()
    for op in plan.body.block.ops:
        if isinstance(op, dist.InputOp):
            mine.add(op)
        elif isinstance(op, dist.TaskOp) and op.kind.data != "OPT":
            mine.add(op)
        elif isinstance(op, dist.SendOp | dist.SumOp) and any(
            v.owner in mine for v in op.operands
        ):
            mine.add(op)
    for op in plan.body.block.ops:  # tangents feed only per-microbatch tasks
        if isinstance(op, dist.FillOp) and op.result.uses and all(
            u.operation in mine for u in op.result.uses
        ):
            mine.add(op)
    return mine


def _clone_into(op: Operation, mapping: dict[SSAValue, SSAValue], **props) -> Operation:
    new = op.clone(value_mapper=dict(mapping))
    for k, v in props.items():
        if k in new.properties:
            new.properties[k] = v
    for old_r, new_r in zip(op.results, new.results, strict=True):
        mapping[old_r] = new_r
        new_r.name_hint = old_r.name_hint
    return new


@dataclass(frozen=True)
class Microbatch(ModulePass):
    name = "microbatch"

    n: int = 1

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.n < 1:
            raise PiperError(f"microbatch: n must be at least 1, got {self.n}")
        plan = the_plan(op, self.name)
        if plan.microbatches.data != 1:
            raise PiperError(f"microbatch: the plan is already split into {plan.microbatches.data}")
        if self.n == 1:
            return
        block = plan.body.block
        per_mb = _per_microbatch(plan)
        ops = list(block.ops)
        copies: list[dict[SSAValue, SSAValue]] = [{} for _ in range(self.n)]
        new_ops: list[Operation] = []
        for o in ops:
            if o not in per_mb:
                continue
            for k in range(self.n):
                c = _clone_into(o, copies[k], mb=IntAttr(k))
                if isinstance(c, dist.FillOp):
                    c.value = type(c.value)(c.value.value.data / self.n, c.value.type)
                new_ops.append(c)
        # per-step ops: reconcile uses of per-microbatch values
        rest: list[Operation] = []
        for o in ops:
            if o in per_mb:
                continue
            for i, v in enumerate(o.operands):
                if v.owner in per_mb:
                    scale = 1.0 / self.n if _is_loss_store(o) else 1.0
                    dev = dist.device_of(v)
                    s = dist.SumOp([copies[k][v] for k in range(self.n)], scale, dev)
                    s.result.name_hint = (v.name_hint or "v") + "_sum"
                    rest.append(s)
                    o.operands[i] = s.result
            rest.append(o)
        for o in ops:
            o.detach()
        for o in [x for x in ops if x in per_mb]:
            o.drop_all_references()
        for o in new_ops + rest:
            block.add_op(o)
        _order_topologically(block)
        plan.microbatches = IntAttr(self.n)


def _is_loss_store(op: Operation) -> bool:
    return isinstance(op, dist.StoreOp) and op.is_loss


def _order_topologically(block) -> None:
    """Stable topological order (ops keep their relative order when free)."""
    order_topologically(block)


@dataclass(frozen=True)
class Replicate(ModulePass):
    name = "replicate"

    n: int = 1
    axis: str = "dp"
    stream: str = ""  # gradient all-reduces; "": the default comm stream
    bucket_bytes: int = 0  # 0: one all-reduce per gradient

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.n < 1:
            raise PiperError(f"replicate: n must be at least 1, got {self.n}")
        if self.bucket_bytes < 0:
            raise PiperError(f"replicate: bucket_bytes must be at least 0, got {self.bucket_bytes}")
        plan = the_plan(op, self.name)
        mesh = plan.mesh
        if self.axis in mesh:
            raise PiperError(f"replicate: the mesh already has an axis '{self.axis}'")
        if self.n == 1:
            mesh[self.axis] = 1
            plan.axes, plan.shape = _mesh_props(mesh)
            return
        n = self.n

        def dev(d: int, r: int) -> int:  # row-major with the new axis last
            return d * n + r

        block = plan.body.block
        ops = list(block.ops)
        maps: list[dict[SSAValue, SSAValue]] = [{} for _ in range(n)]
        out: list[Operation] = []
        early: set[Operation] = set()  # gradient packs and all-reduces
        late: list[Operation] = []  # the loss stores
        for o in ops:
            grads_in = isinstance(o, dist.TaskOp) and o.kind.data == "OPT"
            if grads_in:
                self._all_reduce_grads(o, maps, dev, out, early)
            if _is_loss_store(o):
                for r in range(n):
                    v = maps[r][o.value]
                    s = dist.SumOp([v], 1.0 / n, dist.device_of(v))
                    s.result.name_hint = "loss_part"
                    out.append(s)
                    maps[r][o.value] = s.result
                parts = [maps[r][o.value] for r in range(n)]
                ar = dist.AllReduceOp(parts, [dist.device_of(p) for p in parts],
                                      [p.type for p in parts], {"reduce": _sum()})
                out.append(ar)
                for r in range(n):
                    maps[r][o.value] = ar.results[r]
            for r in range(n):
                props = {}
                for key in ("device", "src", "dst"):
                    if key in o.properties:
                        props[key] = IntAttr(dev(o.properties[key].data, r))
                if "replica" in o.properties:
                    props["replica"] = IntAttr(r)
                c = _clone_into(o, maps[r], **props)
                if isinstance(c, dist.FillOp):
                    c.value = type(c.value)(c.value.value.data / n, c.value.type)
                if isinstance(c, dist.CollectiveOp):
                    c.group = _int_array([dev(d, r) for d in o.members])
                (late if _is_loss_store(o) else out).append(c)
        for o in ops:
            o.detach()
        for o in ops:
            o.drop_all_references()
        for o in _optimizers_by_readiness(_start_early(out, early)) + late:
            block.add_op(o)
        mesh[self.axis] = n
        plan.axes, plan.shape = _mesh_props(mesh)

    def _all_reduce_grads(self, opt: dist.TaskOp, maps, dev, out, early) -> None:
        from xdsl.dialects import func
        from xdsl.traits import SymbolTable

        from piper.passes.graph_to_dist import arg_info

        fn = SymbolTable.lookup_symbol(opt, opt.callee)
        assert isinstance(fn, func.FuncOp)
        grads = [v for i, v in enumerate(opt.args) if arg_info(fn, i).get("kind") == "grad"]
        grads = list(dict.fromkeys(grads))
        n = len(maps)
        extra = {"reduce": _sum()}
        if self.stream:
            extra["stream"] = _str(self.stream)
        for bucket in _buckets(grads, self.bucket_bytes):
            if len(bucket) == 1:
                (v,) = bucket
                parts = [maps[r][v] for r in range(n)]
            else:
                parts = []
                for r in range(n):
                    pk = dist.PackOp([maps[r][v] for v in bucket], dist.device_of(maps[r][bucket[0]]))
                    pk.result.name_hint = "bucket"
                    out.append(pk)
                    early.add(pk)
                    parts.append(pk.result)
            ar = dist.AllReduceOp(parts, [dist.device_of(p) for p in parts],
                                  [p.type for p in parts], dict(extra))
            out.append(ar)
            early.add(ar)
            for r in range(n):
                if len(bucket) == 1:
                    reduced = [ar.results[r]]
                else:
                    ar.results[r].name_hint = "bucket_ar"
                    up = dist.UnpackOp(ar.results[r], dist.device_of(parts[r]),
                                       [v.type for v in bucket])
                    out.append(up)
                    reduced = list(up.outputs)
                for v, g in zip(bucket, reduced, strict=True):
                    maps[r][v] = g
                    g.name_hint = (v.name_hint or "g") + "_ar"


def _start_early(out: list[Operation], early: set[Operation]) -> list[Operation]:
    """`out` with every op of `early` moved up to just after the last op
    it reads (a collective: to just before the next compute task on one of
    its devices, so other ops keep their order): a gradient bucket is
    packed and its reduction started as soon as its gradients exist, so it
    runs while the rest of the backward computes (its wait stays before
    the optimizer that reads it). Early ops that land on the same place
    keep their order."""
    from bisect import bisect_left

    from piper.dialects.dist import _devices_of_op

    pos = {o: i for i, o in enumerate(out)}
    tasks: dict[int, list[int]] = {}  # device -> positions of its tasks
    for i, o in enumerate(out):
        if isinstance(o, dist.TaskOp):
            tasks.setdefault(o.device.data, []).append(i)
    target: dict[Operation, int] = {}  # early op -> the op it goes just before
    for o in out:
        if o not in early:
            continue
        lo = max((target[v.owner] if v.owner in target else pos[v.owner] + 1
                  for v in o.operands if v.owner in pos), default=0)
        devs = _devices_of_op(o)
        if len(devs) > 1:
            nxt = [t[k] for t in (tasks.get(d, []) for d in devs)
                   if (k := bisect_left(t, lo)) < len(t)]
            lo = min(nxt, default=len(out))
        target[o] = min(lo, pos[o])
    return sorted(out, key=lambda o: (target[o], 0, pos[o]) if o in target else (pos[o], 1, 0))


def _optimizers_by_readiness(out: list[Operation]) -> list[Operation]:
    """`out` with the optimizer tasks (each with the unpacks, sums, loads and
    fills that feed it alone and the stores of its results) in the order their
    reduced gradients become available, in the slots they held (loads
    several of them read go first): the optimizer of the first reduced
    bucket runs while later buckets are still in flight. Optimizer tasks
    are independent of each other, so results do not change."""
    pos = {o: i for i, o in enumerate(out)}
    groups: list[tuple[int, int, list[Operation]]] = []
    shared: dict[Operation, None] = {}
    for t in out:
        if not (isinstance(t, dist.TaskOp) and t.kind.data == "OPT"):
            continue
        feeds = [v.owner for v in t.args if isinstance(v.owner, dist.UnpackOp | dist.SumOp)
                 and all(u.operation is t for r in v.owner.results for u in r.uses)]
        for v in t.args:
            if isinstance(v.owner, dist.LoadOp | dist.FillOp) and v.owner in pos:
                if all(u.operation is t for u in v.owner.result.uses):
                    feeds.append(v.owner)
                elif all(isinstance(u.operation, dist.TaskOp) and u.operation.kind.data == "OPT"
                         for u in v.owner.result.uses):
                    shared[v.owner] = None
        stores = [u.operation for r in t.results for u in r.uses
                  if isinstance(u.operation, dist.StoreOp)]
        reduced = [v.owner for v in t.args if isinstance(v.owner, dist.CollectiveOp)]
        reduced += [v.owner for f in feeds if isinstance(f, dist.UnpackOp | dist.SumOp)
                    for v in f.operands if isinstance(v.owner, dist.CollectiveOp)]
        # a sum of unpacked chunks (ZeRO's packed reduce-scatters): the collectives
        # behind the unpacks
        reduced += [w.owner for f in feeds if isinstance(f, dist.SumOp)
                    for v in f.operands if isinstance(v.owner, dist.UnpackOp)
                    for w in v.owner.operands if isinstance(w.owner, dist.CollectiveOp)]
        ready = max((pos[c] for c in reduced if c in pos), default=-1)
        groups.append((ready, pos[t], list(dict.fromkeys(feeds)) + [t] + stores))
    if len(groups) < 2:
        return out
    # each device's optimizers in readiness order, in the places its
    # optimizers held among all devices' (other devices' order is kept)
    by_dev: dict[int, list] = {}
    for g in sorted(groups, key=lambda g: g[:2]):
        by_dev.setdefault(_task_device(g), []).append(g)
    order = [by_dev[_task_device(g)].pop() for g in groups[::-1]][::-1]
    # each group after its last outside input, none before the first
    # optimizer's old place
    key: dict[Operation, tuple] = {}
    anchor = min(g[1] for g in groups) - 1
    for rank, (_, _, members) in enumerate([(-2, -2, list(shared))] + order):
        inside = set(members)
        deps = [pos[v.owner] for o in members for v in o.operands
                if v.owner in pos and v.owner not in inside]
        anchor = max([anchor] + deps)
        for k, o in enumerate(members):
            key[o] = (anchor, 1, rank, k)
    new = sorted(out, key=lambda o: key.get(o, (pos[o], 0, 0, 0)))
    at = {o: i for i, o in enumerate(new)}
    if any(at[v.owner] > i for i, o in enumerate(new) for v in o.operands if v.owner in at):
        return out  # something else reads an optimizer's result early: keep the order
    return new


def _task_device(group) -> int:
    """The device of the optimizer task in a (ready, position, members) group."""
    return next(o.device.data for o in group[2] if isinstance(o, dist.TaskOp))


def _buckets(grads: list[SSAValue], limit: int) -> list[list[SSAValue]]:
    """Consecutive gradients of one element type, at most `limit` bytes a
    bucket (0: each gradient alone)."""
    out: list[list[SSAValue]] = []
    size = 0
    for v in grads:
        nbytes = dist.type_bytes(v.type)
        cur = out[-1] if out else None
        if (limit and cur and size + nbytes <= limit
                and cur[0].type.element_type == v.type.element_type):
            cur.append(v)
            size += nbytes
        else:
            out.append([v])
            size = nbytes
    return out


def _str(text: str):
    from xdsl.dialects.builtin import StringAttr

    return StringAttr(text)


def _sum():
    from xdsl.dialects.builtin import StringAttr

    return StringAttr("sum")


def _mesh_props(mesh: dict[str, int]):
    from xdsl.dialects.builtin import ArrayAttr, StringAttr

    return ArrayAttr([StringAttr(a) for a in mesh]), _int_array(list(mesh.values()))
