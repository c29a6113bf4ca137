"""shard{stage=1|2|3}: ZeRO sharding of training state across replicas.

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

import functools
import math
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr, TensorType
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.traits import SymbolTable

from piper.diagnostics import PiperError
from piper.dialects import dist
from piper.passes.graph_to_dist import arg_info
from piper.passes.plan_order import place_prefetched
from piper.passes.func_utils import sanitize, the_plan
from piper.passes.plan_order import optimizers_by_readiness, start_early, topological_order
from piper.passes.retype import retype_function


def _flat(t: TensorType, n: int, name: str) -> TensorType:
    flat = _flat_type(t, n)
    if flat is None:
        raise PiperError(f"shard: '{name}' has {math.prod(t.get_shape())} elements, which do "
                         f"not divide over {n} replicas")
    return flat


@functools.lru_cache(maxsize=1 << 12)
def _flat_type(t: TensorType, n: int) -> TensorType | None:
    """One replica's flat shard of a `t` (None if it does not divide); a
    plan asks for the same few shapes thousands of times, and building a
    type is verified."""
    numel = math.prod(t.get_shape())
    return None if numel % n else TensorType(t.element_type, [numel // n])


def _sharded(info: dict) -> bool:
    kind = info.get("kind")
    return kind in ("param", "grad") or (kind == "state" and info.get("name") != "step")


@dataclass(frozen=True)
class Shard(ModulePass):
    """The `shard` directive: ZeRO-1/2/3 over the replicas of `axis`."""

    name = "shard"

    stage: int = 1
    axis: str = "dp"
    stages: str = ""  # "0,2": shard these stages only; "": all
    gather_stream: str = ""  # "": the default comm stream
    reduce_stream: str = ""
    prefetch: int = -1  # stage 3: gather k tasks ahead; -1: as early as possible
    pack: bool = True  # one packed collective per task (gathers) / stage (scatters)

    def _selected(self) -> set[int] | None:
        if not self.stages.strip():
            return None
        parts = [x.strip() for x in self.stages.split(",")]
        if all(x.isascii() and x.isdigit() for x in parts):
            return {int(x) for x in parts}
        raise PiperError(f"{self.name}: stages must be stage numbers joined by ',', got "
                         f"'{self.stages}'")

    def _extra(self, stream: str) -> dict:
        return {"stream": StringAttr(stream)} if stream else {}

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.stage not in (1, 2, 3):
            raise PiperError(f"{self.name}: stage must be 1, 2 or 3, got {self.stage}")
        if self.prefetch < -1:
            raise PiperError(f"{self.name}: prefetch must be -1 (off) or at least 0, got {self.prefetch}")
        if self.prefetch >= 0 and self.stage != 3:
            raise PiperError(f"{self.name}: prefetch applies to stage 3 (parameter gathering); "
                             f"this is stage {self.stage}")
        selected = self._selected()
        plan = the_plan(op, self.name)
        n = plan.mesh.get(self.axis)
        if n is None:
            raise PiperError(f"{self.name}: the mesh has no '{self.axis}' axis; replicate first")
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
                raise PiperError(f"{self.name}: stages {absent} are not in the plan (stages "
                                 f"{', '.join(map(str, sorted(have)))})")
        shard_loads: dict[tuple[str, int], SSAValue] = {}
        full_loads: set[Operation] = set()

        def shard_load(name: str, dev: int, t: TensorType, r: int) -> SSAValue:
            key = (name, dev)
            if key not in shard_loads:
                ld = dist.LoadOp(name, dev, _flat(t, n, name), (r, n))
                ld.result.name_hint = sanitize(name) + "_shard"
                block.add_op(ld)
                shard_loads[key] = ld.result
            return shard_loads[key]

        scattered: dict[Operation, Operation] = {}
        if self.pack:
            for stage, by_rep in sorted(opts.items()):
                self._pack_scatter(by_rep[0], n, scattered, block)
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
            updated = [j for j, info in enumerate(res_infos) if info.get("kind") == "param"]
            packed_gather = (self.pack and self.stage < 3 and len(updated) >= 2 and len(
                {tasks[0].res[j].type.element_type for j in updated}) == 1)
            if packed_gather:  # the updated parameter shards, in one all_gather
                self._gather_updated(tasks, new_tasks, updated, n, block)
            for j, info in enumerate(res_infos):
                olds = [t.res[j] for t in tasks]
                news = [nt.res[j] for nt in new_tasks]
                for o_, n_ in zip(olds, news, strict=True):
                    n_.name_hint = o_.name_hint
                if info.get("kind") == "param" and packed_gather:
                    continue
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
                                raise PiperError("shard: an optimizer result is used by a non-store op")
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
        for o in reversed(list(block.ops)):  # and the full-gradient sums they reduced
            if isinstance(o, dist.SumOp) and not o.result.uses:
                block.erase_op(o)
        ops = topological_order(list(block.ops))
        early = {o for o in ops if isinstance(o, dist.ReduceScatterOp)}
        early |= {v.owner for o in early for v in o.operands if isinstance(v.owner, dist.PackOp)}
        ops = optimizers_by_readiness(start_early(ops, early))
        for o in ops:
            o.detach()
        for o in ops:
            block.add_op(o)
        place_prefetched(block)

    def _pack_scatter(self, task: dist.TaskOp, n: int, scattered: dict, block) -> None:
        """The gradients of one stage's optimizer (`task`, replica 0) as one
        reduce_scatter per microbatch (stage >= 2) or per step (stage 1) of
        a shard-major pack, each member unpacking its chunks; fills
        `scattered` for `_grad_shard`. Gradients of more than one element
        type, or fewer than two, keep one reduce_scatter each."""
        fn = _func_lookup(task, task.callee.root_reference.data)
        ars, names = [], []
        for i, v in enumerate(task.args):
            info = arg_info(fn, i)
            if info.get("kind") == "grad" and isinstance(v.owner, dist.AllReduceOp):
                if v.owner not in ars and v.owner not in scattered:
                    ars.append(v.owner)
                    names.append(info.get("name", "gradient"))
        if len(ars) < 2 or len({a.inputs[0].type.element_type for a in ars}) != 1:
            return
        group = ars[0].members
        if any(a.members != group for a in ars):
            return
        ins = [list(a.inputs) for a in ars]  # [gradient][replica]
        flat = [[_flat(x.type, n, name) for x in row] for row, name in zip(ins, names, strict=True)]
        sums = [[x.owner if isinstance(x.owner, dist.SumOp) else None for x in row] for row in ins]
        counts = {len(sm.inputs) for row in sums for sm in row if sm is not None}
        per_mb = self.stage >= 2 and all(all(row) for row in sums) and len(counts) == 1
        rounds = ([[[sums[j][r].inputs[m] for j in range(len(ars))] for r in range(n)]
                   for m in range(counts.pop())] if per_mb
                  else [[[ins[j][r] for j in range(len(ars))] for r in range(n)]])
        parts = [[[] for _ in range(n)] for _ in ars]  # [gradient][replica] -> chunks
        elem = ins[0][0].type.element_type
        total = sum(math.prod(x.type.get_shape()) for x in rounds[0][0])
        for grads in rounds:
            packs = []
            for r in range(n):
                pk = dist.PackOp(grads[r], group[r], shards=n)
                pk.result.name_hint = "grads_packed"
                block.add_op(pk)
                packs.append(pk.result)
            rs = dist.ReduceScatterOp(packs, group, [TensorType(elem, [total // n])] * n,
                                      {"reduce": _sum_attr(), **self._extra(self.reduce_stream)})
            block.add_op(rs)
            for r in range(n):
                up = dist.UnpackOp(rs.outputs[r], group[r], [flat[j][r] for j in range(len(ars))])
                block.add_op(up)
                for j in range(len(ars)):
                    parts[j][r].append(up.outputs[j])
        for j, a in enumerate(ars):
            outs = []
            for r in range(n):
                if per_mb:
                    sm = dist.SumOp(parts[j][r], sums[j][r].scale.value.data, group[r])
                    block.add_op(sm)
                    out = sm.result
                else:
                    out = parts[j][r][0]
                out.name_hint = (ins[j][r].name_hint or "g") + "_shard"
                outs.append(out)
            scattered[a] = outs

    def _grad_shard(self, v: SSAValue, r: int, n: int, scattered: dict, block) -> SSAValue:
        ar = v.owner
        if isinstance(ar, dist.UnpackOp):
            raise PiperError("shard: the gradients are bucketed (replicate bucket_bytes); ZeRO "
                             "reduce-scatters each gradient itself, so drop bucket_bytes")
        if not isinstance(ar, dist.AllReduceOp):
            raise PiperError("shard: optimizer gradients must come from replicate's all_reduce")
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
        return scattered[ar][v.index]  # the shard of the member whose result v is

    def _gather_params(self, block, n, shard_load, full_loads, selected) -> None:
        """Stage 3: parameters live as shards; gather them before each use."""
        from xdsl.dialects.builtin import IntAttr

        extra = self._extra(self.gather_stream)
        if self.prefetch >= 0:
            extra["prefetch"] = IntAttr(self.prefetch)
        packed: dict[tuple, SSAValue] = {}  # (device, parameters) -> their packed shards
        groups: dict[tuple, list[dist.TaskOp]] = {}
        for o in block.ops:
            if (isinstance(o, dist.TaskOp) and o.kind.data != "OPT"
                    and (selected is None or o.stage.data in selected)):
                groups.setdefault((o.callee.root_reference.data, o.stage.data, o.mb.data), []).append(o)
        # callee -> (its function, its parameter arguments): every microbatch's
        # tasks of a stage call the same function, looked up once
        params_of: dict[str, tuple[func.FuncOp, list[int]]] = {}
        for (callee, _, _), tasks in groups.items():
            tasks.sort(key=lambda t: t.replica.data)
            if len(tasks) != n:
                raise PiperError(f"{self.name}: task @{callee} is not replicated {n} times")
            if callee not in params_of:
                fn = _func_lookup(tasks[0], callee)
                params_of[callee] = fn, [i for i in range(len(tasks[0].args))
                                         if arg_info(fn, i).get("kind") == "param"]
            fn, params = params_of[callee]
            if self.pack and len(params) >= 2 and len(
                    {tasks[0].args[i].type.element_type for i in params}) == 1:
                self._pack_gather(tasks, fn, params, n, shard_load, full_loads, packed, extra,
                                  block)
                continue
            for i in params:
                info = arg_info(fn, i)
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


    def _gather_updated(self, tasks, new_tasks, updated, n, block) -> None:
        """Stages 1-2: the optimizer's updated parameter shards (results
        `updated`) packed, gathered in one all_gather, unpacked in full
        where the old full results were used."""
        full = [tasks[0].res[j].type for j in updated]
        total = sum(math.prod(t.get_shape()) for t in full)
        devices = [t.device.data for t in tasks]
        packs = []
        for nt in new_tasks:
            pk = dist.PackOp([nt.res[j] for j in updated], nt.device.data)
            pk.result.name_hint = "updated_packed"
            block.add_op(pk)
            packs.append(pk.result)
        ag = dist.AllGatherOp(packs, devices, [TensorType(full[0].element_type, [total])] * n,
                              self._extra(self.gather_stream))
        block.add_op(ag)
        for t, g in zip(tasks, ag.outputs, strict=True):
            up = dist.UnpackOp(g, t.device.data, full, shards=n)
            block.add_op(up)
            for j, v in zip(updated, up.outputs, strict=True):
                v.name_hint = t.res[j].name_hint
                t.res[j].replace_all_uses_with(v)

    def _pack_gather(self, tasks, fn, params, n, shard_load, full_loads, packed, extra,
                     block) -> None:
        """One all_gather of the task's parameter shards, packed (one pack
        per device and parameter set, shared by every microbatch's tasks:
        shards do not change within a step); each member unpacks the
        shard-major result into the full parameters."""
        names = tuple(arg_info(fn, i)["name"] for i in params)
        full = [tasks[0].args[i].type for i in params]
        elem = full[0].element_type
        total = sum(math.prod(t.get_shape()) for t in full)
        devices = [t.device.data for t in tasks]
        packs = []
        for r, t in enumerate(tasks):
            key = (t.device.data, names)
            if key not in packed:
                shards = []
                for i, name in zip(params, names, strict=True):
                    v = t.args[i]
                    if isinstance(v.owner, dist.LoadOp):
                        full_loads.add(v.owner)
                    shards.append(shard_load(name, t.device.data, v.type, r))
                pk = dist.PackOp(shards, t.device.data)
                pk.result.name_hint = "params_packed"
                block.add_op(pk)
                packed[key] = pk.result
            packs.append(packed[key])
        ag = dist.AllGatherOp(packs, devices, [TensorType(elem, [total])] * n, dict(extra))
        block.add_op(ag)
        for r, t in enumerate(tasks):
            up = dist.UnpackOp(ag.outputs[r], t.device.data, full, shards=n)
            block.add_op(up)
            for i, g in zip(params, up.outputs, strict=True):
                g.name_hint = (t.args[i].name_hint or "p") + "_full"
                t.operands[i] = g


def _func_lookup(anchor, name):
    from xdsl.dialects.builtin import SymbolRefAttr

    return SymbolTable.lookup_symbol(anchor, SymbolRefAttr(name))


def _sum_attr():
    from xdsl.dialects.builtin import StringAttr

    return StringAttr("sum")


@dataclass(frozen=True)
class Zero(Shard):
    """`zero`: the old name of `shard`, kept for one release."""

    name = "zero"
