"""precision{param=bf16 reduce=fp32 master=fp32}: mixed-precision training.

What FSDP2's `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`
does, as a rewrite of the stage functions (after `pipeline-split`, before
`place`):

- the parameters stay fp32 (the master copy the optimizer updates, with
  fp32 optimizer state);
- each forward and backward function casts every fp32 parameter (and fp32
  model input) to the compute dtype at its start, one `aten._to_copy` per
  argument, and the loss tangent likewise;
- every op after that is re-typed (its result types inferred on meta
  tensors), so forward and backward compute in bf16. An argument that
  states the dtype of the op's input (`input_dtype` of
  `_softmax_backward_data`) becomes the compute dtype; every other dtype
  argument (an explicit cast, `sum(dtype=...)`, a factory op's dtype) is
  the model's own choice and stays, so fp32 there computes in fp32, as it
  would in an eager bf16 model;
- what flows between stage functions (activations, saved values,
  activation gradients) is bf16: half the bytes between forward and
  backward and on every pipeline message;
- what leaves them for the outside keeps its dtype: the loss is cast back
  to fp32, and each parameter gradient is cast to the reduce dtype (fp32)
  before it is summed over microbatches, reduced over replicas and
  applied. With reduce=bf16 the gradients stay bf16 for the sum and the
  reduction (half the bytes) and each @OPT{s} casts them to fp32 first.

The casts are plain `graph.aten` ops (elementwise), so fusion can absorb
them into their neighbours. @train_step's calls are re-typed, so the
reference executor runs the mixed-precision step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, bf16, f16, f32
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError, op_location
from piper.dialects.graph import ArgRefAttr, AtenOp, ConstantOp
from piper.dialects.graph_values import builtin_operator, remember, remembered, resolve_target
from piper.passes.func_utils import (
    callee,
    functions,
    graph_attrs,
    parse_from,
    require_stage_functions_level,
)
from piper.passes.retype import infer_types

DTYPES: dict[str, Attribute] = {"fp32": f32, "bf16": bf16, "fp16": f16}
_NAMES = {v: k for k, v in DTYPES.items()}
CAST = "aten._to_copy.default"
# Argument kinds cast to the compute dtype where a function starts; results
# of these kinds keep the compute dtype (they flow between stage functions).
_CAST_IN = frozenset({"param", "input", "tangent"})
_FLOWING = frozenset({"act", "saved", "grad_act"})
# The functions that compute: forward, backward, and split_backward's I/W.
_COMPUTE = re.compile(r"[FBIW][0-9]+")
# The optimizer updates: they cast bf16-reduced gradients back to fp32.
_OPTIMIZER = re.compile(r"OPT[0-9]+")


def cast(v: SSAValue, elem: Attribute, tags: dict[str, int] | None = None,
         loc=None) -> AtenOp:
    """`aten._to_copy(v, dtype=elem)`: v's tensor in element type `elem`."""
    t = v.type
    op = AtenOp(CAST, [v], [ArgRefAttr(0)], {"dtype": elem},
                [TensorType(elem, t.get_shape())], tags)
    if loc is not None:
        op.location = loc
    return op


def _floating(t: Attribute, elem: Attribute) -> bool:
    return isinstance(t, TensorType) and t.element_type == elem


@dataclass(frozen=True)
class Precision(ModulePass):
    name = "precision"

    param: str = "bf16"   # compute dtype of forward and backward
    reduce: str = "fp32"  # dtype of the parameter gradients (reduction, optimizer)
    master: str = "fp32"  # dtype of the parameters and optimizer state

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for what, v, allowed in (("param", self.param, ("bf16", "fp16", "fp32")),
                                 ("reduce", self.reduce, ("fp32", "bf16", "fp16")),
                                 ("master", self.master, ("fp32",))):
            if v not in allowed:
                raise PiperError(f"precision: {what}={v!r} is not supported (supported: "
                                 f"{', '.join(allowed)})")
        if self.reduce not in (self.param, self.master):
            raise PiperError(f"precision: reduce={self.reduce!r} must be the compute dtype "
                             f"({self.param!r}) or the master dtype ({self.master!r})")
        require_stage_functions_level(op, self.name)
        fns = functions(op)
        compute = [n for n in fns if _COMPUTE.fullmatch(n)]
        if not compute:
            raise PiperError("precision: no stage functions (@F0, @B0, ...); run "
                             "pipeline-split first")
        low, master = DTYPES[self.param], DTYPES[self.master]
        self._check_masters(fns, master)
        if low == master:
            return
        if self.reduce != self.master:  # the optimizers cast the gradients back
            compute += [n for n in fns if _OPTIMIZER.fullmatch(n)]
        new: dict[str, func.FuncOp] = {}
        pending = list(compute)
        while pending:  # a function after the ones it reads from
            ready = [n for n in pending if all(src in new or src not in pending
                                               for src in self._sources(fns[n]))]
            if not ready:
                raise PiperError(f"precision: the stage functions {pending} read each "
                                 "other's results in a cycle")
            for n in ready:
                new[n] = self._function(fns[n], new, low, master)
                pending.remove(n)
        block = op.body.block
        for n, fn in new.items():
            block.insert_op_before(fn, fns[n])
            block.erase_op(fns[n])
        for fn in functions(op).values():
            if fn.sym_name.data not in new:
                _retype_calls(fn, new)

    def _check_masters(self, fns: dict[str, func.FuncOp], master: Attribute) -> None:
        """The parameters are the master copy: in the master dtype."""
        for n in sorted(fns):
            if not (_COMPUTE.fullmatch(n) or _OPTIMIZER.fullmatch(n)):
                continue
            fn = fns[n]
            for i, a in enumerate(fn.body.block.args):
                attrs = graph_attrs(fn, i)
                t = a.type
                if (attrs.get("kind") == "param" and isinstance(t, TensorType)
                        and t.element_type in _NAMES and t.element_type != master):
                    raise PiperError(
                        f"precision: parameter '{attrs.get('name', '?')}' is "
                        f"{_NAMES[t.element_type]}, but master={self.master!r} keeps the "
                        f"parameters in {self.master}; give precision the model in "
                        f"{self.master} (it casts to {self.param} itself)")

    @staticmethod
    def _sources(fn: func.FuncOp) -> set[str]:
        out = set()
        for i in range(len(fn.body.block.args)):
            ref = parse_from(graph_attrs(fn, i).get("from", ""))
            if ref:
                out.add(ref[0])
        return out

    def _function(self, fn: func.FuncOp, done: dict[str, func.FuncOp], low: Attribute,
                  master: Attribute) -> func.FuncOp:
        old = fn.body.block
        optimizer = _OPTIMIZER.fullmatch(fn.sym_name.data) is not None
        # what is cast where the function starts: (kinds, from, to)
        cast_in = (frozenset({"grad"}), low, master) if optimizer else (_CAST_IN, master, low)
        types = []
        for i, a in enumerate(old.args):
            ref = parse_from(graph_attrs(fn, i).get("from", ""))
            if ref and ref[0] in done:
                types.append(done[ref[0]].function_type.outputs.data[ref[1]])
            else:
                types.append(a.type)
        block = Block(arg_types=types)
        env: dict[SSAValue, SSAValue] = {}
        first_user: dict[SSAValue, Operation] = {}
        for o in old.ops:
            for v in o.operands:
                first_user.setdefault(v, o)
        for i, (a, b) in enumerate(zip(old.args, block.args, strict=True)):
            b.name_hint = a.name_hint
            env[a] = b
            kinds, src, dst = cast_in
            if (graph_attrs(fn, i).get("kind") in kinds and _floating(b.type, src)
                    and a in first_user and not _cast_already(a, dst)):
                user = first_user[a]
                tags = user.tag_dict() if isinstance(user, AtenOp) else None
                c = cast(b, dst, tags, user.location)
                c.outputs[0].name_hint = (f"{a.name_hint or 'arg'}_"
                                          f"{self.master if optimizer else self.param}")
                block.add_op(c)
                env[a] = c.outputs[0]
        results: list[SSAValue] = []
        for o in old.ops:
            if isinstance(o, func.ReturnOp):
                results = [env[v] for v in o.arguments]
                break
            if isinstance(o, ConstantOp):
                block.add_op(o.clone())
                env[o.output[0]] = block.last_op.output[0]
                continue
            if not isinstance(o, AtenOp):
                raise PiperError(f"precision: cannot re-type '{o.name}' in "
                                 f"@{fn.sym_name.data}", op_location(o))
            operands = [env[v] for v in o.inputs]
            args, kwargs = o.args.data, o.kwargs.data
            # the schema (torch) is read only for ops with a dtype argument
            names = frozenset() if optimizer or not (
                master in args or master in kwargs.values()) else _input_dtype_args(o.target.data)
            if names:
                args = [low if a == master and i in names else a for i, a in enumerate(args)]
                kwargs = {k: low if v == master and k in names else v
                          for k, v in kwargs.items()}
            try:
                rtypes = infer_types(_probe(o, args, kwargs), [v.type for v in operands])
            except PiperError as e:
                e.message = f"precision: {e.message}"
                raise
            n = AtenOp(o.target.data, operands, args, kwargs, rtypes, o.tag_dict())
            n.location = o.location
            block.add_op(n)
            for r, s in zip(o.outputs, n.outputs, strict=True):
                env[r] = s
                s.name_hint = r.name_hint
        out_types = fn.function_type.outputs.data
        final = []
        for k, v in enumerate(results):
            kind = graph_attrs(fn, k, True).get("kind")
            want = out_types[k].element_type
            if kind == "grad" and not optimizer and want == master:
                want = DTYPES[self.reduce]  # what the gradient is reduced in
            if kind not in _FLOWING and v.type.element_type != want:
                owner = v.owner
                tags = owner.tag_dict() if isinstance(owner, AtenOp) else None
                c = cast(v, want, tags, getattr(owner, "location", None))
                c.outputs[0].name_hint = f"{v.name_hint or 'v'}_{_NAMES[want]}"
                block.add_op(c)
                v = c.outputs[0]
            final.append(v)
        block.add_op(func.ReturnOp(*final))
        return func.FuncOp(fn.sym_name.data, (types, [v.type for v in final]), Region(block),
                           arg_attrs=fn.arg_attrs, res_attrs=fn.res_attrs)


def _cast_already(v: SSAValue, low: Attribute) -> bool:
    """Every use of `v` is a cast to `low` (the pass ran before)."""
    return all(isinstance(u.operation, AtenOp) and u.operation.target.data == CAST
               and u.operation.outputs[0].type.element_type == low for u in v.uses)


def _input_dtype_args(target: str) -> frozenset:
    """Positions and names of `target`'s arguments that state the dtype of
    its input (`input_dtype` of the softmax backwards): they follow the
    compute dtype. Every other dtype argument is the model's own choice.
    The answer is a pure function of the operator's schema, remembered on
    disk for aten operators (as inferred types are), so the pass imports
    torch only for an operator no earlier process has read."""
    if target not in _INPUT_DTYPE:
        builtin = builtin_operator(target)
        known = remembered("input_dtype", target) if builtin else None
        if known is None:
            schema = getattr(resolve_target(target), "_schema", None)
            found = set()
            for i, a in enumerate(schema.arguments if schema is not None else ()):
                if a.name == "input_dtype":
                    found |= {i, a.name}
            if builtin:
                remember("input_dtype", target,
                         ",".join(str(x) for x in sorted(found, key=str)) or "-")
        else:
            found = {int(x) if x.isdigit() else x for x in known.split(",") if x != "-"}
        _INPUT_DTYPE[target] = frozenset(found)
    return _INPUT_DTYPE[target]


_INPUT_DTYPE: dict[str, frozenset] = {}


def _probe(op: AtenOp, args, kwargs) -> AtenOp:
    """`op` with other constant arguments, detached: what infer_types reads."""
    if args is op.args.data and kwargs is op.kwargs.data:
        return op
    return AtenOp(op.target.data, [], args, kwargs, [])


def _retype_calls(fn: func.FuncOp, new: dict[str, func.FuncOp]) -> None:
    """Calls of re-typed functions in `fn` (@train_step) get their new result
    types; aten ops reading a re-typed value are re-inferred."""
    block = fn.body.block
    for o in list(block.ops):
        if isinstance(o, func.CallOp) and callee(o) in new:
            outs = new[callee(o)].function_type.outputs.data
            if [r.type for r in o.res] == list(outs):
                continue
            c = func.CallOp(callee(o), list(o.arguments), outs)
            block.insert_op_before(c, o)
            for r, s in zip(o.res, c.res, strict=True):
                s.name_hint = r.name_hint
                r.replace_all_uses_with(s)
            block.erase_op(o)
        elif isinstance(o, AtenOp):
            types = infer_types(o, [v.type for v in o.inputs])
            if types != [r.type for r in o.outputs]:
                n = AtenOp(o.target.data, list(o.inputs), o.args.data, o.kwargs.data, types,
                           o.tag_dict())
                n.location = o.location
                block.insert_op_before(n, o)
                for r, s in zip(o.outputs, n.outputs, strict=True):
                    s.name_hint = r.name_hint
                    r.replace_all_uses_with(s)
                block.erase_op(o)
        elif (isinstance(o, func.ReturnOp)
              and [v.type for v in o.arguments] != list(fn.function_type.outputs.data)):
            raise PiperError(f"precision: @{fn.sym_name.data} returns a value whose "
                             "dtype the rewrite changed", op_location(o))
