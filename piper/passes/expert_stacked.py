"""expert_parallel on stacked experts: one region whose tensors carry the experts on dim 0.

Models trained as MoE today keep a layer's experts as one module with one
parameter per projection, stacked along dim 0 ([experts, in, out]), and run
them as batched (grouped) matmuls over token slots [experts, capacity, dim]
(`examples/moe.py`'s StackedExperts, transformers' and torchtitan's grouped
experts; `piper.moe` routes tokens into such slots with static shapes). In
the IR this is one "EP" region per stage. `expert_parallel(n)` splits it
by its dim 0: ep rank b owns experts b*E/n .. (b+1)*E/n - 1, i.e. the
rows b*E/n.. of every stacked parameter (loaded and stored as `shard b of
n`, its optimizer state alike), and only the slots of those experts travel:

    @F{s}_pre        every rank: router, routing, the slots [E, C, d] (what
                     does not depend on the experts)
    dist.all_to_all  dispatch: the slots split by dim 0, block b to rank b;
                     rank b receives its experts' slots from every rank, in
                     rank order ([n * E/n, C, d])
    @F{s}_experts{b} rank b: the expert ops once per source rank's block, at
                     the local shape [E/n, ...] (re-typed: only dim 0 changes),
                     the outputs concatenated over the blocks
    dist.all_to_all  combine: each rank gets back its own slots' outputs,
                     [E, C, d] in expert order, exactly the tensor the
                     region produced in the captured step
    @F{s}_post       every rank: the combine (gather, weights) and the rest

so a step moves E*C*d values per rank and MoE layer each way, the routed
slots only (with a capacity of tokens*top_k/E, 1/n of what the dense
example's dispatch moves when n = E and top_k = 1). The backward is the
transpose: the gradient of the region's outputs is dispatched, the owner
runs the backward ops per block (reading what its forward saved per block
and the forward's received slots), returns the gradient of the slots
through the combine all_to_all, and sums its parameters' gradients over the
blocks. Those gradients are the owner's rows of the full gradient (every
rank's tokens contributed, each with the 1/n of the tangent), so they need
no reduction; the optimizer runs on the rows, re-typed like the experts.

What is rejected, each with one error naming the stage and op: a region
value whose dim 0 is not the experts' count; a stacked parameter read
outside the region; parameters of the region with different dim 0; a
region reading a value that depends on its own outputs; E not divisible
by n.
"""

from __future__ import annotations

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, ModuleOp, TensorType, i64
from xdsl.ir import BlockArgument, Operation, SSAValue

from piper.diagnostics import PiperError, op_location
from piper.dialects.graph import AtenOp
from piper.passes.expert_parallel import _aten, _Fn, return_chunk_sum, return_saved
from piper.passes.func_utils import ValueNames, graph_attrs, parse_from, sanitize
from piper.passes.retype import infer_types

EXPERT_TAG = "EP"
_NAME = "expert_parallel"
# ops whose int-list arguments spell a shape (its dim 0 is re-typed with the values)
_SHAPED = {"aten.view.default", "aten._unsafe_view.default", "aten.reshape.default",
           "aten.expand.default", "aten.new_zeros.default", "aten.new_empty.default",
           "aten.new_ones.default", "aten.new_full.default", "aten.zeros.default",
           "aten.full.default", "aten.empty.memory_format"}


def _err(stage: int, msg: str, where: Operation | None = None) -> PiperError:
    return PiperError(f"{_NAME}: stage {stage}: {msg}", op_location(where) if where else None)


def _region(op: Operation) -> int | None:
    return op.tag_dict().get(EXPERT_TAG) if isinstance(op, AtenOp) else None


def _describe(op: Operation) -> str:
    what = op.target.data if isinstance(op, AtenOp) else op.name
    res = ", ".join(f"%{r.name_hint}" for r in op.results if r.name_hint)
    return f"{res + ' = ' if res else ''}{what}"


def _rows(t) -> int | None:
    shape = t.get_shape() if isinstance(t, TensorType) else ()
    return shape[0] if shape else None


def _local(t: TensorType, n: int) -> TensorType:
    shape = list(t.get_shape())
    return TensorType(t.element_type, [shape[0] // n, *shape[1:]])


def stacked_stages(fns: dict, tagged: list[int]) -> set[int]:
    """The stages whose expert regions hold stacked experts: one region, or
    regions each of whose parameters and token inputs share one dim 0 (an
    expert written as its own module reads tokens [T, ...] and weights of
    its own shapes)."""
    out = set()
    for s in tagged:
        fn = fns.get(("F", s))
        if fn is None:
            continue
        regions: dict[int, list[Operation]] = {}
        for o in fn.body.block.ops:
            if (r := _region(o)) is not None:
                regions.setdefault(r, []).append(o)
        if len(regions) == 1 or all(_looks_stacked(ops) for ops in regions.values()):
            out.add(s)
    return out


def _looks_stacked(ops: list[Operation]) -> bool:
    mine = set(ops)
    rows = set()
    for o in ops:
        for v in o.operands:
            if isinstance(v.owner, Operation) and v.owner in mine:
                continue
            rows.add(_rows(v.type))
    return len(rows) == 1 and None not in rows and next(iter(rows)) > 1


class _Side:
    """One function of the stage (F, B, or I and W), cut at its expert
    regions: segment 0, region 0, segment 1, ..., region k-1, segment k.
    A segment runs on every rank on its own tokens; a region on the owners,
    after a dispatch all_to_all, followed by a combine all_to_all."""

    def __init__(self, tag: str, fn: func.FuncOp, index: int):
        self.tag, self.fn, self.index = tag, fn, index
        self.block = fn.body.block
        self.ops = [o for o in self.block.ops if not isinstance(o, func.ReturnOp)]
        self.opset = set(self.ops)
        self.returns = list(self.block.last_op.operands)
        self.x = [o for o in self.ops if _region(o) is not None]
        self.xset = set(self.x)
        order: list[int] = []
        for o in self.x:
            if _region(o) not in order:
                order.append(_region(o))
        self.regions = order  # EP tag values, in the order the function runs them
        self.region = {o: order.index(_region(o)) for o in self.x}
        self.exchanges = tag != "W"  # W only reads what F and I left on the owner
        k = len(order)
        self.segments: list[list[Operation]] = [[] for _ in range(k + 1)]
        self.xops: list[list[Operation]] = [[o for o in self.x if self.region[o] == i]
                                            for i in range(k)]
        self.dispatch: list[list[SSAValue]] = [[] for _ in range(k)]
        self.combine: list[list[SSAValue]] = [[] for _ in range(k)]
        self.level: dict[SSAValue, int] = {}  # token value -> the segment computing it
        self.inv: set[Operation] = set()  # region ops that read no token data
        self.result_key: list = []

    def producer(self, v: SSAValue) -> Operation | None:
        p = v.owner
        return p if isinstance(p, Operation) and p in self.opset else None

    def all_dispatch(self) -> list[SSAValue]:
        return [v for d in self.dispatch for v in d]

    def all_combine(self) -> list[SSAValue]:
        return [v for c in self.combine for v in c]


class StackedStage:
    """One stage with a stacked-experts region, cut for n ep ranks."""

    stacked = True

    def __init__(self, module: ModuleOp, fns: dict, s: int, n: int):
        self.s, self.n = s, n
        if ("F", s) not in fns:
            raise _err(s, f"expected @F{s}")
        tags = ["F", "B"] if ("B", s) in fns else ["F", "I", "W"]
        if any((t, s) not in fns for t in tags):
            raise _err(s, f"expected @F{s} and @B{s} (or @I{s} and @W{s})")
        self.sides = [_Side(t, fns[(t, s)], i) for i, t in enumerate(tags)]
        self.by_tag = {sd.tag: sd for sd in self.sides}
        self.last_tag = tags[-1]
        self.names = ValueNames()
        for sd in self.sides:
            for i in range(len(sd.block.args)):
                self.names.reserve(graph_attrs(sd.fn, i).get("name", ""))
        later = self.sides[1:]
        if not any(parse_from(graph_attrs(sd.fn, i).get("from", "")) is not None
                   and parse_from(graph_attrs(sd.fn, i)["from"])[0] == f"F{s}"
                   for sd in later for i in range(len(sd.block.args))):
            raise _err(s, f"the backward of stage {s} reads nothing @F{s} saved (the stage is "
                       "recomputed); expert parallelism does not compose with recompute")
        self.side_of_op = {o: sd for sd in self.sides for o in sd.ops}
        if not self.sides[0].x:
            raise _err(s, "the expert region has no forward ops")
        self.params: dict[str, SSAValue] = {}  # stacked parameter -> an argument
        self.shared_params: set[str] = set()
        self.saved: list[SSAValue] = []  # region values a later function's region reads
        self.sender: dict[SSAValue, _Side] = {}  # a dispatched value -> the side sending it
        self.m = self._experts()
        if self.m % n:
            raise _err(s, f"{self.m} stacked experts (dim 0 of "
                       f"'{next(iter(self.params))}') do not divide over n={n} ranks")
        for sd in self.sides:
            self._classify(sd)
        both = sorted(set(self.params) & self.shared_params)
        if both:
            raise _err(s, f"parameter '{both[0]}' is read by the experts and outside them; "
                       "a stacked expert parameter must be the experts' own")
        self._outputs(module)
        self._invariance()
        self._build()
        self.opt_fns: list = []  # the rewrite re-types the optimizer task's function

    def side_of(self, tag: str) -> _Side:
        return self.by_tag[tag]

    def result_keys(self, tag: str) -> list:
        return self.by_tag[tag].result_key

    # -- analysis ---------------------------------------------------------------

    def resolve(self, sd: _Side, v: SSAValue) -> SSAValue:
        """A block argument that an earlier function of the stage returned:
        the value it returned."""
        while isinstance(v, BlockArgument):
            owner = next((x for x in self.sides if v.block is x.block), None)
            if owner is None:
                return v
            ref = parse_from(graph_attrs(owner.fn, v.index).get("from", ""))
            src = self.by_tag.get(ref[0][:1]) if ref is not None and ref[0][1:] == str(self.s) \
                else None
            if src is None or src.index >= owner.index:
                return v
            v = src.returns[ref[1]]
        return v

    def origin(self, v: SSAValue) -> _Side | None:
        p = v.owner
        return self.side_of_op.get(p) if isinstance(p, Operation) else None

    def in_region(self, v: SSAValue) -> bool:
        sd = self.origin(v)
        return sd is not None and v.owner in sd.xset

    def arg_info(self, v: SSAValue) -> dict[str, str] | None:
        if isinstance(v, BlockArgument):
            for sd in self.sides:
                if v.block is sd.block:
                    return graph_attrs(sd.fn, v.index)
        return None

    def _param(self, v: SSAValue) -> str | None:
        info = self.arg_info(v)
        return info.get("name", "?") if info is not None and info.get("kind") == "param" else None

    def _experts(self) -> int:
        rows: dict[str, int] = {}
        for sd in self.sides:
            for o in sd.x:
                for u in o.operands:
                    name = self._param(self.resolve(sd, u))
                    if name is not None and name not in rows:
                        r = _rows(u.type)
                        if r is None:
                            raise _err(self.s, f"parameter '{name}' read by the experts is "
                                       "0-d; stacked expert parameters hold the experts "
                                       "on dim 0", o)
                        rows[name] = r
                        self.params[name] = u
        if not rows:
            raise _err(self.s, "the expert region reads no parameter; an \"EP\" region holds "
                       "one module with parameters stacked on dim 0 (or several expert "
                       "modules, each its own region)")
        if len(set(rows.values())) > 1:
            listed = ", ".join(f"'{k}' {v}" for k, v in rows.items())
            raise _err(self.s, f"the expert region's parameters differ in dim 0 ({listed}); "
                       "stacked experts hold one expert per row of dim 0")
        return next(iter(rows.values()))

    def _check_rows(self, v: SSAValue, user: Operation, what: str) -> None:
        if _rows(v.type) != self.m:
            raise _err(self.s, f"{what} {_value(v)} of type {v.type} (read by "
                       f"{_describe(user)}) does not have the {self.m} experts on dim 0; "
                       "everything an expert region reads or gives out is stacked by expert",
                       user)

    def dispatched_by(self, v: SSAValue) -> _Side | None:
        return self.sender.get(v)

    def _classify(self, sd: _Side) -> None:
        for o in sd.ops:
            if o in sd.xset:
                r = sd.region[o]
                for u in o.operands:
                    v = self.resolve(sd, u)
                    src = self.origin(v)
                    if src is sd:
                        if v.owner in sd.xset:
                            if sd.region[v.owner] != r:
                                raise _err(self.s, f"{_describe(o)} of expert region "
                                           f"{sd.regions[r]} reads {_describe(v.owner)} of "
                                           f"region {sd.regions[sd.region[v.owner]]}", o)
                            continue
                        if sd.level[v] > r:
                            raise _err(self.s, f"{_describe(o)} of the experts reads "
                                       f"{_describe(v.owner)}, which depends on the experts' "
                                       "own output", o)
                        self._dispatch(sd, v, o, r)
                    elif src is not None and v.owner in src.xset:
                        if v not in self.saved:
                            self.saved.append(v)
                    elif self._param(v) is not None:
                        self._check_rows(v, o, "parameter")
                    elif self.dispatched_by(v) is None:
                        self._dispatch(sd, v, o, r)
                continue
            reads = [self.resolve(sd, u) for u in o.operands]
            level = 0
            for v in reads:
                src = self.origin(v)
                if src is not None and src is not sd and v.owner in src.xset:
                    raise _err(self.s, f"{_describe(v.owner)} of the experts "
                               f"(@{src.fn.sym_name.data}) is read by {_describe(o)} outside "
                               "the experts", o)
                name = self._param(v)
                if name is not None:
                    self.shared_params.add(name)
                if src is sd:
                    if v.owner in sd.xset:
                        r = sd.region[v.owner]
                        level = max(level, r + 1)
                        if v not in sd.combine[r]:
                            if not sd.exchanges:
                                raise _err(self.s, f"@{sd.fn.sym_name.data}: {_describe(o)} "
                                           f"reads {_describe(v.owner)} of the experts; the "
                                           "weight-gradient function's expert values stay on "
                                           "the owner", o)
                            self._check_rows(v, o, "expert output")
                            sd.combine[r].append(v)
                    else:
                        level = max(level, sd.level[v])
            sd.segments[level].append(o)
            for v in o.results:
                sd.level[v] = level

    def _dispatch(self, sd: _Side, v: SSAValue, user: Operation, r: int) -> None:
        if self.dispatched_by(v) is not None:
            return  # the owner kept the received tensor
        if not sd.exchanges:
            raise _err(self.s, f"@{sd.fn.sym_name.data}: {_describe(user)} of the experts reads "
                       f"{_value(v)}, which no earlier part sent to the owners", user)
        self._check_rows(v, user, "token value")
        sd.dispatch[r].append(v)
        self.sender[v] = sd

    def _readers(self, module: ModuleOp, ref: str) -> list[str]:
        mine = {sd.fn for sd in self.sides}
        return [op.sym_name.data for op in module.body.block.ops
                if isinstance(op, func.FuncOp) and op not in mine
                and any(graph_attrs(op, i).get("from") == ref
                        for i in range(len(op.body.block.args)))]

    def _outputs(self, module: ModuleOp) -> None:
        s = self.s
        self.grads: list[tuple[str, SSAValue]] = []
        for sd in self.sides:
            for k, rv in enumerate(sd.returns):
                info = graph_attrs(sd.fn, k, results=True)
                p = sd.producer(rv)
                if p is not None and p in sd.xset:
                    kind, name = info.get("kind"), info.get("name", "")
                    if kind == "grad" and name in self.params:
                        self.grads.append((name, rv))
                        sd.result_key.append(("grad", name))
                        continue
                    readers = self._readers(module, f"{sd.tag}{s}#{k}")
                    if kind != "saved" or readers:
                        raise _err(s, f"@{sd.fn.sym_name.data} returns {_describe(p)} of the "
                                   f"experts as '{kind}'"
                                   f"{' to @' + readers[0] if readers else ''}; only the "
                                   "experts' own backward may read their values", p)
                    sd.result_key.append(None)  # stays on the owner, per block
                    continue
                v = self.resolve(sd, rv)
                src = self.origin(v)
                if src is not None and v.owner in src.xset:
                    raise _err(s, f"@{sd.fn.sym_name.data} returns {_describe(v.owner)} of the "
                               "experts' forward", v.owner)
                sd.result_key.append(("v", v))

    def _invariance(self) -> None:
        for sd in self.sides:
            for o in sd.x:
                ok = True
                for u in o.operands:
                    v = self.resolve(sd, u)
                    src = self.origin(v)
                    if src is not None:
                        ok = v.owner in src.inv
                    else:
                        ok = self._param(v) is not None
                    if not ok:
                        break
                if ok:
                    sd.inv.add(o)

    def owner(self, tensor: str) -> int | None:
        return None  # every ep rank holds rows of a stacked parameter

    def sharded(self, tensor: str) -> bool:
        """A stacked parameter (or its optimizer state): rows split over ep."""
        return tensor in self.params or (":" in tensor and tensor.rsplit(":", 1)[0]
                                         in self.params)

    # -- the new functions -------------------------------------------------------

    def _attrs(self, v: SSAValue, kind: str) -> dict[str, str]:
        info = self.arg_info(v)
        if info is not None:
            return {k: x for k, x in info.items() if k != "from"}
        return {"name": self.names(v), "kind": kind}

    def _tok(self, fn, sd: _Side, v: SSAValue) -> SSAValue:
        v = self.resolve(sd, v)
        key = ("v", v)
        if key not in fn.env:
            src = self.origin(v)
            crosses = src is not None and src is not sd
            fn.arg(key, v.type, self._attrs(v, "saved" if crosses else "act"), v.name_hint)
        return fn.env[key]

    def _seg_val(self, fn, sd: _Side, u: SSAValue) -> SSAValue:
        """A value a segment reads: an expert output (the combine all_to_all's
        result) or a token value (an argument if not computed here)."""
        v = self.resolve(sd, u)
        if self.origin(v) is sd and v.owner in sd.xset:
            key = ("v", v)
            if key not in fn.env:
                j = sd.all_combine().index(v)
                a = fn.arg(("comb", sd.tag, j), v.type,
                           {"name": self.names(v), "kind": "combine"}, self.names(v))
                fn.env[key] = a
            return fn.env[key]
        return self._tok(fn, sd, v)

    def _build(self) -> None:
        s, n = self.s, self.n
        self.fns: list[func.FuncOp] = []
        self.phases: dict[str, list] = {}
        self.segment_fns: list = []
        for sd in self.sides:
            t, k = sd.tag, len(sd.regions)
            phases: list = []
            for L, ops in enumerate(sd.segments):
                name = f"{t}{s}_pre" if L == 0 else f"{t}{s}_post" if L == k else f"{t}{s}_mid{L}"
                seg = _Fn(name)
                for o in ops:
                    seg.clone(o, [self._seg_val(seg, sd, u) for u in o.operands])
                self.segment_fns.append((sd, seg))
                phases.append(("fn", [seg] * n))
                if L == k:
                    break
                send = [(("v", v), ("disp", t, v), self.names(v) + "_all")
                        for v in sd.dispatch[L]]
                phases.append(("a2a", send))
                phases.append(("fn", [self._experts_fn(sd, L, b) for b in range(n)]))
                first = sum(len(c) for c in sd.combine[:L])
                back = [(("part", t, first + j), ("comb", t, first + j),
                         self.names(v) + "_parts") for j, v in enumerate(sd.combine[L])]
                phases.append(("a2a", back))
            self.phases[t] = phases
        self._results()
        for sd in self.sides:
            for kind, item in self.phases[sd.tag]:
                if kind == "fn":
                    self.fns += list({id(f): f for f in item}.values())
        self.fns = [f.finish() for f in self.fns]

    def _local_op(self, fn, o: AtenOp, operands: list[SSAValue]) -> AtenOp:
        """`o` on operands whose dim 0 holds E/n experts instead of E."""
        m, n = self.m, self.n
        args = list(o.args.data)
        if o.target.data in _SHAPED and _rows(o.outputs[0].type) == m:
            args = [_first_rows(a, m, m // n) for a in args]
        new = AtenOp(o.target.data, operands, args, o.kwargs.data,
                     [r.type for r in o.outputs], o.tag_dict())
        new.location = o.location
        types = infer_types(new, [v.type for v in operands])
        for old, r, t in zip(o.outputs, new.outputs, types, strict=True):
            if _rows(old.type) != m or _rows(t) != m // n:
                raise _err(self.s, f"{_describe(o)} gives {t} on an ep rank's {m // n} "
                           f"experts (captured {old.type}); every value of an expert region "
                           "keeps the experts on dim 0", o)
            r._type = t
            r.name_hint = sanitize(old.name_hint) if old.name_hint else None
        fn.block.add_op(new)
        return new

    def _experts_fn(self, sd: _Side, r: int, b: int):
        s, n, t, m = self.s, self.n, sd.tag, self.m
        k = m // n
        name = f"{t}{s}_experts{b}" if len(sd.regions) == 1 else f"{t}{s}_r{r}_experts{b}"
        fn = _Fn(name)
        shared: dict[SSAValue, SSAValue] = {}
        chunk: list[dict[SSAValue, SSAValue]] = [{} for _ in range(n)]

        def value(u: SSAValue, i: int) -> SSAValue:
            v = self.resolve(sd, u)
            if v in chunk[i]:
                return chunk[i][v]
            if v in shared:
                return shared[v]
            src = self.origin(v)
            if src is not None and src is not sd and v.owner in src.xset:
                lt = _local(v.type, n)  # saved by an earlier part's experts on this rank
                if v.owner in src.inv:
                    shared[v] = fn.arg(("saved", v, None), lt,
                                       {"name": self.names(v), "kind": "saved"}, v.name_hint)
                    return shared[v]
                chunk[i][v] = fn.arg(("saved", v, i), lt,
                                     {"name": f"{self.names(v)}@{i}", "kind": "saved"},
                                     v.name_hint)
                return chunk[i][v]
            if self._param(v) is not None:
                shared[v] = fn.arg(("v", v), _local(v.type, n), self._attrs(v, "param"),
                                   v.name_hint)
                return shared[v]
            d = self.dispatched_by(v)
            buf = fn.arg(("disp", d.tag, v), v.type,
                         {"name": self.names(v), "kind": "dispatch"}, self.names(v) + "_all")
            sl = fn.add(_aten("aten.slice.Tensor", [buf, 0, i * k, (i + 1) * k],
                              _local(v.type, n)))
            sl.outputs[0].name_hint = sanitize(self.names(v))
            chunk[i][v] = sl.outputs[0]
            return chunk[i][v]

        def at(v: SSAValue, i: int) -> SSAValue:
            v = self.resolve(sd, v)
            return chunk[i][v] if v in chunk[i] else shared[v]

        for o in sd.xops[r]:
            if o in sd.inv:
                new = self._local_op(fn, o, [value(u, 0) for u in o.operands])
                shared.update(zip(o.results, new.results, strict=True))
            else:
                for i in range(n):
                    new = self._local_op(fn, o, [value(u, i) for u in o.operands])
                    chunk[i].update(zip(o.results, new.results, strict=True))
        first = sum(len(c) for c in sd.combine[:r])
        for j, v in enumerate(sd.combine[r], start=first):
            key = ("part", t, j)
            parts = [at(v, i) for i in range(n)]
            fn.add(_aten("aten.cat.default", [parts, 0], v.type), [key],
                   self.names(v) + "_part")
            fn.results.append((key, {"name": self.names(v), "kind": "combine"}))
        for v in self.saved:
            if self.origin(v) is sd and sd.region[v.owner] == r:
                return_saved(fn, v, v.owner in sd.inv, shared, chunk, self.names(v))
        for name, gv in self.grads:
            if self.origin(gv) is not sd or sd.region[gv.owner] != r:
                continue
            once = gv.owner in sd.inv  # read no token data: one copy, not one per chunk
            return_chunk_sum(fn, name, [at(gv, i) for i in range(1 if once else n)])
        return fn

    def _results(self) -> None:
        """Segments return what later pieces, the all_to_alls and the
        original results need."""
        pieces = []  # (side index, phase index, function) in run order
        for sd in self.sides:
            for p, (kind, item) in enumerate(self.phases[sd.tag]):
                if kind == "fn":
                    pieces += [(sd.index, p, f) for f in {id(f): f for f in item}.values()]
        dispatched = {("v", v) for sd in self.sides for v in sd.all_dispatch()}
        original = {}
        for sd in self.sides:
            for k, key in enumerate(sd.result_key):
                if key is not None and key[0] == "v":
                    original.setdefault(key, graph_attrs(sd.fn, k, results=True))
        for sd, seg in self.segment_fns:
            me = next(p for i, p, f in pieces if f is seg)
            later = {key for i, p, f in pieces if (i, p) > (sd.index, me)
                     for key in f.arg_keys}
            for key in seg.defined:
                if key[0] != "v" or not (key in later or key in original or key in dispatched):
                    continue
                attrs = original.get(key) or {
                    "name": self.names(key[1]),
                    "kind": "dispatch" if key in dispatched else
                    "saved" if any(key in f.arg_keys for i, p, f in pieces if i > sd.index)
                    else "act"}
                seg.results.append((key, {k: x for k, x in attrs.items() if k != "from"}))


def _value(v: SSAValue) -> str:
    return f"%{v.name_hint}" if v.name_hint else "a value"


def _first_rows(attr, old: int, new: int):
    if isinstance(attr, ArrayAttr) and attr.data and isinstance(attr.data[0], IntegerAttr) \
            and attr.data[0].value.data == old and all(isinstance(a, IntegerAttr)
                                                       for a in attr.data):
        return ArrayAttr([IntegerAttr(new, i64), *attr.data[1:]])
    return attr
