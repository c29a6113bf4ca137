"""recompute{stages=...}: activation checkpointing per pipeline stage.

After `pipeline-split`, @F{s} returns the values its backward needs
("saved") and @B{s} takes them: every microbatch keeps them alive from its
forward to its backward. With recompute, @F{s} returns only what it sends
on (the loss, activations for later stages) and @B{s} first re-runs the
part of the forward that produces the saved values, from the stage's own
inputs (parameters, model inputs, incoming activations). Memory between F
and B drops to the stage inputs; compute grows by one forward.

With `only=params`, only the saved values computed from parameters (and
buffers) alone are re-computed: a transposed or cast weight, or a
parameter itself. ZeRO-3 uses it (`shard(3)`, reshard_after_forward): a
parameter is gathered for the forward and again for the backward, and no
full copy of it, nor anything computed from it alone, lives from one to
the other. Forward ops left with no use are dropped.

Runs before `split-backward` (the re-run forward then goes with I).
@train_step is rewired, so the reference executor checks the rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError
from piper.passes.func_utils import (
    callee,
    functions,
    graph_attrs,
    make_attrs,
    outline,
    parse_from,
    require_stage_functions_level,
)


def _slice(values: list[SSAValue], block) -> list[Operation]:
    """Ops of `block` needed to compute `values`, in block order."""
    need: set[Operation] = set()
    stack = [v.owner for v in values if isinstance(v.owner, Operation)]
    while stack:
        op = stack.pop()
        if op in need or op.parent is not block:
            continue
        need.add(op)
        stack.extend(v.owner for v in op.operands if isinstance(v.owner, Operation))
    return [op for op in block.ops if op in need]


def _of_params(fn: func.FuncOp, v: SSAValue) -> bool:
    """Whether `v` (a value of `fn`'s body) is computed from `fn`'s
    parameters and buffers alone (or is one)."""
    block = fn.body.block
    args = {v.index} if v.owner is block else set()
    args |= {a.index for o in _slice([v], block) for a in o.operands if a.owner is block}
    return all(graph_attrs(fn, i).get("kind") in ("param", "buffer") for i in args)


@dataclass(frozen=True)
class Recompute(ModulePass):
    name = "recompute"

    stages: tuple[int, ...] = ()  # empty: every stage
    only: str = ""  # "params": only the saved values computed from parameters alone

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.only not in ("", "params"):
            raise PiperError(f"recompute: only must be 'params' (or left out for every saved "
                             f"value), got '{self.only}'")
        fns = functions(op)
        require_stage_functions_level(op, self.name)
        if any(n.startswith(("I", "W")) and n[1:].isdigit() for n in fns):
            raise PiperError("recompute must run before split_backward")
        stages = sorted(int(n[1:]) for n in fns if n.startswith("F") and n[1:].isdigit())
        if not stages:
            raise PiperError("recompute: no stage functions; run pipeline-split first")
        chosen = self.stages or tuple(stages)
        for s in chosen:
            if s not in stages:
                raise PiperError(f"recompute: there is no stage {s} (stages {stages})")
            self._stage(op, s)

    def _stage(self, module: ModuleOp, s: int) -> None:
        fns = functions(module)
        F, B = fns[f"F{s}"], fns.get(f"B{s}")
        if B is None:
            return
        fblock, bblock = F.body.block, B.body.block
        fret = list(fblock.last_op.operands)
        n_res = len(fret)
        every = {k for k in range(n_res) if graph_attrs(F, k, True).get("kind") == "saved"}
        saved = every if not self.only else {k for k in every if _of_params(F, fret[k])}
        if not saved:
            return
        # which B arguments are the saved results re-computed
        from_f: dict[int, int] = {}
        for i in range(len(bblock.args)):
            ref = parse_from(graph_attrs(B, i).get("from", ""))
            if ref and ref[0] == f"F{s}":
                if ref[1] not in every:
                    raise PiperError(f"recompute: @B{s} takes a non-saved result of @F{s}")
                if ref[1] in saved:
                    from_f[i] = ref[1]
        for fn in fns.values():  # nobody else may read F's saved results
            if fn is B:
                continue
            for i in range(len(fn.function_type.inputs.data)):
                ref = parse_from(graph_attrs(fn, i).get("from", ""))
                if ref and ref[0] == f"F{s}" and ref[1] in saved:
                    raise PiperError(f"recompute: @{fn.sym_name.data} reads a value saved for @B{s}")
        targets = [fret[k] for k in sorted(set(from_f.values()))]
        ops = _slice(targets, fblock)
        used_fargs = sorted({v.index for o in ops for v in o.operands if v.owner is fblock}
                            | {v.index for v in targets if v.owner is fblock})
        # B' arguments: B's own (minus saved), then the F inputs the re-run needs
        b_attrs = [graph_attrs(B, i) for i in range(len(bblock.args))]
        existing = {(a.get("kind"), a.get("name")): i for i, a in enumerate(b_attrs)
                    if a.get("kind") in ("param", "buffer", "input")}
        args, alias = [], {}
        for i, a in enumerate(bblock.args):
            if i not in from_f:
                args.append((a, a.type, b_attrs[i], a.name_hint))
        extra = []
        for j in used_fargs:
            fa = fblock.args[j]
            attrs = graph_attrs(F, j)
            key = (attrs.get("kind"), attrs.get("name"))
            if key in existing:
                alias[fa] = bblock.args[existing[key]]
            else:
                args.append((fa, fa.type, attrs, fa.name_hint))
                extra.append(j)

        def lookup(v: SSAValue) -> SSAValue:
            if v.owner is bblock and v.index in from_f:
                v = fret[from_f[v.index]]
            return alias.get(v, v)

        bret = list(bblock.last_op.operands)
        body = ops + [o for o in bblock.ops if o is not bblock.last_op]
        new_b = outline(B.sym_name.data, args, body,
                        [(v, graph_attrs(B, i, True)) for i, v in enumerate(bret)], lookup)
        keep = [k for k in range(n_res) if k not in saved]
        remap = {k: i for i, k in enumerate(keep)}
        f_args = [(a, a.type, graph_attrs(F, j), a.name_hint) for j, a in enumerate(fblock.args)]
        f_ops = [o for o in fblock.ops if o is not fblock.last_op]
        if self.only:  # what computed only the re-computed values goes
            f_ops = _slice([fret[k] for k in keep], fblock)
        new_f = outline(F.sym_name.data, f_args, f_ops,
                        [(fret[k], graph_attrs(F, k, True)) for k in keep])
        self._rewire_calls(module, F, B, new_f, new_b, from_f, keep, extra)
        block = module.body.block
        block.insert_op_before(new_f, F)
        block.insert_op_before(new_b, B)
        block.erase_op(F)
        block.erase_op(B)
        # after the swap: @B{s} may still read saved results @F{s} keeps
        self._rewire_from(module, f"F{s}", remap)

    @staticmethod
    def _rewire_from(module: ModuleOp, fname: str, remap: dict[int, int]) -> None:
        for fn in functions(module).values():
            if fn.arg_attrs is None:
                continue
            changed = False
            attrs = []
            for i in range(len(fn.arg_attrs.data)):
                a = graph_attrs(fn, i)
                ref = parse_from(a.get("from", ""))
                if ref and ref[0] == fname and ref[1] in remap:
                    a = {**a, "from": f"{fname}#{remap[ref[1]]}"}
                    changed = True
                attrs.append(make_attrs(a) if a else fn.arg_attrs.data[i])
            if changed:
                fn.arg_attrs = ArrayAttr(attrs)

    @staticmethod
    def _rewire_calls(module, F, B, new_f, new_b, from_f, keep, extra) -> None:
        fname, bname = F.sym_name.data, B.sym_name.data
        for step in functions(module).values():
            calls = [o for o in step.body.block.ops if isinstance(o, func.CallOp)]
            fcall = next((c for c in calls if callee(c) == fname), None)
            bcall = next((c for c in calls if callee(c) == bname), None)
            if fcall is None and bcall is None:
                continue
            if fcall is None or bcall is None:
                raise PiperError(f"recompute: @{step.sym_name.data} calls only one of @{fname}, @{bname}")
            blk = step.body.block
            nf = func.CallOp(fname, list(fcall.arguments), new_f.function_type.outputs.data)
            blk.insert_op_before(nf, fcall)
            for i, k in enumerate(keep):
                fcall.results[k].replace_all_uses_with(nf.results[i])
                nf.results[i].name_hint = fcall.results[k].name_hint
            bargs = [v for i, v in enumerate(bcall.arguments) if i not in from_f]
            bargs += [fcall.arguments[j] for j in extra]
            nb = func.CallOp(bname, bargs, new_b.function_type.outputs.data)
            blk.insert_op_before(nb, bcall)
            for o, n in zip(bcall.results, nb.results, strict=True):
                o.replace_all_uses_with(n)
                n.name_hint = o.name_hint
            blk.erase_op(bcall)
            blk.erase_op(fcall)


