"""Graph functions that pack tensors into one flat buffer and back.

`dist.pack` / `dist.unpack` (gradient buckets, see `replicate{bucket_bytes}`)
are local copies. Rather than teach the runtime two more instructions,
lowering turns each into a `sched.call` of a small graph function built
here from aten ops the runtime already runs:

    pack:   aten.view (flatten) of each tensor, then aten.cat along dim 0
    unpack: aten.slice of each piece, then aten.view to its shape

One function per distinct signature, shared by every bucket that has it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, ModuleOp, TensorType, i64
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.traits import SymbolTable

from piper.dialects.graph import AtenOp, ArgRefAttr


def _int(v: int) -> IntegerAttr:
    return IntegerAttr(v, i64)


def _view(x: SSAValue, shape: Sequence[int]) -> AtenOp:
    t = TensorType(x.type.element_type, list(shape))
    return AtenOp("aten.view.default", [x], [ArgRefAttr(0), ArrayAttr([_int(d) for d in shape])],
                  {}, [t])


class PackFunctions:
    """Creates (once per signature) and names the pack/unpack functions of a module."""

    def __init__(self, module: ModuleOp):
        self.module = module
        self.names: dict[tuple, str] = {}

    def _fresh(self, base: str) -> str:
        i = sum(1 for k in self.names if k[0] == base)
        while SymbolTable.lookup_symbol(self.module, f"{base}{i}") is not None:
            i += 1
        return f"{base}{i}"

    def _add(self, name: str, ins: Sequence[Attribute], body) -> None:
        block = Block(arg_types=list(ins))
        outs = body(block)
        block.add_op(func.ReturnOp(*outs))
        fn = func.FuncOp(name, (list(ins), [o.type for o in outs]), Region(block))
        self.module.body.block.add_op(fn)

    def pack(self, types: Sequence[Attribute], flat: Attribute) -> str:
        key = ("pack", tuple(types))
        if key not in self.names:
            name = self._fresh("pack")

            def body(block: Block) -> list[SSAValue]:
                pieces = []
                for a in block.args:
                    if len(a.type.get_shape()) == 1:
                        pieces.append(a)
                        continue
                    v = _view(a, [math.prod(a.type.get_shape())])
                    block.add_op(v)
                    pieces.append(v.outputs[0])
                if len(pieces) == 1:
                    return pieces
                cat = AtenOp("aten.cat.default", pieces,
                             [ArrayAttr([ArgRefAttr(i) for i in range(len(pieces))]), _int(0)],
                             {}, [flat])
                block.add_op(cat)
                return [cat.outputs[0]]

            self._add(name, types, body)
            self.names[key] = name
        return self.names[key]

    def unpack(self, flat: Attribute, types: Sequence[Attribute]) -> str:
        key = ("unpack", flat, tuple(types))
        if key not in self.names:
            name = self._fresh("unpack")

            def body(block: Block) -> list[SSAValue]:
                (x,) = block.args
                outs, start = [], 0
                for t in types:
                    n = math.prod(t.get_shape())
                    piece = AtenOp("aten.slice.Tensor", [x],
                                   [ArgRefAttr(0), _int(0), _int(start), _int(start + n)], {},
                                   [TensorType(t.element_type, [n])])
                    block.add_op(piece)
                    start += n
                    out = piece.outputs[0]
                    if list(t.get_shape()) != [n]:
                        v = _view(out, t.get_shape())
                        block.add_op(v)
                        out = v.outputs[0]
                    outs.append(out)
                return outs

            self._add(name, [flat], body)
            self.names[key] = name
        return self.names[key]
