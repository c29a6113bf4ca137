"""Re-typing a graph function for new argument shapes.

Used where a directive changes the shapes a stage function works on (ZeRO
runs the optimizer on flat shards). Every op's result types are inferred by
running it on meta tensors, so any aten op keeps its exact semantics; an op
that rejects the new shapes is reported with its name and location.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import func
from xdsl.dialects.builtin import TensorType
from xdsl.ir import Attribute, Block, Region, SSAValue

from piper.diagnostics import PiperError, op_location
from piper.dialects.graph import (
    ELEMENT_TYPES,
    AtenOp,
    builtin_operator,
    element_type,
    torch_dtype,
)
from piper.dialects.graph_values import call_args, remember, remembered, resolve_target

# Result types found in this process, by signature: an optimizer function
# repeats a few signatures thousands of times (one AdamW update a parameter),
# and the disk cache's key is a digest of the signature's text.
_INFERRED: dict[tuple, list[TensorType]] = {}


def infer_types(op: AtenOp, operand_types: Sequence[TensorType]) -> list[TensorType]:
    """The result types of `op` on operands of `operand_types` (remembered
    in this process, and across processes for aten operators: see
    graph_values.remember)."""
    key = (op.target, op.args, op.kwargs, tuple(operand_types))
    if key in _INFERRED:
        return _INFERRED[key]
    builtin = builtin_operator(op.target.data)
    text = remembered("result-types", key) if builtin else None
    if text is not None:
        types = _decode(text)
    else:
        types = _infer_types(op, operand_types)
        if builtin:
            remember("result-types", key, _encode(types))
    if len(_INFERRED) >= 1 << 16:  # a long-lived process: stay bounded
        _INFERRED.clear()
    _INFERRED[key] = types
    return types


def _encode(types: Sequence[TensorType]) -> str:
    names = {v: k for k, v in ELEMENT_TYPES.items()}
    return ";".join(f"{names[t.element_type]}:{','.join(map(str, t.get_shape()))}"
                    for t in types) or "-"


def _decode(text: str) -> list[TensorType]:
    if text == "-":
        return []
    out = []
    for part in text.split(";"):
        name, _, dims = part.partition(":")
        out.append(TensorType(ELEMENT_TYPES[name], [int(d) for d in dims.split(",") if d]))
    return out


def _infer_types(op: AtenOp, operand_types: Sequence[TensorType]) -> list[TensorType]:
    import torch

    metas = [torch.empty(t.get_shape(), dtype=torch_dtype(t.element_type), device="meta")
             for t in operand_types]
    try:
        args, kwargs = call_args(op, metas, "meta")
        out = resolve_target(op.target.data)(*args, **kwargs)
    except Exception as e:
        raise PiperError(f"'{op.target.data}' does not accept the new shapes: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
                         op_location(op)) from None
    outs = list(out) if isinstance(out, tuple | list) else [out]
    return [TensorType(element_type(o.dtype), list(o.shape)) for o in outs
            if isinstance(o, torch.Tensor)]


def retype_function(fn: func.FuncOp, name: str, arg_types: Sequence[Attribute]) -> func.FuncOp:
    """A copy of `fn` named `name` whose arguments have `arg_types`."""
    block = Block(arg_types=list(arg_types))
    env: dict[SSAValue, SSAValue] = {}
    for old, new in zip(fn.body.block.args, block.args, strict=True):
        env[old] = new
        new.name_hint = old.name_hint
    results: list[SSAValue] = []
    for op in fn.body.block.ops:
        if isinstance(op, func.ReturnOp):
            results = [env[v] for v in op.arguments]
            block.add_op(func.ReturnOp(*results))
            continue
        if not isinstance(op, AtenOp):
            raise PiperError(f"cannot re-type '{op.name}' in @{fn.sym_name.data}", op_location(op))
        operands = [env[v] for v in op.inputs]
        types = infer_types(op, [v.type for v in operands])
        # the same properties (attributes are immutable), new operand types
        new = AtenOp.create(operands=operands, result_types=types,
                            properties=dict(op.properties))
        new.location = op.location
        block.add_op(new)
        for o, n in zip(op.outputs, new.outputs, strict=True):
            env[o] = n
            n.name_hint = o.name_hint
    return func.FuncOp(name, (list(arg_types), [r.type for r in results]), Region(block),
                       arg_attrs=fn.arg_attrs, res_attrs=fn.res_attrs)
