"""zero{stage=1|2|3}: ZeRO sharding of training state across replicas.

Runs after `replicate{n}`. Each optimizer task then works on flat shard k
of n of its parameters, gradients and optimizer state (the optimizer
function is re-typed for shard shapes; captured optimizers are elementwise,
so this keeps their meaning exactly):

- stage 1: gradients are reduce-scattered instead of all-reduced, optimizer
  state is stored sharded, updated parameter shards are all-gathered.
- stage 2: as 1, and each microbatch's gradient is reduce-scattered as soon
  as it exists, so only gradient shards are accumulated.
- stage 3: as 2, and parameters are stored sharded too: every task that
  reads a parameter gets it from an all_gather of the shards just before.

Each reduce-scatter starts right after the task that produces its
gradient (before that device's next task), so it overlaps the rest of the
backward, and each device's optimizer tasks run in the order their
gradients are reduced.

Every sharded tensor must divide into n equal parts; one that does not is
an error naming the tensor.

Options: `stages="0,2"` shards only those stages' state (default: every
stage); `reduce_stream` / `gather_stream` put the reduce-scatters and
all-gathers on named streams; `prefetch=k` (stage 3) marks each parameter
all-gather `prefetch k`: it starts k compute tasks before the task that
needs it (0: just before it), instead of at the start of the step, so only
the parameters of the next k+1 tasks are gathered at a time
(piper/passes/plan_order.py places it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.traits import SymbolTable

from piper.diagnostics import PiperError
from piper.dialects import dist
from piper.passes.graph_to_dist import arg_info
from piper.passes.plan_order import place_prefetched
from piper.passes.replicate_microbatch import (
    _optimizers_by_readiness,
    _order_topologically,
    _start_early,
    the_plan,
)
from piper.passes.retype import retype_function


def _flat(t: TensorType, n: int, name: str) -> TensorType:
    numel = math.prod(t.get_shape())
    if numel % n:
        raise PiperError(
            f"zero: '{name}' has {numel} elements, which do not divide over {n} replicas"
        )
    return TensorType(t.element_type, [numel // n])


def _sharded(info: dict) -> bool:
    kind = info.get("kind")
    return kind in ("param", "grad") or (kind == "state" and info.get("name") != "step")


@dataclass(frozen=True)
class Zero(ModulePass):
    name = "zero"

    stage: int = 1
    axis: str = "dp"
    stages: str = ""  # "0,2": shard these stages only; "": all
    gather_stream: str = ""  # "": the default comm stream
    reduce_stream: str = ""
    prefetch: int = -1  # stage 3: gather k tasks ahead; -1: as early as possible

    def _selected(self) -> set[int] | None:
        if not self.stages.strip():
            return None
        try:
            return {int(x) for x in self.stages.split(",")}
        except ValueError:
            raise PiperError(f"zero: stages must be stage numbers joined by ',', got "
                             f"'{self.stages}'") from None

    def _extra(self, stream: str) -> dict:
        from xdsl.dialects.builtin import StringAttr

        return {"stream": StringAttr(stream)} if stream else {}

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.stage not in (1, 2, 3):
            raise PiperError(f"zero: stage must be 1, 2 or 3, got {self.stage}")
        if self.prefetch < -1:
            raise PiperError(f"zero: prefetch must be -1 (off) or at least 0, got {self.prefetch}")
        if self.prefetch >= 0 and self.stage != 3:
            raise PiperError(f"zero: prefetch applies to stage 3 (parameter gathering); "
                             f"this is stage {self.stage}")
        selected = self._selected()
        plan = the_plan(op, self.name)
        n = plan.mesh.get(self.axis)
        if n is None:
            raise PiperError(f"zero: the mesh has no '{self.axis}' axis; replicate first")
        if n == 1:
            return
        block = plan.body.block
        opts: dict[int, dict[int, dist.TaskOp]] = {}
        for o in block.ops:
            if isinstance(o, dist.TaskOp) and o.kind.data == "OPT":
                if selected is None or o.stage.data in selected:
                    opts.setdefault(o.stage.data, {})[o.replica.data] = o
        if selected is not None:
            have = {o.stage.data for o in block.ops if isinstance(o, dist.TaskOp)}
            absent = sorted(selected - have)
            if absent:
                raise PiperError(f"zero: stages {absent} are not in the plan (stages "
                                 f"{', '.join(map(str, sorted(have)))})")
        shard_loads: dict[tuple[str, int], SSAValue] = {}
        full_loads: set[Operation] = set()

        def shard_load(name: str, dev: int, t: TensorType, r: int) -> SSAValue:
            key = (name, dev)
            if key not in shard_loads:
                ld = dist.LoadOp(name, dev, _flat(t, n, name), (r, n))
                ld.result.name_hint = (name.replace(".", "_").replace(":", "_")) + "_shard"
                block.add_op(ld)
                shard_loads[key] = ld.result
            return shard_loads[key]

        scattered: dict[Operation, Operation] = {}
        for stage, by_rep in sorted(opts.items()):
            tasks = [by_rep[r] for r in range(n)]
            fn = SymbolTable.lookup_symbol(tasks[0], tasks[0].callee)
            assert isinstance(fn, func.FuncOp)
            infos = [arg_info(fn, i) for i in range(len(fn.function_type.inputs.data))]
            types = [(_flat(t, n, info.get("name", "?")) if _sharded(info) else t)
                     for t, info in zip(fn.function_type.inputs.data, infos, strict=True)]
            new_name = f"{fn.sym_name.data}_zero{n}"
            new_fn = SymbolTable.lookup_symbol(op, new_name)
            if new_fn is None:
                new_fn = retype_function(fn, new_name, types)
                op.body.block.insert_op_after(new_fn, fn)
            new_tasks = []
            for r, t in enumerate(tasks):
                dev = t.device.data
                args = []
                for i, v in enumerate(t.args):
                    info = infos[i]
                    kind, name = info.get("kind"), info.get("name", "")
                    if kind == "grad":
                        args.append(self._grad_shard(v, r, n, scattered, block))
                    elif kind == "param" and self.stage < 3:
                        sh = dist.ShardOp(v, r, n, dev)
                        sh.result.name_hint = (v.name_hint or "p") + "_part"
                        block.add_op(sh)
                        args.append(sh.result)
                    elif _sharded(info):
                        if isinstance(v.owner, dist.LoadOp):
                            full_loads.add(v.owner)
                        args.append(shard_load(name, dev, v.type, r))
                    else:
                        args.append(v)
                nt = dist.TaskOp("OPT", stage, t.mb.data, r, dev, new_name, args,
                                 new_fn.function_type.outputs.data)
                block.add_op(nt)
                new_tasks.append(nt)
            res_infos = [arg_info(fn, j, results=True) for j in range(len(fn.function_type.outputs.data))]
            for j, info in enumerate(res_infos):
                olds = [t.res[j] for t in tasks]
                news = [nt.res[j] for nt in new_tasks]
                for o_, n_ in zip(olds, news, strict=True):
                    n_.name_hint = o_.name_hint
                if info.get("kind") == "param" and self.stage < 3:
                    ag = dist.AllGatherOp(news, [t.device.data for t in tasks],
                                          [o.type for o in olds], self._extra(self.gather_stream))
                    block.add_op(ag)
                    for o_, g in zip(olds, ag.outputs, strict=True):
                        g.name_hint = o_.name_hint
                        o_.replace_all_uses_with(g)
                elif _sharded(info):
                    for r, (o_, n_) in enumerate(zip(olds, news, strict=True)):
                        for use in list(o_.uses):
                            st = use.operation
                            if isinstance(st, dist.StoreOp):
                                rep = dist.StoreOp(st.tensor_name.data, st.device.data, n_, (r, n))
                                block.insert_op_before(rep, st)
                                block.erase_op(st)
                            else:
                                raise PiperError("zero: an optimizer result is used by a non-store op")
                else:
                    for o_, n_ in zip(olds, news, strict=True):
                        o_.replace_all_uses_with(n_)
            for t in tasks:
                block.erase_op(t)
        if self.stage == 3:
            self._gather_params(block, n, shard_load, full_loads, selected)
        for ld in full_loads:
            if ld.parent is not None and not ld.result.uses:
                block.erase_op(ld)
        for o in list(block.ops):  # all-reduces replaced by reduce-scatters
            if isinstance(o, dist.AllReduceOp) and all(not r.uses for r in o.results):
                block.erase_op(o)
        _order_topologically(block)
        ops = list(block.ops)
        early = {o for o in ops if isinstance(o, dist.ReduceScatterOp)}
        ops = _optimizers_by_readiness(_start_early(ops, early))
        for o in ops:
            o.detach()
        for o in ops:
            block.add_op(o)
        place_prefetched(block)

    def _grad_shard(self, v: SSAValue, r: int, n: int, scattered: dict, block) -> SSAValue:
        ar = v.owner
        if isinstance(ar, dist.UnpackOp):
            raise PiperError("zero: the gradients are bucketed (replicate bucket_bytes); ZeRO "
                             "reduce-scatters each gradient itself, so drop bucket_bytes")
        if not isinstance(ar, dist.AllReduceOp):
            raise PiperError("zero: optimizer gradients must come from replicate's all_reduce")
        if ar not in scattered:
            group = ar.members
            ins = list(ar.inputs)
            sums = [x.owner if isinstance(x.owner, dist.SumOp) else None for x in ins]
            if self.stage >= 2 and all(sums):
                # scatter each microbatch's gradient, then add the shards
                k = len(sums[0].inputs)
                parts = [[] for _ in range(n)]
                for m in range(k):
                    rs = dist.ReduceScatterOp([s.inputs[m] for s in sums], group,
                                              [_flat(x.type, n, "gradient") for x in ins],
                                              {"reduce": _sum_attr(),
                                               **self._extra(self.reduce_stream)})
                    block.add_op(rs)
                    for i in range(n):
                        parts[i].append(rs.outputs[i])
                outs = []
                for i in range(n):
                    s = dist.SumOp(parts[i], sums[i].scale.value.data, group[i])
                    s.result.name_hint = (ins[i].name_hint or "g") + "_shard"
                    block.add_op(s)
                    outs.append(s.result)
            else:
                rs = dist.ReduceScatterOp(ins, group, [_flat(x.type, n, "gradient") for x in ins],
                                          {"reduce": _sum_attr(),
                                           **self._extra(self.reduce_stream)})
                block.add_op(rs)
                outs = list(rs.outputs)
                for i, o in enumerate(outs):
                    o.name_hint = (ins[i].name_hint or "g") + "_shard"
            scattered[ar] = outs
        return scattered[ar][list(ar.results).index(v)]

    def _gather_params(self, block, n, shard_load, full_loads, selected) -> None:
        """Stage 3: parameters live as shards; gather them before each use."""
        from xdsl.dialects.builtin import IntAttr

        extra = self._extra(self.gather_stream)
        if self.prefetch >= 0:
            extra["prefetch"] = IntAttr(self.prefetch)
        groups: dict[tuple, list[dist.TaskOp]] = {}
        for o in block.ops:
            if (isinstance(o, dist.TaskOp) and o.kind.data != "OPT"
                    and (selected is None or o.stage.data in selected)):
                groups.setdefault((o.callee.root_reference.data, o.stage.data, o.mb.data), []).append(o)
        for (callee, _, _), tasks in groups.items():
            tasks.sort(key=lambda t: t.replica.data)
            if len(tasks) != n:
                raise PiperError(f"zero: task @{callee} is not replicated {n} times")
            fn = _func_lookup(tasks[0], callee)
            for i in range(len(tasks[0].args)):
                info = arg_info(fn, i)
                if info.get("kind") != "param":
                    continue
                olds = [t.args[i] for t in tasks]
                for v in olds:
                    if isinstance(v.owner, dist.LoadOp):
                        full_loads.add(v.owner)
                shards = [shard_load(info["name"], t.device.data, v.type, r)
                          for r, (t, v) in enumerate(zip(tasks, olds, strict=True))]
                ag = dist.AllGatherOp(shards, [t.device.data for t in tasks], [v.type for v in olds],
                                      dict(extra))
                block.add_op(ag)
                for t, g, v in zip(tasks, ag.outputs, olds, strict=True):
                    g.name_hint = (v.name_hint or "p") + "_full"
                    t.operands[i] = g


def _func_lookup(anchor, name):
    from xdsl.dialects.builtin import SymbolRefAttr

    return SymbolTable.lookup_symbol(anchor, SymbolRefAttr(name))


def _sum_attr():
    from xdsl.dialects.builtin import StringAttr

    return StringAttr("sum")
