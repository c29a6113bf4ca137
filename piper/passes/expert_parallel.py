"""expert-parallel{n=2 axis="ep"}: the experts of MoE layers spread over n devices.

Input: a dist.plan whose stage functions contain expert regions, ops tagged
`EP = e` (`piper.annotate("EP", e)` in the model), e = 0..m-1 per stage,
with n dividing m. Output: the plan on a mesh with a new axis `ep` of size
n (device = old device * n + ep rank), where

- tokens are split over the ep ranks like data parallelism: ep rank b of
  (dp) replica r reads batch slice `replica r*n + b`, the loss tangent is
  scaled by 1/n and the stored loss is the all_reduce (sum) of loss/n;
- experts are partitioned in contiguous blocks: ep rank b owns experts
  b*m/n .. (b+1)*m/n - 1 of every stage, and only it loads, trains and
  stores their parameters and optimizer state (`@OPT{s}_ep{b}` is the
  optimizer restricted to what rank b holds);
- every other parameter is replicated over ep; its gradient is
  all-reduced (sum) over the ep group before the optimizer, as for data
  parallelism. An expert's gradient needs no all_reduce: its owner already
  sums the contributions of every rank's tokens, each carrying the 1/n of
  the tangent, so the global-batch mean comes out as in eager training.

How a stage with experts runs. Each F (and B) task of such a stage is cut
into three tasks with two rounds of all_to_all between them, at the place
the task held in the plan's order (the pass runs after `schedule`, so any
schedule stays as it was):

    @F{s}_pre       on every rank: the ops that do not depend on an expert
                    (router, gates, ...) and, for every value an expert
                    reads, a send buffer: the value repeated n times on dim 0
    dist.all_to_all dispatch: rank b receives every rank's copy, in rank order
    @F{s}_experts{b} on rank b: its experts, run once per source rank's chunk
                    with exactly the captured shapes (chunk i of the dispatch
                    buffer is rank i's tensor); per chunk the sum of its
                    experts' contributions, concatenated over chunks
    dist.all_to_all combine: rank i receives, from every owner, the partial
                    sums for its own tokens
    @F{s}_post      on every rank: the sum of the n partial sums, then the
                    ops that depend on the experts (the rest of the model)

The backward is the transpose: @B{s}_pre computes the gradient reaching
the experts, the dispatch sends it to the owners, @B{s}_experts{b} runs the
experts' backward per chunk (reading the values its forward saved per chunk
and the forward's dispatch buffers, which stay on the owner) and returns
the sums of its experts' input gradients, concatenated over chunks, and its
experts' parameter gradients summed over chunks; the combine all_to_all
brings the input gradients back to the tokens' ranks, and @B{s}_post runs
the rest of the backward (router, layer norm, earlier layers).

"The sum over experts" is found in the graph, not assumed: a tree of
`aten.add.Tensor` ops (each inner add used only by the next) whose leaves
include values computed inside every expert region of the stage. In the
forward it is the model's `out = out + gate_e * expert_e(h)` chain; in the
backward, autograd's accumulation of the experts' gradients of h and of the
gates. Leaves computed outside the experts (the residual `out`, the
router's own gradient of h) are added on the token's rank after the
combine. The sum is thereby reassociated (x + (e0 + e2) + (e1 + e3)
instead of ((x + e0) + e1) + ...), which changes results only by rounding.

The MoE example dispatches densely: every expert runs on every token,
weighted by its gate column (zero for experts a token did not choose), so
every rank's tokens go to every owner and the dispatch all_to_all moves as
much as an all_gather would. A capacity-based dispatch would send each
owner only the tokens routed to it; the plan structure would stay the same.

What is rejected, with an error naming the stage: experts that do not
divide over n; a model without EP regions; an expert reading a value that
depends on the experts (two MoE layers in one pipeline stage: give each its
own "PP" region); a value of an expert region leaving it other than
through a sum over all experts (or, from F to B, to the same expert's
backward); a parameter read by an expert and by anything else; plans
already split by split-backward, recompute or zero; a plan tensor_parallel
already rewrote.

With tensor parallelism: this pass runs first and tensor_parallel then
splits the functions it made (the experts' ones included) over a new
innermost `tp` axis, so the mesh is pp x dp x ep x tp. Each all_to_all and
ep all_reduce made here becomes one per tp rank, among the devices of that
tp rank; tp ranks of an ep rank hold the same tokens.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, IntAttr, ModuleOp, StringAttr, TensorType
from xdsl.ir import Block, BlockArgument, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.traits import SymbolTable

from piper.diagnostics import PiperError, op_location
from piper.dialects import dist
from piper.dialects.dist import _int_array, type_bytes
from piper.dialects.graph import ArgRefAttr, AtenOp
from piper.dialects.graph_values import to_attr
from piper.passes.func_utils import (
    ValueNames,
    clone_on_axis,
    graph_attrs,
    make_attrs,
    outline,
    parse_from,
    require_dependency_order,
    sanitize,
    set_mesh,
    the_plan,
)
from piper.passes.graph_to_dist import arg_info, stage_functions
from piper.passes.retype import retype_function

EXPERT_TAG = "EP"
_NAME = "expert_parallel"
ABSENT = object()  # a plan value that does not exist on this ep rank


def _err(stage: int, msg: str, where: Operation | None = None) -> PiperError:
    return PiperError(f"{_NAME}: stage {stage}: {msg}", op_location(where) if where else None)


def _expert(op: Operation) -> int | None:
    if isinstance(op, AtenOp):
        return op.tag_dict().get(EXPERT_TAG)
    return None


def _is_sum(op: Operation) -> bool:
    """`aten.add.Tensor(a, b)` of two tensors of the result's type."""
    if not isinstance(op, AtenOp) or op.target.data != "aten.add.Tensor":
        return False
    if len(op.inputs) != 2 or len(op.outputs) != 1 or op.kwargs.data:
        return False
    args = op.args.data
    if len(args) != 2 or not all(isinstance(a, ArgRefAttr) and a.index.data == i
                                 for i, a in enumerate(args)):
        return False
    t = op.outputs[0].type
    return all(v.type == t for v in op.inputs)


def _describe(op: Operation) -> str:
    what = op.target.data if isinstance(op, AtenOp) else op.name
    res = ", ".join(f"%{r.name_hint}" for r in op.results if r.name_hint)
    return f"{res + ' = ' if res else ''}{what}"


def _aten(target: str, args: list, result_type: TensorType) -> AtenOp:
    """A new graph.aten op; SSA values in `args` become its operands."""
    operands: list[SSAValue] = []

    def ref(x):
        if isinstance(x, SSAValue):
            operands.append(x)
            return ArgRefAttr(len(operands) - 1)
        return None

    return AtenOp(target, operands, [to_attr(a, ref) for a in args], {}, [result_type])


def _stacked(t: TensorType, n: int) -> TensorType:
    """Type of n tensors of type t concatenated on dim 0."""
    shape = list(t.get_shape())
    return TensorType(t.element_type, [n * shape[0], *shape[1:]])


# ---------------------------------------------------------------------------
# Analysis: one stage function cut into pre / experts / post
# ---------------------------------------------------------------------------


@dataclass
class _Tree:
    """A sum over all experts: inner adds, leaves by expert, other leaves."""

    index: int
    root: AtenOp
    ops: list[AtenOp]
    experts: dict[int, list[SSAValue]]
    outside: list[SSAValue]


class _Side:
    """The forward (F) or backward (B) function of a stage with experts."""

    def __init__(self, stage: int, tag: str, fn: func.FuncOp, experts: list[int], resolve):
        self.stage, self.tag, self.fn = stage, tag, fn
        self.block = fn.body.block
        self.ops = [o for o in self.block.ops if not isinstance(o, func.ReturnOp)]
        self.opset = set(self.ops)
        self.returns = list(self.block.last_op.operands)
        self.resolve = resolve
        self.trees: list[_Tree] = []
        self.tree_of_root: dict[Operation, _Tree] = {}
        self.tree_ops: set[Operation] = set()
        self._find_trees(experts)
        self.x: dict[Operation, int] = {
            o: _expert(o) for o in self.ops
            if o not in self.tree_ops and _expert(o) is not None
        }
        self.x_ops = {e: [o for o in self.ops if self.x.get(o) == e] for e in experts}
        self.post: set[Operation] = set()
        self.pre: list[Operation] = []
        self.dispatch: list[SSAValue] = []  # values this side sends to the experts
        self.inv: set[Operation] = set()  # expert ops that read no token data

    def producer(self, v: SSAValue) -> Operation | None:
        p = v.owner
        return p if isinstance(p, Operation) and p in self.opset else None

    def _find_trees(self, experts: list[int]) -> None:
        cand = [o for o in self.ops if _is_sum(o)]
        cset = set(cand)

        def absorbed(o: Operation) -> bool:
            uses = list(o.outputs[0].uses)
            return len(uses) == 1 and uses[0].operation in cset

        for root in cand:
            if absorbed(root):
                continue
            ops: list[AtenOp] = []
            leaves: list[SSAValue] = []

            def walk(o: AtenOp) -> None:
                ops.append(o)
                for v in o.inputs:
                    p = v.owner
                    if isinstance(p, Operation) and p in cset and absorbed(p):
                        walk(p)
                    else:
                        leaves.append(v)

            walk(root)
            by_expert: dict[int, list[SSAValue]] = {}
            outside: list[SSAValue] = []
            for v in leaves:
                p = self.producer(v)
                e = _expert(p) if p is not None and p not in self.tree_ops else None
                if e is None:
                    outside.append(v)
                else:
                    by_expert.setdefault(e, []).append(v)
            if len(by_expert) < 2:
                continue  # an ordinary sum (inside one expert or outside all)
            if sorted(by_expert) != experts:
                missing = sorted(set(experts) - set(by_expert))
                raise _err(self.stage, f"@{self.fn.sym_name.data}: {_describe(root)} sums "
                           f"outputs of experts {sorted(by_expert)} but not of {missing}; "
                           "expert parallelism needs sums over all experts of the layer", root)
            t = _Tree(len(self.trees), root, ops, by_expert, outside)
            self.trees.append(t)
            self.tree_of_root[root] = t
            self.tree_ops.update(ops)


def _own(stage_experts: int, n: int, b: int) -> list[int]:
    k = stage_experts // n
    return list(range(b * k, (b + 1) * k))


class _StageEP:
    """One stage with experts: analysis, the new functions, and the plan rewrite."""

    def __init__(self, module: ModuleOp, fns: dict, s: int, n: int):
        self.s, self.n = s, n
        if ("F", s) not in fns or ("B", s) not in fns:
            raise _err(s, f"expected @F{s} and @B{s}; expert parallelism needs whole backward "
                       "tasks (it does not compose with split_backward)")
        self.F, self.B = fns[("F", s)], fns[("B", s)]
        self.OPT = fns.get(("OPT", s))
        self.names = ValueNames()
        for fn in (self.F, self.B):
            for i in range(len(fn.body.block.args)):
                self.names.reserve(graph_attrs(fn, i).get("name", ""))
        self.f_returns = list(self.F.body.block.last_op.operands)
        experts = sorted({e for fn in (self.F, self.B) for o in fn.body.block.ops
                          if (e := _expert(o)) is not None})
        self.m = len(experts)
        if experts != list(range(self.m)):
            raise _err(s, f"EP regions are numbered {experts}; expected 0..{self.m - 1}")
        if self.m % n:
            raise _err(s, f"{self.m} experts (EP 0..{self.m - 1}) do not divide over n={n} "
                       "ranks")
        if not any(parse_from(graph_attrs(self.B, i).get("from", "")) is not None
                   and parse_from(graph_attrs(self.B, i)["from"])[0] == f"F{s}"
                   for i in range(len(self.B.body.block.args))):
            raise _err(s, f"@B{s} reads nothing @F{s} saved (the stage is recomputed); "
                       "expert parallelism does not compose with recompute")
        self.fside = _Side(s, "F", self.F, experts, lambda v: v)
        self.bside = _Side(s, "B", self.B, experts, self._resolve_b)
        if not self.fside.trees:
            raise _err(s, "the outputs of the expert regions are never summed (expected "
                       "`out = out + gate_e * expert_e(x)` over all experts)")
        self.param_readers: dict[str, dict] = {}
        self.saved: dict[int, list[SSAValue]] = {e: [] for e in experts}
        self._classify(self.fside)
        self._classify(self.bside)
        self._check_outputs(module)
        self._expert_params()
        self._invariance()
        self._build()
        self.opt_fns = ([self.opt_function(b) for b in range(n)] if self.OPT is not None
                        else [])

    last_tag = "B"

    def side_of(self, tag: str) -> _Side:
        return self.fside if tag == "F" else self.bside

    def resolve(self, side: _Side, v: SSAValue) -> SSAValue:
        return side.resolve(v)

    def result_keys(self, tag: str) -> list:
        return self.f_result_key if tag == "F" else self.b_result_key

    # -- analysis ---------------------------------------------------------------

    def _resolve_b(self, v: SSAValue) -> SSAValue:
        if isinstance(v, BlockArgument) and v.block is self.B.body.block:
            ref = parse_from(graph_attrs(self.B, v.index).get("from", ""))
            if ref is not None and ref[0] == f"F{self.s}":
                return self.f_returns[ref[1]]
        return v

    def _arg_info(self, v: SSAValue) -> dict[str, str] | None:
        """graph attrs of a block argument of @F or @B (None for op results)."""
        if isinstance(v, BlockArgument):
            for fn in (self.F, self.B):
                if v.block is fn.body.block:
                    return graph_attrs(fn, v.index)
        return None

    def _read_param(self, v: SSAValue, who, op: Operation) -> bool:
        info = self._arg_info(v)
        if info is None or info.get("kind") != "param":
            return False
        self.param_readers.setdefault(info.get("name", "?"), {}).setdefault(who, op)
        return True

    def _classify(self, side: _Side) -> None:
        """Pre/post ops, what experts read, and the checks that make the cut valid."""
        s, f = self.s, self.fside
        is_b = side is self.bside
        for o in side.ops:
            if o in side.tree_of_root:
                for v in side.tree_of_root[o].outside:
                    pf = f.producer(side.resolve(v)) if is_b else None
                    if pf is not None and pf in f.x:
                        raise _err(s, f"{_describe(pf)} of expert {f.x[pf]}'s forward is "
                                   f"summed with the experts' gradients by {_describe(o)}", o)
                side.post.add(o)
                continue
            if o in side.tree_ops:
                continue
            e = side.x.get(o)
            reads_combined = False
            for u in o.operands:
                v = side.resolve(u)
                p = side.producer(v)
                pf = f.producer(v) if is_b and p is None else None
                if e is None:
                    if p is not None and p in side.x:
                        raise _err(s, f"{_describe(p)} of expert {side.x[p]} is read by "
                                   f"{_describe(o)} outside the experts; a value may leave an "
                                   "expert region only through a sum over all experts", o)
                    if pf is not None and pf in f.x:
                        raise _err(s, f"{_describe(pf)} of expert {f.x[pf]}'s forward is read "
                                   f"by {_describe(o)} outside the experts", o)
                    if p is not None and (p in side.post or p in side.tree_of_root):
                        reads_combined = True
                    self._read_param(v, "shared", o)
                    continue
                if p is not None:
                    if p in side.x:
                        if side.x[p] != e:
                            raise _err(s, f"expert {e}'s {_describe(o)} reads {_describe(p)} "
                                       f"of expert {side.x[p]}", o)
                        continue
                    if p in side.post or p in side.tree_of_root:
                        raise _err(s, f"expert {e}'s {_describe(o)} reads a value that "
                                   f"depends on the experts ({_describe(p)}); put each MoE "
                                   "layer in its own \"PP\" region", o)
                    self._dispatch(side, v, o)
                    continue
                if pf is not None and pf in f.x:
                    if f.x[pf] != e:
                        raise _err(s, f"expert {e}'s {_describe(o)} reads {_describe(pf)} of "
                                   f"expert {f.x[pf]}", o)
                    if v not in self.saved[e]:
                        self.saved[e].append(v)
                    continue
                if pf is None and self._read_param(v, e, o):
                    continue
                self._dispatch(side, v, o)
            if e is None:
                if reads_combined:
                    side.post.add(o)
                else:
                    side.pre.append(o)

    def _dispatch(self, side: _Side, v: SSAValue, user: Operation) -> None:
        if side is self.bside and v in self.fside.dispatch:
            return
        if v not in side.dispatch:
            if not isinstance(v.type, TensorType) or not v.type.get_shape():
                raise _err(self.s, f"expert {side.x[user]}'s {_describe(user)} reads a 0-d "
                           "tensor from outside the experts; only tensors with a dim 0 can "
                           "be dispatched", user)
            side.dispatch.append(v)

    def _check_outputs(self, module: ModuleOp) -> None:
        s, f, bs = self.s, self.fside, self.bside
        self.f_result_key: list = []
        for k, rv in enumerate(self.f_returns):
            p = f.producer(rv)
            if p is not None and p in f.x:
                kind = graph_attrs(self.F, k, results=True).get("kind")
                if kind != "saved":
                    raise _err(s, f"@F{s} returns {_describe(p)} of expert {f.x[p]} as "
                               f"'{kind}'; only the sum over all experts may leave them", p)
                for op in module.body.block.ops:
                    if isinstance(op, func.FuncOp) and op is not self.B:
                        for i in range(len(op.body.block.args)):
                            if graph_attrs(op, i).get("from") == f"F{s}#{k}":
                                raise _err(s, f"@{op.sym_name.data} reads {_describe(p)} of "
                                           f"expert {f.x[p]}; only the expert's own backward "
                                           "may read it", p)
                self.f_result_key.append(None)
            else:
                self.f_result_key.append(("v", rv))
        self.b_result_key: list = []
        self.expert_grads: dict[int, list[tuple[str, SSAValue]]] = {e: [] for e in bs.x_ops}
        for k, rv in enumerate(bs.returns):
            info = graph_attrs(self.B, k, results=True)
            p = bs.producer(rv)
            if p is not None and p in bs.x:
                if info.get("kind") != "grad":
                    raise _err(s, f"@B{s} returns {_describe(p)} of expert {bs.x[p]} as "
                               f"'{info.get('kind')}'; only the sum over all experts may "
                               "leave them", p)
                self.expert_grads[bs.x[p]].append((info["name"], rv))
                self.b_result_key.append(("grad", info["name"]))
                continue
            pf = f.producer(bs.resolve(rv)) if p is None else None
            if pf is not None and pf in f.x:
                raise _err(s, f"@B{s} returns {_describe(pf)} of expert {f.x[pf]}'s forward", pf)
            self.b_result_key.append(("v", bs.resolve(rv)))

    def _expert_params(self) -> None:
        s = self.s
        self.param_owner: dict[str, int] = {}  # expert param -> owning ep rank
        self.param_expert: dict[str, int] = {}
        for name, who in self.param_readers.items():
            experts = sorted(w for w in who if w != "shared")
            if not experts:
                continue
            if len(experts) > 1:
                raise _err(s, f"parameter '{name}' is read by experts {experts}; an expert's "
                           "parameters must be its own", who[experts[1]])
            if "shared" in who:
                raise _err(s, f"parameter '{name}' is read by expert {experts[0]} "
                           f"({_describe(who[experts[0]])}) and outside the experts "
                           f"({_describe(who['shared'])}); an expert's parameters must be "
                           "its own", who["shared"])
            e = experts[0]
            self.param_expert[name] = e
            self.param_owner[name] = e // (self.m // self.n)
        for e, grads in self.expert_grads.items():
            for name, rv in grads:
                if self.param_expert.get(name) != e:
                    raise _err(s, f"expert {e} computes the gradient of '{name}', which is not "
                               "one of its parameters", rv.owner)

    def _invariance(self) -> None:
        """Expert ops whose operands hold no token data run once, not per chunk."""
        f, bs = self.fside, self.bside

        def inv(side: _Side, v: SSAValue) -> bool:
            v = side.resolve(v)
            p = side.producer(v)
            if p is not None:
                return p in side.inv
            if side is bs:
                pf = f.producer(v)
                if pf is not None:
                    return pf in f.inv
            info = self._arg_info(v)
            return info is not None and info.get("kind") == "param"

        for side in (f, bs):
            for o in side.ops:
                if o in side.x and all(inv(side, u) for u in o.operands):
                    side.inv.add(o)

    def owner(self, tensor: str) -> int | None:
        """The ep rank holding an expert parameter (or its optimizer state)."""
        if tensor in self.param_owner:
            return self.param_owner[tensor]
        return self.param_owner.get(tensor.rsplit(":", 1)[0]) if ":" in tensor else None

    # -- the new functions -------------------------------------------------------

    def _attrs(self, v: SSAValue, kind: str) -> dict[str, str]:
        info = self._arg_info(v)
        if info is not None:
            return {k: x for k, x in info.items() if k != "from"}
        return {"name": self.names(v), "kind": kind}

    def _tok(self, fn: _Fn, side: _Side, v: SSAValue) -> SSAValue:
        """A token-side value in a pre/post function (an argument if not computed there)."""
        v = side.resolve(v)
        key = ("v", v)
        if key not in fn.env:
            crosses = side is self.bside and self.fside.producer(v) is not None
            fn.arg(key, v.type, self._attrs(v, "saved" if crosses else "act"), v.name_hint)
        return fn.env[key]

    def _build(self) -> None:
        s, n = self.s, self.n
        self.fns: list[func.FuncOp] = []
        self.pieces: dict[str, tuple[_Fn, list[_Fn], _Fn]] = {}
        for side in (self.fside, self.bside):
            t = side.tag
            pre = _Fn(f"{t}{s}_pre")
            for o in side.pre:
                pre.clone(o, [self._tok(pre, side, u) for u in o.operands])
            for v in side.dispatch:
                buf = _aten("aten.repeat.default",
                            [self._tok(pre, side, v), [n] + [1] * (len(v.type.get_shape()) - 1)],
                            _stacked(v.type, n))
                pre.add(buf, [("send", t, v)], sanitize(self.names(v)) + "_send")
                pre.results.append((("send", t, v), {"name": self.names(v), "kind": "dispatch"}))
            experts = [self._experts_fn(side, b) for b in range(n)]
            post = _Fn(f"{t}{s}_post")
            for o in side.ops:
                if o in side.tree_of_root:
                    self._combine(post, side, side.tree_of_root[o])
                elif o in side.post:
                    post.clone(o, [self._tok(post, side, u) for u in o.operands])
            self.pieces[t] = (pre, experts, post)
        self._results()
        for t in ("F", "B"):
            pre, experts, post = self.pieces[t]
            self.fns += [pre.finish(), *[x.finish() for x in experts], post.finish()]

    def _combine(self, post: _Fn, side: _Side, tree: _Tree) -> None:
        """The tree's sum on the token's rank: the n partial sums, then the rest."""
        n = self.n
        rt = tree.root.outputs[0].type
        shape = list(rt.get_shape())
        if not shape:
            raise _err(self.s, f"the sum over experts {_describe(tree.root)} is a 0-d tensor; "
                       "only tensors with a dim 0 can be combined", tree.root)
        name = self.names(tree.root.outputs[0])
        buf = post.arg(("comb", side.tag, tree.index), _stacked(rt, n),
                       {"name": name, "kind": "combine"}, name + "_parts")
        view = post.add(_aten("aten.view.default", [buf, [n, *shape]],
                              TensorType(rt.element_type, [n, *shape])))
        acc = post.add(_aten("aten.sum.dim_IntList", [view.outputs[0], [0]], rt)).outputs[0]
        for u in tree.outside:
            acc = post.add(_aten("aten.add.Tensor", [self._tok(post, side, u), acc], rt)).outputs[0]
        acc.name_hint = sanitize(name)
        post.env[("v", tree.root.outputs[0])] = acc
        post.defined.append(("v", tree.root.outputs[0]))

    def _experts_fn(self, side: _Side, b: int) -> _Fn:
        """Rank b's experts on every rank's chunk of the dispatched values."""
        s, n, t, f = self.s, self.n, side.tag, self.fside
        fn = _Fn(f"{t}{s}_experts{b}")
        own = _own(self.m, n, b)
        shared: dict[SSAValue, SSAValue] = {}
        chunk: list[dict[SSAValue, SSAValue]] = [{} for _ in range(n)]

        def value(u: SSAValue, i: int) -> SSAValue:
            v = side.resolve(u)
            if v in chunk[i]:
                return chunk[i][v]
            if v in shared:
                return shared[v]
            p = side.producer(v)
            pf = f.producer(v) if side is self.bside and p is None else None
            if pf is not None and pf in f.x:  # saved by this rank's forward experts
                if pf in f.inv:
                    shared[v] = fn.arg(("saved", v, None), v.type,
                                       {"name": self.names(v), "kind": "saved"}, v.name_hint)
                    return shared[v]
                chunk[i][v] = fn.arg(("saved", v, i), v.type,
                                     {"name": f"{self.names(v)}@{i}", "kind": "saved"},
                                     v.name_hint)
                return chunk[i][v]
            info = self._arg_info(v)
            if p is None and pf is None and info is not None and info.get("kind") == "param":
                shared[v] = fn.arg(("v", v), v.type, self._attrs(v, "param"), v.name_hint)
                return shared[v]
            d = "F" if v in f.dispatch else t
            buf = fn.arg(("disp", d, v), _stacked(v.type, n),
                         {"name": self.names(v), "kind": "dispatch"}, self.names(v) + "_all")
            rows = v.type.get_shape()[0]
            sl = fn.add(_aten("aten.slice.Tensor", [buf, 0, i * rows, (i + 1) * rows], v.type))
            sl.outputs[0].name_hint = sanitize(self.names(v))
            chunk[i][v] = sl.outputs[0]
            return chunk[i][v]

        def at(v: SSAValue, i: int) -> SSAValue:
            v = side.resolve(v)
            return chunk[i][v] if v in chunk[i] else shared[v]

        for e in own:
            for o in side.x_ops[e]:
                if o in side.inv:
                    new = fn.clone(o, [value(u, 0) for u in o.operands], register=False)
                    shared.update(zip(o.results, new.results, strict=True))
                else:
                    for i in range(n):
                        new = fn.clone(o, [value(u, i) for u in o.operands], register=False)
                        chunk[i].update(zip(o.results, new.results, strict=True))
        for tree in side.trees:
            rt = tree.root.outputs[0].type
            parts = []
            for i in range(n):
                leaves = [at(v, i) for e in own for v in tree.experts[e]]
                acc = leaves[0]
                for v in leaves[1:]:
                    acc = fn.add(_aten("aten.add.Tensor", [acc, v], rt)).outputs[0]
                parts.append(acc)
            key = ("part", t, tree.index)
            name = self.names(tree.root.outputs[0])
            fn.add(_aten("aten.cat.default", [parts, 0], _stacked(rt, n)), [key], name + "_part")
            fn.results.append((key, {"name": name, "kind": "combine"}))
        if side is f:
            for e in own:
                for v in self.saved[e]:
                    return_saved(fn, v, v.owner in f.inv, shared, chunk, self.names(v))
        else:
            for e in own:
                for name, gv in self.expert_grads[e]:
                    return_chunk_sum(fn, name, [at(gv, i) for i in range(n)])
        return fn

    def _results(self) -> None:
        """Pre and post functions return what the other functions and the
        original F/B results need."""
        needed: set = set()
        for t in ("F", "B"):
            pre, experts, post = self.pieces[t]
            for fn in (pre, *experts, post):
                needed.update(k for k in fn.arg_keys if k[0] == "v")
        original = {}
        for k, key in enumerate(self.f_result_key):
            if key is not None:
                original.setdefault(key, graph_attrs(self.F, k, results=True))
        for k, key in enumerate(self.b_result_key):
            if key[0] == "v":
                original.setdefault(key, graph_attrs(self.B, k, results=True))
        pre, experts, post = self.pieces["B"]
        b_reads = {k for fn in (pre, *experts, post) for k in fn.arg_keys}
        for t in ("F", "B"):
            pre, _, post = self.pieces[t]
            for fn in (pre, post):
                for key in fn.defined:
                    if key[0] == "v" and (key in needed or key in original):
                        attrs = original.get(key) or {
                            "name": self.names(key[1]),
                            "kind": "saved" if t == "F" and key in b_reads else "act"}
                        fn.results.append((key, {k: x for k, x in attrs.items() if k != "from"}))

    def opt_function(self, b: int) -> tuple[func.FuncOp, list[int], list[int]]:
        """@OPT{s} restricted to the parameters ep rank b holds."""
        opt = self.OPT
        block = opt.body.block

        def dropped(info: dict) -> bool:
            owner = self.owner(info.get("name", ""))
            return info.get("kind") in ("param", "grad", "state") and owner not in (None, b)

        keep_args = [i for i in range(len(block.args)) if not dropped(graph_attrs(opt, i))]
        ret = block.last_op
        keep_res = [j for j in range(len(ret.operands))
                    if not dropped(graph_attrs(opt, j, results=True))]
        need: set[Operation] = set()
        stack = [ret.operands[j].owner for j in keep_res]
        while stack:
            o = stack.pop()
            if not isinstance(o, Operation) or o in need or o.parent is not block:
                continue
            need.add(o)
            stack.extend(v.owner for v in o.operands)
        kept = set(block.args[i] for i in keep_args)
        ops = [o for o in block.ops if o in need]
        for o in ops:
            for v in o.operands:
                if isinstance(v, BlockArgument) and v not in kept:
                    raise _err(self.s, f"@{opt.sym_name.data}: {_describe(o)} reads "
                               f"'{graph_attrs(opt, v.index).get('name')}' of another ep rank; "
                               "only per-parameter optimizer updates can be split", o)
        fn = outline(
            f"OPT{self.s}_ep{b}",
            [(block.args[i], block.args[i].type,
              {k: x for k, x in graph_attrs(opt, i).items() if k != "from"},
              block.args[i].name_hint) for i in keep_args],
            ops,
            [(ret.operands[j], graph_attrs(opt, j, results=True)) for j in keep_res],
        )
        return fn, keep_args, keep_res


def return_saved(fn: _Fn, v: SSAValue, once: bool, shared: dict, chunk: list[dict],
                 name: str) -> None:
    """An experts function returns what its later part reads of value `v`:
    the one copy (`once`: it read no token data) or one per source chunk."""
    if once:
        fn.env[("saved", v, None)] = shared[v]
        fn.results.append((("saved", v, None), {"name": name, "kind": "saved"}))
        return
    for i in range(len(chunk)):
        fn.env[("saved", v, i)] = chunk[i][v]
        fn.results.append((("saved", v, i), {"name": f"{name}@{i}", "kind": "saved"}))


def return_chunk_sum(fn: _Fn, name: str, parts: list[SSAValue]) -> None:
    """An experts function returns parameter `name`'s gradient: the sum of its
    parts (one per source chunk whose tokens contributed)."""
    acc = parts[0]
    for part in parts[1:]:
        acc = fn.add(_aten("aten.add.Tensor", [acc, part], acc.type)).outputs[0]
    fn.env[("grad", name)] = acc
    acc.name_hint = sanitize(name) + "_grad"
    fn.results.append((("grad", name), {"name": name, "kind": "grad"}))


class _Fn:
    """A function under construction: arguments appear on first use."""

    def __init__(self, name: str):
        self.name = name
        self.block = Block()
        self.env: dict = {}
        self.arg_keys: list = []
        self.arg_attrs: list[dict[str, str]] = []
        self.defined: list = []  # keys computed here, in order
        self.results: list[tuple[object, dict[str, str]]] = []

    def arg(self, key, t, attrs: dict[str, str], hint: str | None) -> SSAValue:
        if key not in self.env:
            a = self.block.insert_arg(t, len(self.block.args))
            a.name_hint = sanitize(hint) if hint else None
            self.env[key] = a
            self.arg_keys.append(key)
            self.arg_attrs.append(attrs)
        return self.env[key]

    def add(self, op: Operation, keys=(), hint: str | None = None) -> Operation:
        self.block.add_op(op)
        for k, r in zip(keys, op.results, strict=False):
            self.env[k] = r
            self.defined.append(k)
        if hint:
            op.results[0].name_hint = sanitize(hint)
        return op

    def clone(self, op: Operation, operands: list[SSAValue], register: bool = True) -> Operation:
        new = op.clone(value_mapper=dict(zip(op.operands, operands, strict=True)))
        self.block.add_op(new)
        for old, r in zip(op.results, new.results, strict=True):
            r.name_hint = sanitize(old.name_hint) if old.name_hint else None
            if register:
                self.env[("v", old)] = r
                self.defined.append(("v", old))
        return new

    @property
    def result_types(self) -> list:
        return [self.env[k].type for k, _ in self.results]

    @property
    def result_keys(self) -> list:
        return [k for k, _ in self.results]

    def finish(self) -> func.FuncOp:
        returned = [self.env[k] for k, _ in self.results]
        self.block.add_op(func.ReturnOp(*returned))
        return func.FuncOp(
            self.name,
            ([a.type for a in self.block.args], [r.type for r in returned]),
            Region(self.block),
            arg_attrs=ArrayAttr([make_attrs(a) for a in self.arg_attrs]),
            res_attrs=ArrayAttr([make_attrs(a) for _, a in self.results]),
        )


# ---------------------------------------------------------------------------
# The plan rewrite
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpertParallel(ModulePass):
    """Partition each stage's experts over a new `ep` mesh axis of n devices."""

    name = "expert_parallel"

    n: int = 1
    axis: str = "ep"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.n < 1:
            raise PiperError(f"{_NAME}: n must be at least 1, got {self.n}")
        plan = the_plan(op, _NAME)
        require_dependency_order(plan.body.block, _NAME)
        mesh = plan.mesh
        if self.axis in mesh:
            raise PiperError(f"{_NAME}: the mesh already has an axis '{self.axis}'")
        _refuse_after_tensor_parallel(op, mesh)
        fns = stage_functions(op)
        tagged = sorted({s for (k, s), fn in fns.items() if k != "OPT" and any(
            _expert(o) is not None for o in fn.body.block.ops)})
        if not tagged:
            raise PiperError(
                f"{_NAME}: no stage has expert regions; mark each expert's computation "
                "with `piper.annotate(\"EP\", e)` inside its \"PP\" region")
        from piper.passes.expert_stacked import (  # lazy: it imports this module
            StackedStage,
            stacked_stages,
        )

        stacked = stacked_stages(fns, tagged)
        for o in plan.body.block.ops:
            if isinstance(o, dist.ShardOp | dist.ReduceScatterOp | dist.AllGatherOp) \
                    and set(tagged) - stacked:
                raise PiperError(f"{_NAME}: the plan is sharded (ZeRO) ('{o.name}'); "
                                 "expert parallelism of experts written as separate modules "
                                 "does not compose with shard (stacked experts do)")
        for o in plan.body.block.ops:
            if isinstance(o, dist.TaskOp) and o.stage.data in tagged and not (
                    o.kind.data == "OPT" and o.stage.data in stacked):
                want = f"{o.kind.data}{o.stage.data}"
                if o.callee.root_reference.data != want:
                    raise PiperError(
                        f"{_NAME}: task {o.label} calls @{o.callee.root_reference.data}, not "
                        f"@{want}: the plan's stage functions were already rewritten "
                        "(expert-parallel runs once, on whole F/B/OPT tasks)")
        stages = {s: (StackedStage if s in stacked else _StageEP)(op, fns, s, self.n)
                  for s in tagged}
        if self.n == 1:
            mesh[self.axis] = 1
            set_mesh(plan, mesh)
            return
        taken = {o.sym_name.data for o in op.body.block.ops if isinstance(o, func.FuncOp)}
        for st in stages.values():
            for fn in [*st.fns, *{id(f): f for f, _, _ in st.opt_fns}.values()]:
                if fn.sym_name.data in taken:
                    raise PiperError(f"{_NAME}: the module already has a function "
                                     f"@{fn.sym_name.data}")
        rw = _Rewrite(plan, stages, self.n)
        rw.run()
        for fn in rw.retyped.values():
            op.body.block.insert_op_before(fn, plan)
        for st in stages.values():
            for fn in st.fns:
                op.body.block.insert_op_before(fn, plan)
            if not getattr(st, "stacked", False):
                for fn in {id(f): f for f, _, _ in st.opt_fns}.values():
                    op.body.block.insert_op_before(fn, plan)
        mesh[self.axis] = self.n
        set_mesh(plan, mesh)


_TP_PIECE = re.compile(r"_tp(_p\d+)?$")


def _refuse_after_tensor_parallel(module: ModuleOp, mesh: dict) -> None:
    """Expert parallelism composes with tensor parallelism in one order:
    expert_parallel first, then tensor_parallel adds the innermost mesh axis
    (pp x dp x ep x tp) and splits the functions expert_parallel made (its
    experts' functions included). After tensor_parallel the stage functions
    are cut at its all_reduces and typed to shards, which this pass cannot
    read, so that order is refused with the one that works."""
    pieces = [f.sym_name.data for f in module.body.block.ops
              if isinstance(f, func.FuncOp) and _TP_PIECE.search(f.sym_name.data)]
    if pieces or "tp" in mesh:
        found = f"@{pieces[0]}" if pieces else "mesh axis 'tp'"
        raise PiperError(
            f"{_NAME}: the plan is already tensor-parallel ({found}); run expert_parallel "
            "before tensor_parallel (mesh order pp x dp x ep x tp, tp innermost): "
            "`expert_parallel{n=...},tensor_parallel{n=...}` in a pass pipeline")


@dataclass
class _Rewrite:
    plan: dist.PlanOp
    stages: dict[int, _StageEP]
    n: int
    maps: list[dict] = field(default_factory=list)
    out: list[Operation] = field(default_factory=list)
    records: dict = field(default_factory=dict)
    segments: dict = field(default_factory=dict)  # packed value -> which pieces are rows
    retyped: dict = field(default_factory=dict)  # optimizer function -> on the rows

    def dev(self, d: int, b: int) -> int:
        return d * self.n + b

    def owner(self, tensor: str) -> int | None:
        for st in self.stages.values():
            o = st.owner(tensor)
            if o is not None:
                return o
        return None

    def sharded(self, tensor: str) -> bool:
        """A stacked expert tensor: every ep rank holds its rows (`shard b of n`)."""
        return any(getattr(st, "stacked", False) and st.sharded(tensor)
                   for st in self.stages.values())

    def run(self) -> None:
        n = self.n
        self.maps = [{} for _ in range(n)]
        block = self.plan.body.block
        ops = list(block.ops)
        wide = self._widened(ops)
        for o in ops:
            if o in wide:
                self._wide_all_reduce(o)
            elif isinstance(o, dist.TaskOp) and o.kind.data in ("F", "B", "I", "W") \
                    and o.stage.data in self.stages:
                self._split(o)
            elif isinstance(o, dist.TaskOp) and o.kind.data == "OPT":
                self._optimizer(o)
            elif isinstance(o, dist.LoadOp | dist.StoreOp) and not (
                    isinstance(o, dist.StoreOp) and o.is_loss) \
                    and self.sharded(o.tensor_name.data):
                for b in range(n):
                    self._clone(o, b, shard=True)
            elif isinstance(o, dist.LoadOp):
                owner = self.owner(o.tensor_name.data)
                for b in range(n):
                    if owner is not None and owner != b:
                        self.maps[b][o.result] = ABSENT
                    else:
                        self._clone(o, b)
            elif isinstance(o, dist.StoreOp) and o.is_loss:
                self._loss(o)
            else:
                for b in range(n):
                    absent = [self.maps[b][v] is ABSENT for v in o.operands]
                    if any(absent):
                        if isinstance(o, dist.TaskOp):
                            raise PiperError(f"{_NAME}: internal error: task {o.label} reads "
                                             "an expert's state on a rank that does not own it")
                        if not all(absent):
                            raise PiperError(
                                f"{_NAME}: '{o.name}' (ep rank {b}) combines an expert's "
                                "gradient or state with other values (a gradient bucket of "
                                "replicate{bucket_bytes}?); expert state "
                                "lives on one ep rank only, so it cannot share such an op")
                        for r in o.results:
                            self.maps[b][r] = ABSENT
                        continue
                    self._clone(o, b)
        for o in ops:
            o.detach()
        for o in ops:
            o.drop_all_references()
        for o in self.out:
            if isinstance(o, dist.LoadOp) and not o.result.uses:
                o.drop_all_references()
                continue
            block.add_op(o)

    def _clone(self, o: Operation, b: int, shard: bool = False) -> Operation:
        n = self.n
        c = clone_on_axis(o, self.maps[b], b, n, split_inputs=True)
        if shard:
            old_shard = o.properties.get("shard")
            if old_shard is None:
                c.properties["shard"] = _int_array([b, n])
            else:  # ZeRO's flat shard k of dp of rows block b: flat shard b*dp+k of n*dp
                k, dp, *dim = [a.data for a in old_shard.data]
                if dim:
                    raise PiperError(f"{_NAME}: '{o.tensor_name.data}' is sharded on dim "
                                     f"{dim[0]}; stacked experts split dim 0 by rows")
                c.properties["shard"] = _int_array([b * dp + k, n * dp])
            if isinstance(c, dist.LoadOp):
                c.result._type = _rows_of(o.result.type, n, o)
        if isinstance(c, dist.FillOp):
            c.value = type(c.value)(c.value.value.data / n, c.value.type)
        self._local_types(o, c)
        if "bytes" in c.properties and c.operands:  # operands may be a tensor's local rows
            c.properties["bytes"] = IntAttr(sum(type_bytes(v.type) for v in c.operands))
        for old, new in zip(o.results, c.results, strict=True):
            self.maps[b][old] = new
            new.name_hint = old.name_hint
        self.out.append(c)
        return c

    def _replicated_grads(self, ops: list[Operation]) -> set[SSAValue]:
        """Gradients the optimizer reads of parameters every ep rank holds whole."""
        out: set[SSAValue] = set()
        for o in ops:
            if isinstance(o, dist.TaskOp) and o.kind.data == "OPT":
                fn = SymbolTable.lookup_symbol(o, o.callee)
                for i, v in enumerate(o.args):
                    info = arg_info(fn, i)
                    name = info.get("name", "")
                    if info.get("kind") == "grad" and self.owner(name) is None \
                            and not self.sharded(name):
                        out.add(v)
        return out

    def _widened(self, ops: list[Operation]) -> set[Operation]:
        """The dp all_reduces of replicated parameters' gradients (directly or
        through a gradient bucket's unpack): each becomes one all_reduce over
        dp x ep, so such a gradient is reduced once, not over dp and then ep."""
        grads = self._replicated_grads(ops)
        self.reduced: set[SSAValue] = set()  # already summed over ep too
        wide: set[Operation] = set()
        for o in ops:
            if not isinstance(o, dist.AllReduceOp) or o.properties.get("reduce") != \
                    StringAttr("sum"):
                continue
            finals: list[SSAValue] = []
            ok = True
            for r in o.results:
                for use in r.uses:
                    user = use.operation
                    if isinstance(user, dist.UnpackOp):
                        finals += list(user.results)
                    elif isinstance(user, dist.TaskOp) and user.kind.data == "OPT":
                        finals.append(r)
                    else:
                        ok = False
            if ok and finals and all(v in grads for v in finals):
                wide.add(o)
                self.reduced.update(finals)
        return wide

    def _wide_all_reduce(self, o: dist.AllReduceOp) -> None:
        n = self.n
        parts = [self.maps[b][v] for v in o.operands for b in range(n)]
        ar = dist.AllReduceOp(parts, [dist.device_of(p) for p in parts],
                              [p.type for p in parts], {"reduce": StringAttr("sum")})
        if o.stream is not None:
            ar.properties["stream"] = o.stream
        self.out.append(ar)
        k = 0
        for r in o.results:
            for b in range(n):
                self.maps[b][r] = ar.results[k]
                ar.results[k].name_hint = r.name_hint
                k += 1

    def _local_types(self, o: Operation, c: Operation) -> None:
        """Result types of `c`, a copy of `o` whose operands may be a stacked
        expert tensor's local rows (1/n of the elements): sums and sends of
        them, ZeRO's packs, shards, reduce_scatters, all_gathers and unpacks."""
        n = self.n
        if all(a.type == v.type for a, v in zip(o.operands, c.operands, strict=True)):
            return
        if isinstance(c, dist.PackOp):
            total = sum(math.prod(v.type.get_shape()) for v in c.operands)
            c.result._type = TensorType(o.result.type.element_type, [total])
            self.segments[o.result] = [a.type != v.type for a, v in
                                       zip(o.operands, c.operands, strict=True)]
            return
        if isinstance(c, dist.UnpackOp):
            segs = self.segments.get(o.operands[0])
            if segs is None or len(segs) != len(o.results):
                raise PiperError(f"{_NAME}: internal error: unpack of a tensor whose pieces "
                                 "are not known")
            for old, new, small in zip(o.results, c.results, segs, strict=True):
                if small:
                    new._type = _rows_of(old.type, n, o)
            return
        if isinstance(c, dist.ReduceScatterOp | dist.AllGatherOp | dist.AllReduceOp):
            for k, (old, new) in enumerate(zip(o.results, c.results, strict=True)):
                a_old, a_new = o.operands[k].type, c.operands[k].type
                if a_old == a_new:
                    continue
                if isinstance(c, dist.AllReduceOp):
                    new._type = a_new
                elif len(old.type.get_shape()) == 1:  # a packed bucket: its new length
                    numel = math.prod(a_new.get_shape())
                    size = len(o.members)
                    numel = numel // size if isinstance(c, dist.ReduceScatterOp) else numel * size
                    new._type = TensorType(old.type.element_type, [numel])
                else:
                    ratio = math.prod(a_old.get_shape()) // math.prod(a_new.get_shape())
                    new._type = _rows_of(old.type, ratio, o)
                if o.operands[k] in self.segments:
                    self.segments[old] = self.segments[o.operands[k]]
            return
        if isinstance(c, dist.ShardOp):
            parts = o.properties["part"].data[1].data
            numel = math.prod(c.operands[0].type.get_shape())
            c.result._type = TensorType(o.result.type.element_type, [numel // parts])
            return
        for old, new in zip(o.results, c.results, strict=True):
            # typed like an operand (sums of microbatch gradients, sends): follow it
            same = [k for k, v in enumerate(o.operands) if v.type == old.type]
            if same:
                new._type = c.operands[same[0]].type

    def _all_reduce(self, parts: list[SSAValue], hint: str | None) -> list[SSAValue]:
        ar = dist.AllReduceOp(parts, [dist.device_of(p) for p in parts],
                              [p.type for p in parts], {"reduce": StringAttr("sum")})
        self.out.append(ar)
        for r in ar.results:
            r.name_hint = (hint or "v") + "_ep"
        return list(ar.results)

    def _loss(self, o: dist.StoreOp) -> None:
        parts = []
        for b in range(self.n):
            v = self.maps[b][o.value]
            s = dist.SumOp([v], 1.0 / self.n, dist.device_of(v))
            s.result.name_hint = "loss_part"
            self.out.append(s)
            parts.append(s.result)
        for b, r in enumerate(self._all_reduce(parts, "loss")):
            self.maps[b][o.value] = r
            self._clone(o, b)

    def _optimizer(self, o: dist.TaskOp) -> None:
        n = self.n
        fn = SymbolTable.lookup_symbol(o, o.callee)
        assert isinstance(fn, func.FuncOp)
        todo: list[SSAValue] = []
        for i, v in enumerate(o.args):
            info = arg_info(fn, i)
            if info.get("kind") == "grad" and self.owner(info.get("name", "")) is None \
                    and not self.sharded(info.get("name", "")) and v not in self.reduced \
                    and v not in todo:
                todo.append(v)
        self._reduce_over_ep(todo)
        st = self.stages.get(o.stage.data)
        if st is None:
            for b in range(n):
                self._clone(o, b)
            return
        if getattr(st, "stacked", False):
            self._optimizer_on_rows(o, fn)
            return
        for b in range(n):
            new_fn, keep_args, keep_res = st.opt_fns[b]
            args = [self.maps[b][o.args[i]] for i in keep_args]
            if any(a is ABSENT for a in args):
                raise PiperError(f"{_NAME}: internal error: @{new_fn.sym_name.data} reads an "
                                 "expert's state that ep rank {b} does not hold")
            t = dist.TaskOp("OPT", o.stage.data, o.mb.data, o.replica.data * n + b,
                            self.dev(o.device.data, b), new_fn.sym_name.data, args,
                            new_fn.function_type.outputs.data)
            t.inherit_schedule(o)
            self.out.append(t)
            for j, r in enumerate(o.res):
                if j in keep_res:
                    new = t.res[keep_res.index(j)]
                    new.name_hint = r.name_hint
                    self.maps[b][r] = new
                else:
                    self.maps[b][r] = ABSENT

    def _reduce_over_ep(self, grads: list[SSAValue]) -> None:
        """Sum replicated parameters' gradients over the ep group: one
        all_reduce of a bucket per optimizer task (pack, all_reduce, unpack)
        when the gradients share an element type, else one each."""
        n = self.n
        by_type: dict = {}
        for v in grads:
            by_type.setdefault(self.maps[0][v].type.element_type, []).append(v)
        for group in by_type.values():
            if len(group) == 1:
                v = group[0]
                parts = [self.maps[b][v] for b in range(n)]
                for b, r in enumerate(self._all_reduce(parts, v.name_hint)):
                    self.maps[b][v] = r
                continue
            packs = []
            for b in range(n):
                vals = [self.maps[b][v] for v in group]
                pk = dist.PackOp(vals, dist.device_of(vals[0]))
                pk.result.name_hint = "grads_ep_packed"
                self.out.append(pk)
                packs.append(pk.result)
            for b, r in enumerate(self._all_reduce(packs, "grads")):
                up = dist.UnpackOp(r, dist.device_of(r), [self.maps[b][v].type for v in group])
                self.out.append(up)
                for v, x in zip(group, up.results, strict=True):
                    x.name_hint = (v.name_hint or "v") + "_ep"
                    self.maps[b][v] = x

    def _optimizer_on_rows(self, o: dist.TaskOp, fn: func.FuncOp) -> None:
        """The optimizer task of a stage with stacked experts, on every rank, its
        function re-typed to the local rows (or ZeRO's shards of them)."""
        types = [self.maps[0][a].type for a in o.args]
        new_fn = fn
        if types != list(fn.function_type.inputs.data):
            name = fn.sym_name.data
            if name not in self.retyped:
                self.retyped[name] = retype_function(fn, f"{name}_ep", types)
            new_fn = self.retyped[name]
        for b in range(self.n):
            args = [self.maps[b][a] for a in o.args]
            t = dist.TaskOp("OPT", o.stage.data, o.mb.data, o.replica.data * self.n + b,
                            self.dev(o.device.data, b), new_fn.sym_name.data, args,
                            new_fn.function_type.outputs.data)
            t.inherit_schedule(o)
            self.out.append(t)
            for r, new in zip(o.res, t.res, strict=True):
                new.name_hint = r.name_hint
                self.maps[b][r] = new

    # -- F and B tasks of stages with experts --------------------------------------

    def _split(self, o: dist.TaskOp) -> None:
        n, st = self.n, self.stages[o.stage.data]
        stacked = getattr(st, "stacked", False)
        key = (o.stage.data, o.mb.data, o.replica.data)
        t = o.kind.data
        side = st.side_of(t)
        fn = side.fn
        if t == "F":
            vals = [{} for _ in range(n)]
            self.records[key] = vals
        else:
            vals = self.records.get(key)
            if vals is None:
                raise PiperError(f"{_NAME}: internal error: {o.label} runs before its forward")
            if t == st.last_tag:
                del self.records[key]
        for b in range(n):
            for i, a in enumerate(fn.body.block.args):
                if st.resolve(side, a) is a:
                    vals[b][("v", a)] = self.maps[b][o.args[i]]
        if stacked:
            for kind, item in st.phases[t]:
                if kind == "fn":
                    for b in range(n):
                        self._task(o, item[b], b, vals[b])
                else:
                    for send, recv, hint in item:
                        self._exchange([vals[b][send] for b in range(n)], vals, recv, hint)
            self._results_of(o, st, t, vals, stacked)
            return
        pre, experts, post = st.pieces[t]
        for b in range(n):
            self._task(o, pre, b, vals[b])
        for v in side.dispatch:
            parts = [vals[b][("send", t, v)] for b in range(n)]
            self._exchange(parts, vals, ("disp", t, v), st.names(v) + "_all")
        for b in range(n):
            self._task(o, experts[b], b, vals[b])
        for index, name in [(tr.index, st.names(tr.root.outputs[0])) for tr in side.trees]:
            parts = [vals[b][("part", t, index)] for b in range(n)]
            self._exchange(parts, vals, ("comb", t, index), name + "_parts")
        for b in range(n):
            self._task(o, post, b, vals[b])
        self._results_of(o, st, t, vals, stacked)

    def _results_of(self, o: dist.TaskOp, st, t: str, vals: list[dict], stacked: bool) -> None:
        n = self.n
        keys = st.result_keys(t)
        for b in range(n):
            for r, k in zip(o.res, keys, strict=True):
                if k is None:
                    continue  # an expert's saved value: lives on its owner
                if k[0] == "grad" and stacked:
                    self.maps[b][r] = vals[b][k]
                elif k[0] == "grad":
                    owner = st.param_owner[k[1]]
                    self.maps[b][r] = vals[b][k] if owner == b else ABSENT
                else:
                    self.maps[b][r] = vals[b][k]

    def _exchange(self, parts: list[SSAValue], vals: list[dict], key, hint: str) -> None:
        a2a = dist.AllToAllOp(parts, [dist.device_of(p) for p in parts],
                              [p.type for p in parts])
        self.out.append(a2a)
        for b, r in enumerate(a2a.results):
            r.name_hint = sanitize(hint)
            vals[b][key] = r

    def _task(self, o: dist.TaskOp, fn: _Fn, b: int, vals: dict) -> None:
        if not fn.results:
            return
        args = []
        for k in fn.arg_keys:
            v = vals.get(k)
            if v is None or v is ABSENT:
                raise PiperError(f"{_NAME}: internal error: @{fn.name} of {o.label} on ep rank "
                                 f"{b} has no value for {k[0]} {k[1:]!s}")
            args.append(v)
        t = dist.TaskOp(o.kind.data, o.stage.data, o.mb.data, o.replica.data * self.n + b,
                        self.dev(o.device.data, b), fn.name, args, fn.result_types)
        t.inherit_schedule(o)
        self.out.append(t)
        for k, r in zip(fn.result_keys, t.res, strict=True):
            vals[k] = r
            r.name_hint = fn.env[k].name_hint


def _rows_of(t: TensorType, n: int, where: Operation) -> TensorType:
    """t with 1/n of its dim 0 (a stacked expert tensor's local rows)."""
    shape = list(t.get_shape())
    if n == 1:
        return t
    if not shape or shape[0] % n:
        raise PiperError(f"{_NAME}: {t} does not split into {n} blocks of rows",
                         op_location(where))
    return TensorType(t.element_type, [shape[0] // n, *shape[1:]])


@dataclass(frozen=True)
class ExpertParallelAlias(ExpertParallel):
    """`expert-parallel`: the old name of `expert_parallel`, kept for one release."""

    name = "expert-parallel"
