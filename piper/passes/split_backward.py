"""split_backward: split each stage's backward into input- and weight-gradient parts.

Input: the stage functions of `pipeline-split`. Each `@B{s}` becomes

- `@I{s}`, the input gradient: the ops the "grad_act" results need (the
  gradients earlier stages wait for). Results: those gradients, in @B{s}'s
  order and with its attributes, then the values @W{s} reads from it
  (kind "saved", `graph.name` a unique value name).
- `@W{s}`, the weight gradient: the remaining ops. Arguments: the arguments
  of @B{s} it reads (with their attributes: "saved" from `F{s}#k`,
  "grad_act" from `I{b}#k`, ...), then what @I{s} computed for it (kind
  "saved", `graph.from = "I{s}#k"`). Results: @B{s}'s "grad" results.

An op both need goes into @I{s}; @I{s} of the first stage (no earlier stage
waits for it) is then empty, and @W{s} of a stage without parameters is.
Every `graph.from = "B{s}#k"` in the module is rewritten to the function and
result that now computes the value, and each call of @B{s} becomes a call
of @I{s} followed by one of @W{s}, so the step computes exactly what it did.
This lets a schedule run I early (the previous stage waits for it) and W
late, in the bubbles (zero-bubble schedules).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError
from piper.passes.func_utils import (
    ValueNames,
    callee,
    functions,
    graph_attrs,
    outline,
    parse_from,
    require_stage_functions_level,
    sanitize,
)

_B = re.compile(r"^B(\d+)$")


@dataclass(frozen=True)
class SplitBackward(ModulePass):
    """Replace each @B{s} by @I{s} (input gradients) and @W{s} (weight gradients)."""

    name = "split_backward"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        require_stage_functions_level(op, self.name)
        fns = functions(op)
        backward = {int(m.group(1)): f for n, f in fns.items() if (m := _B.match(n))}
        if not backward:
            done = " (the module is already split)" if "I0" in fns else ""
            raise PiperError(
                f"split_backward: no backward stage functions @B0, @B1, ...{done}; "
                "run pipeline-split first"
            )
        clash = [f"@{k}{s}" for s in backward for k in "IW" if f"{k}{s}" in fns]
        if clash:
            raise PiperError(f"split_backward: {', '.join(clash)} already exist")
        # B{s} result k -> (new function, result index)
        moved: dict[tuple[str, int], tuple[str, int]] = {}
        splits: dict[str, _Split] = {}
        for s, fn in sorted(backward.items()):
            sp = _Split(fn, s)
            splits[fn.sym_name.data] = sp
            for k, where in sp.moved.items():
                moved[(fn.sym_name.data, k)] = where
            block = op.body.block
            block.insert_op_before(sp.i_fn, fn)
            block.insert_op_before(sp.w_fn, fn)
        for f in functions(op).values():
            _rewrite_from(f, moved)
        for call in [o for o in op.walk() if isinstance(o, func.CallOp)]:
            if callee(call) in splits:
                splits[callee(call)].replace_call(call)
        for sp in splits.values():
            op.body.block.erase_op(sp.fn)


def _rewrite_from(fn: func.FuncOp, moved: dict[tuple[str, int], tuple[str, int]]) -> None:
    for attr_name in ("arg_attrs", "res_attrs"):
        attrs = getattr(fn, attr_name)
        if attrs is None:
            continue
        new = []
        changed = False
        for d in attrs.data:
            ref = d.data.get("graph.from")
            src = parse_from(ref.data) if isinstance(ref, StringAttr) else None
            if src is not None and src in moved:
                to, k = moved[src]
                d = type(d)({**d.data, "graph.from": StringAttr(f"{to}#{k}")})
                changed = True
            new.append(d)
        if changed:
            setattr(fn, attr_name, ArrayAttr(new))


class _Split:
    """One @B{s} cut into @I{s} and @W{s}."""

    def __init__(self, fn: func.FuncOp, s: int):
        self.fn = fn
        self.s = s
        block = fn.body.block
        ret = block.last_op
        assert isinstance(ret, func.ReturnOp)
        results = list(ret.operands)
        kinds = [graph_attrs(fn, k, results=True).get("kind", "") for k in range(len(results))]
        input_res = [k for k, kind in enumerate(kinds) if kind == "grad_act"]
        weight_res = [k for k, kind in enumerate(kinds) if kind != "grad_act"]
        ops = [o for o in block.ops if o is not ret]

        # Which results each value flows into (a bit per result).
        reach: dict[SSAValue, int] = {}
        for k, v in enumerate(results):
            reach[v] = reach.get(v, 0) | 1 << k
        input_mask = sum(1 << k for k in input_res)
        in_i: set[Operation] = set()
        for o in reversed(ops):
            m = 0
            for r in o.results:
                m |= reach.get(r, 0)
            for v in o.operands:
                reach[v] = reach.get(v, 0) | m
            # W: ops serving one parameter's gradient and nothing else
            if m & input_mask or (m & ~input_mask).bit_count() > 1:
                in_i.add(o)
        i_ops = [o for o in ops if o in in_i]
        w_ops = [o for o in ops if o not in in_i]

        # what W reads: arguments of B, values I computes
        w_reads: list[SSAValue] = []
        for v in [v for o in w_ops for v in o.operands] + [results[k] for k in weight_res]:
            if v not in w_reads and (v in block.args or v.owner in in_i):
                w_reads.append(v)
        names = ValueNames()
        for k in range(len(block.args)):
            names.reserve(graph_attrs(fn, k).get("name", ""))
        i_saved = [v for v in w_reads if v.owner in in_i]

        def args_for(values: set[SSAValue]) -> list:
            return [(a, a.type, graph_attrs(fn, a.index), a.name_hint)
                    for a in block.args if a in values]

        i_uses = {v for o in i_ops for v in o.operands} | {results[k] for k in input_res}
        i_results = [(results[k], graph_attrs(fn, k, results=True)) for k in input_res]
        i_results += [(v, {"name": names(v), "kind": "saved"}) for v in i_saved]
        self.i_fn = outline(f"I{s}", args_for(i_uses), i_ops, i_results)
        n_in = len(input_res)
        w_args = args_for(set(w_reads))
        w_args += [(v, v.type, {"name": names(v), "kind": "saved",
                                "from": f"I{s}#{n_in + j}"}, sanitize(names(v)))
                   for j, v in enumerate(i_saved)]
        w_results = [(results[k], graph_attrs(fn, k, results=True)) for k in weight_res]
        self.w_fn = outline(f"W{s}", w_args, w_ops, w_results)

        self.i_args = [a for a in block.args if a in i_uses]
        self.w_args = [a for a in block.args if a in set(w_reads)]
        self.n_in = n_in
        self.moved = {k: (f"I{s}", j) for j, k in enumerate(input_res)}
        self.moved |= {k: (f"W{s}", j) for j, k in enumerate(weight_res)}

    def replace_call(self, call: func.CallOp) -> None:
        """`call @B{s}(...)` becomes `call @I{s}(...)`, `call @W{s}(...)`."""
        ops = call.operands
        i_call = func.CallOp(self.i_fn.sym_name.data, [ops[a.index] for a in self.i_args],
                             self.i_fn.function_type.outputs.data)
        saved = list(i_call.results[self.n_in:])
        w_call = func.CallOp(self.w_fn.sym_name.data,
                             [ops[a.index] for a in self.w_args] + saved,
                             self.w_fn.function_type.outputs.data)
        parent = call.parent_block()
        parent.insert_ops_before([i_call, w_call], call)
        for k, r in enumerate(call.results):
            to, j = self.moved[k]
            new = (i_call if to.startswith("I") else w_call).results[j]
            new.name_hint = r.name_hint
            r.replace_all_uses_with(new)
        parent.erase_op(call)


@dataclass(frozen=True)
class SplitBackwardAlias(SplitBackward):
    """`split-backward`: the old name of `split_backward`, kept for one release."""

    name = "split-backward"
