"""pipeline-split: cut a captured training step into pipeline stages.

Input: a captured module (@forward, @backward, @optimizer wired by
@train_step). The stages are the values of the "PP" tag, 0..S-1; a model
without PP tags is one stage. Output: for each stage s

- `@F{s}`, its forward. Arguments: its parameters, buffers and model inputs
  (kinds "param", "buffer", "input", by `graph.name`), then the activations
  of earlier stages it reads (kind "act", `graph.from = "F{a}#k"`: result k
  of @F{a}; an activation goes straight from its stage to every later stage
  that reads it). Results: the loss (kind "loss", last stage only), the
  activations later stages read (kind "act"), then what @B{s} needs (kind
  "saved").
- `@B{s}`, its backward. Arguments: what @F{s} saved (kind "saved"), the
  gradients of later stages it reads (kind "grad_act", `graph.from =
  "B{b}#k"`), the loss tangent (kind "tangent", last stage), the parameters,
  buffers and inputs it reads itself. Results: gradients for earlier
  stages (kind "grad_act"), then the stage's parameter gradients (kind
  "grad", `graph.name` the parameter) in parameter order.
- `@OPT{s}`, the optimizer update of the stage's parameters: the ops of
  @optimizer that read its parameters, gradients or state, plus a copy of
  the ops that read no parameter (the step counter). Arguments and results
  keep @optimizer's attributes; gradient arguments also name their source
  (`graph.from = "B{s}#k"`).

@train_step keeps its signature and calls F0..F{S-1}, B{S-1}..B0, then
OPT0..OPT{S-1}; @forward, @backward and @optimizer are gone. Running the new
@train_step computes exactly what the captured one did.

Forward ops outside every PP region join the nearest region along the
data flow: an op downstream of a region (final norm, head, the loss, a
`loss_fn` outside the model) takes the latest stage among its producers;
an op upstream of every region (token embedding, attention masks, rotary
tables) takes the earliest stage that reads it. Backward ops without a tag
take the stage of their producers when those agree, else that of their
consumers. A parameter read by the forward of several stages (a tied
embedding and head) belongs to the first: its forward returns it as an
activation for the later ones (which also save it for their backward),
their gradients flow back to it as `grad_act`, and only it updates the
parameter. An op reading a value of a later stage's forward is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, BlockArgument, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError, op_location
from piper.dialects.graph import AtenOp, ConstantOp
from piper.passes.func_utils import (
    ValueNames,
    callee,
    functions,
    graph_attrs,
    outline,
    sanitize,
)

STAGE_TAG = "PP"
_PHASES = ("forward", "backward", "optimizer")


def _describe(op: Operation) -> str:
    """`%relu = aten.relu.default at loc("blocks.0")` for messages."""
    what = op.target.data if isinstance(op, AtenOp) else op.name
    res = ", ".join(f"%{r.name_hint}" for r in op.results if r.name_hint)
    where = op_location(op)
    at = where[len(op.name):] if where.startswith(op.name) else ""
    return f"{res + ' = ' if res else ''}{what}{at}"


def _list(ops: Sequence[Operation], limit: int = 6) -> str:
    text = "; ".join(_describe(o) for o in ops[:limit])
    return text + (f"; and {len(ops) - limit} more" if len(ops) > limit else "")


# What the arguments and results of a captured step's phases are (piper.capture).
_PHASE_KINDS = {
    ("forward", "argument"): ("param", "buffer", "input"),
    ("forward", "result"): ("loss", "saved"),
    ("backward", "argument"): ("saved", "param", "buffer", "input", "tangent"),
    ("backward", "result"): ("grad",),
    ("optimizer", "argument"): ("param", "grad", "state"),
    ("optimizer", "result"): ("param", "state"),
}


def _check_kinds(fn: func.FuncOp) -> None:
    """A phase's arguments and results are of the kinds capture gives it:
    the split reads them by kind (a grad marked "tangent" lost its value)."""
    name = fn.sym_name.data
    for side, n in (("argument", len(fn.function_type.inputs.data)),
                    ("result", len(fn.function_type.outputs.data))):
        allowed = _PHASE_KINDS[(name, side)]
        for i in range(n):
            kind = graph_attrs(fn, i, results=side == "result").get("kind")
            if kind not in allowed:
                raise PiperError(
                    f"pipeline-split: @{name} {side} {i} has graph.kind "
                    f"{'none' if kind is None else repr(kind)}; a captured step's @{name} "
                    f"{side}s are {', '.join(allowed)}", op=fn)


class _Step:
    """The captured step as one dataflow graph: the ops of @forward,
    @backward and @optimizer, each function argument resolved to the value
    @train_step feeds it (a @train_step argument, the result of an op of
    another phase, or a value @train_step computes itself: the tangent)."""

    def __init__(self, module: ModuleOp):
        fns = functions(module)
        missing = [f"@{n}" for n in (*_PHASES, "train_step") if n not in fns]
        if missing:
            already = " (the module is already split)" if "F0" in fns else ""
            raise PiperError(
                f"pipeline-split: expected a captured training step; "
                f"{', '.join(missing)} missing{already}"
            )
        for n in _PHASES:
            _check_kinds(fns[n])
        self.fns = fns
        self.train_step = fns["train_step"]
        self.calls: dict[str, func.CallOp] = {}
        self.step_ops: list[Operation] = []  # ops of @train_step itself
        self.returns: list[SSAValue] = []
        for o in self.train_step.body.block.ops:
            if isinstance(o, func.CallOp):
                name = callee(o)
                if name not in _PHASES or name in self.calls:
                    raise PiperError(
                        f"pipeline-split: @train_step may call @forward, @backward and "
                        f"@optimizer once each; it calls @{name}", op_location(o)
                    )
                self.calls[name] = o
            elif isinstance(o, func.ReturnOp):
                self.returns = list(o.operands)
            elif isinstance(o, AtenOp | ConstantOp):
                self.step_ops.append(o)
            else:
                raise PiperError(
                    f"pipeline-split: unexpected '{o.name}' in @train_step", op_location(o)
                )
        for n in _PHASES:
            if n not in self.calls:
                raise PiperError(f"pipeline-split: @train_step does not call @{n}")
        self.blocks = {fns[n].body.block: n for n in _PHASES}
        self.call_result = {
            r: (n, i) for n, c in self.calls.items() for i, r in enumerate(c.results)
        }
        self.ops = {
            n: [o for o in fns[n].body.block.ops if not isinstance(o, func.ReturnOp)]
            for n in _PHASES
        }
        self.phase = {o: n for n in _PHASES for o in self.ops[n]}
        self._resolved: dict[SSAValue, SSAValue] = {}

    def resolve(self, v: SSAValue) -> SSAValue:
        """The value `v` stands for in the whole step."""
        start = v
        if v in self._resolved:
            return self._resolved[v]
        while True:
            if isinstance(v, BlockArgument) and v.block in self.blocks:
                v = self.calls[self.blocks[v.block]].operands[v.index]
            elif v in self.call_result:
                n, i = self.call_result[v]
                v = self.fns[n].body.block.last_op.operands[i]
            else:
                break
        self._resolved[start] = v
        return v

    def producer(self, v: SSAValue) -> Operation | None:
        """The phase op computing `v` (None for values of @train_step)."""
        owner = self.resolve(v).owner
        return owner if owner in self.phase else None


@dataclass
class _Arg:
    value: SSAValue  # the value in the whole step
    attrs: dict[str, str]
    source: tuple[str, int] | None  # (function, result index); None: a @train_step value
    hint: str | None


@dataclass
class _Stage:
    """What one stage computes and exchanges (values of the whole step)."""

    fwd: list[Operation] = field(default_factory=list)
    bwd: list[Operation] = field(default_factory=list)
    roots_f: list[SSAValue] = field(default_factory=list)  # @train_step values F reads
    roots_b: list[SSAValue] = field(default_factory=list)  # ... and B reads
    acts_in: dict[SSAValue, int] = field(default_factory=dict)  # value -> stage computing it
    acts_out: list[SSAValue] = field(default_factory=list)
    saved_out: list[SSAValue] = field(default_factory=list)
    saved_in: dict[SSAValue, int] = field(default_factory=dict)  # -> stage whose F returns it
    grads_in: dict[SSAValue, int] = field(default_factory=dict)  # -> stage whose B returns it
    grads_out: list[SSAValue] = field(default_factory=list)
    param_grads: list[tuple[str, SSAValue]] = field(default_factory=list)


def _add(seq: list, v) -> None:
    if v not in seq:
        seq.append(v)


@dataclass(frozen=True)
class PipelineSplit(ModulePass):
    """Split a captured step into per-stage F, B and OPT functions.

    `stages`: 0 makes each PP region a stage; N (fewer than the regions)
    spreads the regions evenly over N stages, consecutive regions together
    (region r of R in stage r * N // R)."""

    name = "pipeline-split"
    stages: int = 0

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.stages < 0:
            raise PiperError(f"pipeline-split: stages must be 0 or more, got {self.stages}")
        step = _Step(op)
        splitter = _Splitter(step, self.stages)
        new_fns = splitter.build()
        block = op.body.block
        for n in (*_PHASES, "train_step"):
            block.erase_op(step.fns[n])
        for f in new_fns:
            block.add_op(f)


class _Splitter:
    def __init__(self, step: _Step, stages: int = 0):
        self.step = step
        self.merge_into = stages
        # Parameters read by the forward of several stages (tied weights):
        # value -> the first such stage, which owns, updates and sends it.
        self.shared: dict[SSAValue, int] = {}
        ts = step.train_step
        self.ts_attrs = {a: graph_attrs(ts, i) for i, a in enumerate(ts.body.block.args)}
        self.ts_index = {a: i for i, a in enumerate(ts.body.block.args)}
        self.names = ValueNames()
        self.fb = step.ops["forward"] + step.ops["backward"]
        self.index = {o: i for i, o in enumerate(self.fb)}
        self.stage: dict[Operation, int] = {}

    # -- stages ---------------------------------------------------------------

    def assign_stages(self) -> int:
        step = self.step
        tagged: dict[int, Operation] = {}
        for o in self.fb:
            if isinstance(o, AtenOp) and STAGE_TAG in o.tag_dict():
                s = o.tag_dict()[STAGE_TAG]
                self.stage[o] = s
                tagged.setdefault(s, o)
        if not tagged:
            for o in self.fb:
                self.stage[o] = 0
            return 1
        if min(tagged) < 0:
            raise PiperError(
                f"pipeline-split: {STAGE_TAG} stage {min(tagged)} is negative; "
                f"stages are numbered 0, 1, ...", op_location(tagged[min(tagged)])
            )
        n = max(tagged) + 1
        absent = [s for s in range(n) if s not in tagged]
        if absent:
            which = ", ".join(map(str, absent))
            raise PiperError(
                f"pipeline-split: {STAGE_TAG} stages must be numbered 0..{n - 1} with no "
                f"gaps; no op has stage {which} (stage {n - 1} is used at "
                f"{op_location(tagged[n - 1])})"
            )
        if 0 < self.merge_into < n:  # regions spread evenly over fewer stages
            for o, s in self.stage.items():
                self.stage[o] = s * self.merge_into // n
            n = self.merge_into

        producers = {o: self._producers(o) for o in self.fb}
        # Producers of a backward op include the forward ops whose values it
        # reads; consumers are those of the same phase.
        consumers: dict[Operation, list[Operation]] = {o: [] for o in self.fb}
        for o in self.fb:
            for p in producers[o]:
                if step.phase[p] == step.phase[o]:
                    _add(consumers[p], o)

        # Forward ops outside every region join the nearest region along
        # the data flow: an op downstream of a region (final norm, head,
        # loss) the latest stage among its producers, so it runs after all
        # of its inputs; an op upstream of every region (embedding, masks,
        # rotary tables) the earliest stage that reads it.
        forward = step.ops["forward"]
        for o in forward:
            if o not in self.stage:
                placed = [self.stage[p] for p in producers[o] if p in self.stage]
                if placed:
                    self.stage[o] = max(placed)
        for o in reversed(forward):
            if o not in self.stage:
                later = [self.stage[c] for c in consumers[o] if c in self.stage]
                if later:
                    self.stage[o] = min(later)

        def settle(strict: bool) -> None:
            changed = True
            while changed:
                changed = False
                for o in self.fb:
                    if o in self.stage:
                        continue
                    s = _agree(producers[o], self.stage, strict)
                    if s is None:
                        s = _agree(consumers[o], self.stage, strict)
                    if s is not None:
                        self.stage[o] = s
                        changed = True

        settle(strict=True)
        settle(strict=False)
        unplaced = [o for o in step.ops["forward"] if o not in self.stage]
        unplaced = [o for o in unplaced if any(r.uses for r in o.results)]
        if unplaced:
            raise PiperError(
                f"pipeline-split: unannotated compute in an annotated model: "
                f"{len(unplaced)} forward op(s) have no {STAGE_TAG} stage and none "
                f"can be inferred from their producers or consumers: {_list(unplaced)}; "
                f"run them inside a piper.annotate(\"{STAGE_TAG}\") region",
                op_location(unplaced[0]),
            )
        for o in step.ops["forward"]:  # unused and unplaceable: after its inputs
            if o not in self.stage:
                self.stage[o] = max((self.stage[p] for p in producers[o]), default=0)
        # Backward ops run in stage order S-1..0: an op must not run in an
        # earlier-running stage than the backward ops it reads.
        for o in step.ops["backward"]:
            from_bwd = [self.stage[p] for p in producers[o]
                        if step.phase[p] == "backward" and p in self.stage]
            if o not in self.stage:
                later = [self.stage[c] for c in consumers[o] if c in self.stage]
                self.stage[o] = min(from_bwd) if from_bwd else max(later, default=n - 1)
            elif from_bwd and self.stage[o] > min(from_bwd):
                self.stage[o] = min(from_bwd)
        return n

    def _producers(self, o: Operation) -> list[Operation]:
        out: list[Operation] = []
        for v in o.operands:
            p = self.step.producer(v)
            if p is not None and p in self.index:
                _add(out, p)
        return out

    # -- the split ------------------------------------------------------------

    def build(self) -> list[func.FuncOp]:
        """The stage functions and the new @train_step, in module order."""
        step = self.step
        n = self.n = self.assign_stages()
        self.stages = [_Stage() for _ in range(n)]
        for o in self.fb:
            st = self.stages[self.stage[o]]
            (st.fwd if step.phase[o] == "forward" else st.bwd).append(o)
        self._name_values()
        self.param_stage = self._param_stages()
        self.loss = self._loss()
        for s, st in enumerate(self.stages):
            for o in st.fwd:
                for v in o.operands:
                    self._need_fwd(s, step.resolve(v), o)
        for s, st in enumerate(self.stages):
            for o in st.bwd:
                for v in o.operands:
                    self._need_bwd(s, step.resolve(v), o)
        self._param_grads()
        opt = _OptimizerSplit(step, self.param_stage, n)
        self._results()
        args_of = {f"F{s}": self._forward_args(s) for s in range(n)}
        args_of |= {f"B{s}": self._backward_args(s) for s in range(n)}
        out = [self._outline(f"F{s}", args_of[f"F{s}"], st.fwd)
               for s, st in enumerate(self.stages)]
        out += [self._outline(f"B{s}", args_of[f"B{s}"], st.bwd)
                for s, st in enumerate(self.stages)]
        out += [opt.outline(s, self._opt_source) for s in range(n)]
        out.append(self._train_step(out, args_of, opt))
        return out

    def _loss(self) -> SSAValue:
        step = self.step
        loss = step.resolve(step.returns[0])
        loss_op = step.producer(loss)
        if loss_op is None or step.phase[loss_op] != "forward":
            raise PiperError("pipeline-split: the loss is not computed by @forward")
        if self.stage[loss_op] != self.n - 1:
            raise PiperError(
                f"pipeline-split: the loss is computed in stage {self.stage[loss_op]}, "
                f"not in the last stage {self.n - 1}; compute it inside the model's last "
                f"{STAGE_TAG} region", op_location(loss_op)
            )
        return loss

    def _results(self) -> None:
        """Each stage function's results, in order; `where` indexes them."""
        self.results: dict[str, list[tuple[SSAValue, dict[str, str]]]] = {}
        for s, st in enumerate(self.stages):
            res = []
            if s == self.n - 1:
                res.append((self.loss, graph_attrs(self.step.train_step, 0, results=True)
                            or {"name": "loss", "kind": "loss"}))
            res += [(v, {"name": self.names(v), "kind": "act"})
                    for v in self._by_definition(st.acts_out)]
            res += [(v, {"name": self.names(v), "kind": "saved"}) for v in st.saved_out]
            self.results[f"F{s}"] = res
            res = [(v, {"name": self.names(v), "kind": "grad_act"})
                   for v in self._by_definition(st.grads_out)]
            res += [(v, {"name": p, "kind": "grad"}) for p, v in st.param_grads]
            self.results[f"B{s}"] = res
        self.where: dict[tuple[str, SSAValue], int] = {}
        for fn, res in self.results.items():
            for k, (v, a) in enumerate(res):
                self.where.setdefault((fn, v), k)
                self.where.setdefault((f"{fn}:{a['kind']}", v), k)

    def _from(self, v: SSAValue, kind: str, fn: str) -> _Arg:
        """An argument for `v`, result `kind` of `fn`."""
        k = self._res(fn, kind, v)
        name = self.names(v)
        arg_kind = "grad_act" if kind == "grad_act" else kind
        return _Arg(v, {"name": name, "kind": arg_kind, "from": f"{fn}#{k}"}, (fn, k),
                    sanitize(name))

    def _forward_args(self, s: int) -> list[_Arg]:
        st = self.stages[s]
        acts = sorted(st.acts_in.items(), key=lambda i: (i[1], self._res(f"F{i[1]}", "act", i[0])))
        return self._roots(st.roots_f) + [self._from(v, "act", f"F{a}") for v, a in acts]

    def _backward_args(self, s: int) -> list[_Arg]:
        st = self.stages[s]
        saved = sorted(st.saved_in.items(),
                       key=lambda i: (i[1] != s, i[1], self._res(f"F{i[1]}", "saved", i[0])))
        grads = sorted(st.grads_in.items(),
                       key=lambda i: (-i[1], self._res(f"B{i[1]}", "grad_act", i[0])))
        return ([self._from(v, "saved", f"F{a}") for v, a in saved]
                + [self._from(v, "grad_act", f"B{b}") for v, b in grads]
                + self._roots(st.roots_b))

    def _opt_source(self, v: SSAValue) -> tuple[str, int] | None:
        """Where @train_step gets the value `v` an optimizer argument reads."""
        for s in range(self.n):
            k = self.where.get((f"B{s}", v))
            if k is not None:
                return (f"B{s}", k)
        return None

    def _res(self, fn: str, kind: str, v: SSAValue) -> int:
        return self.where[(f"{fn}:{kind}", v)]

    def _by_definition(self, values: list[SSAValue]) -> list[SSAValue]:
        # @train_step arguments (tied parameters a stage sends) come first
        return sorted(values, key=lambda v: (self.index[v.owner], v.index)
                      if v.owner in self.index else (-1, self.ts_index.get(v, 0)))

    def _name_values(self) -> None:
        for a in self.step.train_step.body.block.args:
            self.names.reserve(self.ts_attrs[a].get("name", ""))
        for o in self.fb:
            for r in o.results:
                self.names(r)

    def _roots(self, values: list[SSAValue]) -> list[_Arg]:
        args = []
        ts_args = [v for v in values if v in self.ts_index]
        for v in sorted(ts_args, key=self.ts_index.__getitem__):
            args.append(_Arg(v, dict(self.ts_attrs[v]), None, v.name_hint))
        for v in values:
            if v not in self.ts_index:  # computed by @train_step: the tangent
                args.append(_Arg(v, {"name": "loss", "kind": "tangent"}, None, "tangent"))
        return args

    def _outline(self, name: str, args: list[_Arg], ops: list[Operation]) -> func.FuncOp:
        return outline(
            name,
            [(a.value, a.value.type, a.attrs, a.hint) for a in args],
            ops,
            self.results[name],
            self.step.resolve,
        )

    # -- which values cross stage boundaries ----------------------------------

    def _op_stage(self, v: SSAValue) -> tuple[str, int] | None:
        p = self.step.producer(v)
        if p is None:
            return None
        phase = self.step.phase[p]
        if phase == "optimizer":
            return ("optimizer", -1)
        return (phase, self.stage[p])

    def _need_fwd(self, s: int, v: SSAValue, user: Operation) -> None:
        st = self.stages[s]
        where = self._op_stage(v)
        if where is None:
            owner = self.shared.get(v)
            if owner is None or owner == s:
                _add(st.roots_f, v)
                return
            where = ("forward", owner)  # a tied parameter: its owner's forward sends it
        phase, a = where
        if phase != "forward":
            raise PiperError(
                f"pipeline-split: forward op {_describe(user)} reads a value of the "
                f"{phase}", op_location(user)
            )
        if a == s:
            return
        if a > s:
            raise PiperError(
                f"pipeline-split: stages out of order: {_describe(user)} in stage {s} "
                f"reads %{self.names(v)}, computed in the later stage {a}; a stage may "
                f"only read values of earlier stages", op_location(user)
            )
        st.acts_in.setdefault(v, a)
        _add(self.stages[a].acts_out, v)

    def _need_bwd(self, s: int, v: SSAValue, user: Operation) -> None:
        st = self.stages[s]
        where = self._op_stage(v)
        if where is None:
            owner = self.shared.get(v)
            if owner is None or owner == s:
                _add(st.roots_b, v)
                return
            where = ("forward", owner)  # a tied parameter: as its forward received it
        phase, a = where
        if phase == "forward":
            if a < s:  # through this stage's forward, which receives it anyway
                st_f = self.stages[s]
                st_f.acts_in.setdefault(v, a)
                _add(self.stages[a].acts_out, v)
                _add(st_f.saved_out, v)
                st.saved_in.setdefault(v, s)
            else:
                _add(self.stages[a].saved_out, v)
                st.saved_in.setdefault(v, a)
        elif phase == "backward":
            if a == s:
                return
            if a < s:  # cannot happen: assign_stages moves such ops
                raise PiperError(
                    f"pipeline-split: internal error: backward op {_describe(user)} in "
                    f"stage {s} reads a gradient of stage {a}", op_location(user)
                )
            st.grads_in.setdefault(v, a)
            _add(self.stages[a].grads_out, v)
        else:
            raise PiperError(
                f"pipeline-split: backward op {_describe(user)} reads an optimizer value",
                op_location(user),
            )

    # -- parameters ------------------------------------------------------------

    def _param_stages(self) -> dict[str, int]:
        """Stage of each parameter: that of the forward ops reading it."""
        step = self.step
        users: dict[SSAValue, dict[int, Operation]] = {}
        for o in step.ops["forward"]:
            for v in o.operands:
                r = step.resolve(v)
                if self.ts_attrs.get(r, {}).get("kind") == "param":
                    users.setdefault(r, {}).setdefault(self.stage[o], o)
        out: dict[str, int] = {}
        for v, by_stage in users.items():
            name = self.ts_attrs[v].get("name", "?")
            owner = min(by_stage)
            if len(by_stage) > 1:  # tied across stages: later stages receive it
                self.shared[v] = owner
            out[name] = owner
        return out

    def _param_grads(self) -> None:
        """Each trained parameter's gradient becomes a result of its stage's
        backward."""
        step = self.step
        opt = step.fns["optimizer"]
        for i, a in enumerate(opt.body.block.args):
            info = graph_attrs(opt, i)
            if info.get("kind") != "grad":
                continue
            p = info.get("name", "")
            g = step.resolve(a)
            where = self._op_stage(g)
            s = self.param_stage.get(p)
            if s is None:
                s = where[1] if where and where[0] == "backward" else self.n - 1
                self.param_stage[p] = s
            if where is not None and where[0] == "backward" and where[1] != s:
                raise PiperError(
                    f"pipeline-split: the gradient of parameter '{p}' (stage {s}) is "
                    f"computed by the backward of stage {where[1]}",
                    op_location(g.owner),
                )
            if where is None or where[0] != "backward":
                self._need_bwd(s, g, g.owner if isinstance(g.owner, Operation) else opt)
            self.stages[s].param_grads.append((p, g))

    # -- @train_step -----------------------------------------------------------

    def _train_step(self, fns: list[func.FuncOp], args_of: dict[str, list[_Arg]],
                    opt: _OptimizerSplit) -> func.FuncOp:
        step = self.step
        old = step.train_step
        block = Block(arg_types=old.function_type.inputs.data)
        env: dict[SSAValue, SSAValue] = {}
        for a, b in zip(old.body.block.args, block.args, strict=True):
            env[a] = b
            b.name_hint = a.name_hint
        by_name = {f.sym_name.data: f for f in fns}
        outs: dict[str, list[SSAValue]] = {}
        # step value -> the call result that carries it: first a result a
        # stage function returns by name (in call order), then an optimizer
        # stage's result, so each lookup is one dict access.
        returned: dict[SSAValue, SSAValue] = {}
        updated: dict[SSAValue, SSAValue] = {}

        def value(v: SSAValue) -> SSAValue:
            """`v` (a value of the whole step) in the new @train_step."""
            v = step.resolve(v)
            if v in env:
                return env[v]
            found = returned.get(v, updated.get(v))
            if found is None:
                raise PiperError(
                    f"pipeline-split: internal error: %{v.name_hint} is not available")
            return found

        def call(name: str, operands: list[SSAValue]) -> None:
            fn = by_name[name]
            c = func.CallOp(name, operands, fn.function_type.outputs.data)
            block.add_op(c)
            outs[name] = list(c.results)
            for k, (rv, _) in enumerate(self.results.get(name, [])):
                returned.setdefault(rv, outs[name][k])
            if name.startswith("OPT"):
                for k, v in enumerate(opt.result_values(int(name[3:]))):
                    updated.setdefault(v, outs[name][k])
            for r, (_, a) in zip(c.results, self.results.get(name, []), strict=False):
                r.name_hint = sanitize(a["name"]) + ("_grad" if a["kind"] == "grad" else "")

        def operand(a: _Arg) -> SSAValue:
            if a.source is not None:
                fn, k = a.source
                return outs[fn][k]
            return env[a.value]

        for s in range(self.n):
            call(f"F{s}", [operand(a) for a in args_of[f"F{s}"]])
        for o in step.step_ops:
            mapper = {v: value(v) for v in o.operands}
            new = o.clone(value_mapper=mapper)
            block.add_op(new)
            for r_old, r_new in zip(o.results, new.results, strict=True):
                env[r_old] = r_new
        for s in reversed(range(self.n)):
            call(f"B{s}", [operand(a) for a in args_of[f"B{s}"]])
        for s in range(self.n):
            call(f"OPT{s}", [value(v) for v in opt.arg_values(s)])
        block.add_op(func.ReturnOp(*[value(v) for v in step.returns]))
        return func.FuncOp(
            "train_step",
            old.function_type,
            Region(block),
            arg_attrs=old.arg_attrs,
            res_attrs=old.res_attrs,
        )


def _only(stages: set[int]) -> int | None:
    """The one stage of a dependency set; None for none (every stage) and,
    so that no stage keeps it, -1 for several."""
    if not stages:
        return None
    return next(iter(stages)) if len(stages) == 1 else -1


def _agree(ops: list[Operation], stage: dict[Operation, int], strict: bool) -> int | None:
    """The one stage `ops` share (strict: all of them placed), or None."""
    placed = {stage[o] for o in ops if o in stage}
    if len(placed) != 1 or (strict and any(o not in stage for o in ops)):
        return None
    return next(iter(placed))


class _OptimizerSplit:
    """@optimizer cut by parameter: an op goes to the stage of the
    parameters whose parameter, gradient or state arguments it reads; ops
    that read none (the step counter) go to every stage."""

    def __init__(self, step: _Step, param_stage: dict[str, int], n: int):
        self.step = step
        self.fn = step.fns["optimizer"]
        self.n = n
        block = self.fn.body.block
        self.arg_stage: dict[SSAValue, int | None] = {}
        for i, a in enumerate(block.args):
            info = graph_attrs(self.fn, i)
            name, kind = info.get("name", ""), info.get("kind", "")
            if kind == "state" and name not in param_stage:
                name = name.rsplit(":", 1)[0]
            self.arg_stage[a] = param_stage.get(name)
        deps: dict[SSAValue, set[int]] = {
            a: ({s} if s is not None else set()) for a, s in self.arg_stage.items()
        }
        self.op_stage: dict[Operation, int | None] = {}
        for o in step.ops["optimizer"]:
            d: set[int] = set()
            for v in o.operands:
                d |= deps.get(v, set())
            if len(d) > 1:
                ss = sorted(d)
                raise PiperError(
                    f"pipeline-split: optimizer op {_describe(o)} reads parameters of "
                    f"stages {', '.join(map(str, ss))}; only per-parameter optimizer "
                    f"updates can be split into stages", op_location(o)
                )
            for r in o.results:
                deps[r] = d
            self.op_stage[o] = next(iter(d)) if d else None
        self.deps = deps
        ret = block.last_op
        self.returns = list(ret.operands)
        self._layout: dict[int, tuple[list[int], list[int]]] = {}
        self._ops: dict[int, list[Operation]] = {}
        # Per stage, what is its own; shared (stage-less) ops, arguments
        # and results belong to every stage. Grouped once, so each stage
        # costs what it keeps, not the whole @optimizer.
        self.own_ops: dict[int | None, list[Operation]] = {}
        for o in step.ops["optimizer"]:
            self.own_ops.setdefault(self.op_stage[o], []).append(o)
        self.position = {o: i for i, o in enumerate(step.ops["optimizer"])}
        self.own_args: dict[int | None, list[int]] = {}
        for i, a in enumerate(block.args):
            self.own_args.setdefault(_only(deps[a]), []).append(i)
        self.own_results: dict[int | None, list[int]] = {}
        for j, v in enumerate(self.returns):
            self.own_results.setdefault(_only(deps[v]), []).append(j)

    def layout(self, s: int) -> tuple[list[int], list[int]]:
        """Indices of @optimizer's arguments and results stage s keeps."""
        if s not in self._layout:
            block = self.fn.body.block
            ops = self.ops(s)
            used = {v for o in ops for v in o.operands}
            res = sorted(self.own_results.get(s, []) + self.own_results.get(None, []))
            returned = {self.returns[j] for j in res}
            args = [i for i in sorted(self.own_args.get(s, []) + self.own_args.get(None, []))
                    if block.args[i] in used or block.args[i] in returned]
            self._layout[s] = (args, res)
        return self._layout[s]

    def ops(self, s: int) -> list[Operation]:
        """The stage's own ops and the copies of shared ops it needs."""
        if s not in self._ops:
            own = self.own_ops.get(s, [])
            needed = {self.returns[j].owner for j in
                      self.own_results.get(s, []) + self.own_results.get(None, [])}
            for o in own:
                needed.update(v.owner for v in o.operands)
            shared: list[Operation] = []
            for o in reversed(self.own_ops.get(None, [])):
                if o in needed:
                    shared.append(o)
                    needed.update(v.owner for v in o.operands)
            self._ops[s] = sorted(own + shared, key=self.position.__getitem__)
        return self._ops[s]

    def arg_values(self, s: int) -> list[SSAValue]:
        block = self.fn.body.block
        return [block.args[i] for i in self.layout(s)[0]]

    def result_values(self, s: int) -> list[SSAValue]:
        """The step values stage s's optimizer results carry, in order."""
        return [self.step.resolve(self.returns[j]) for j in self.layout(s)[1]]

    def outline(self, s: int, source) -> func.FuncOp:
        block = self.fn.body.block
        args_i, res_j = self.layout(s)
        args = []
        for i in args_i:
            a = block.args[i]
            attrs = graph_attrs(self.fn, i)
            src = source(self.step.resolve(a))
            if src is not None:
                attrs["from"] = f"{src[0]}#{src[1]}"
            args.append((a, a.type, attrs, a.name_hint))
        results = [(self.returns[j], graph_attrs(self.fn, j, results=True)) for j in res_j]
        return outline(f"OPT{s}", args, self.ops(s), results)
