"""split{n} and replicate{n}: the two directives that multiply a plan.

Both clone part of the dist.plan and then reconcile the per-step ops that
consumed the cloned values:

- `split{n=4}` (microbatching) clones every per-microbatch op (inputs, F/B/I/W tasks,
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
from piper.passes.func_utils import set_mesh, the_plan
from piper.passes.plan_order import optimizers_by_readiness, start_early, topological_order


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
    """A clone of `op` (with its results' name hints) reading its operands
    through `mapping` (an operand not in it stays as it is); the clone's
    results are added to `mapping`. Only the operands' entries are handed to
    `clone` (which adds to the dict it is given): copying the whole mapping
    per op made cloning a plan quadratic."""
    new = op.clone(value_mapper={v: mapping[v] for v in op.operands if v in mapping})
    for k, v in props.items():
        if k in new.properties:
            new.properties[k] = v
    mapping.update(zip(op.results, new.results, strict=True))
    return new


@dataclass(frozen=True)
class Split(ModulePass):
    """The `split` directive: n microbatches along the batch dim."""

    name = "split"

    n: int = 1

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.n < 1:
            raise PiperError(f"{self.name}: n must be at least 1, got {self.n}")
        plan = the_plan(op, self.name)
        if plan.microbatches.data != 1:
            raise PiperError(f"{self.name}: the plan is already split into "
                             f"{plan.microbatches.data} microbatches")
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
        for o in topological_order(new_ops + rest):
            block.add_op(o)
        plan.microbatches = IntAttr(self.n)


@dataclass(frozen=True)
class Microbatch(Split):
    """`microbatch`: the old name of `split`, kept for one release."""

    name = "microbatch"


def _is_loss_store(op: Operation) -> bool:
    return isinstance(op, dist.StoreOp) and op.is_loss


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
            set_mesh(plan, mesh)
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
        for o in optimizers_by_readiness(start_early(out, early)) + late:
            block.add_op(o)
        mesh[self.axis] = n
        set_mesh(plan, mesh)

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
