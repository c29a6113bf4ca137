"""Graph functions that pack tensors into one flat buffer and back.

`dist.pack` / `dist.unpack` (gradient buckets, see `replicate{bucket_bytes}`)
are local copies. Rather than teach the runtime two more instructions,
lowering turns each into a `sched.call` of a small graph function built
here from aten ops the runtime already runs:

    pack:   aten.view (flatten) of each tensor, then aten.cat along dim 0
    unpack: aten.slice of each piece, then aten.view to its shape

With `shards` n (ZeRO buckets) the packed layout is shard-major: chunk c
of every tensor for c = 0..n-1, so a reduce_scatter of the pack leaves
member c with its chunk of each tensor, and an all_gather of packed
shards is such a layout, which the shard-major unpack (a slice per chunk,
aten.cat, aten.view) turns back into full tensors.

One function per distinct signature, shared by every bucket that has it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, ModuleOp, TensorType, i64
from xdsl.ir import Attribute, Block, Region, SSAValue
from xdsl.traits import SymbolTable

from piper.dialects.graph import AtenOp, ArgRefAttr


@functools.lru_cache(maxsize=1 << 14)
def _int(v: int) -> IntegerAttr:
    """Immutable, and verified when built: an unpack of a bucket slices at
    thousands of offsets, the same in every bucket of its signature."""
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

    def pack(self, types: Sequence[Attribute], flat: Attribute, shards: int = 1) -> str:
        key = ("pack", tuple(types), shards)
        if key not in self.names:
            name = self._fresh("pack")

            def body(block: Block) -> list[SSAValue]:
                flats = []
                for a in block.args:
                    if len(a.type.get_shape()) == 1:
                        flats.append(a)
                        continue
                    v = _view(a, [math.prod(a.type.get_shape())])
                    block.add_op(v)
                    flats.append(v.outputs[0])
                pieces = flats
                if shards > 1:  # chunk c of every tensor, c = 0..shards-1
                    pieces = [_slice(block, f, c * (_n(f) // shards), (c + 1) * (_n(f) // shards))
                              for c in range(shards) for f in flats]
                return [_cat(block, pieces, flat)]

            self._add(name, types, body)
            self.names[key] = name
        return self.names[key]

    def unpack(self, flat: Attribute, types: Sequence[Attribute], shards: int = 1) -> str:
        key = ("unpack", flat, tuple(types), shards)
        if key not in self.names:
            name = self._fresh("unpack")

            def body(block: Block) -> list[SSAValue]:
                (x,) = block.args
                outs, start = [], 0
                per_chunk = _n(x) // shards  # elements of one chunk of every tensor
                for t in types:
                    n = math.prod(t.get_shape())
                    k = n // shards
                    out = _cat(block, [_slice(block, x, c * per_chunk + start,
                                              c * per_chunk + start + k)
                                       for c in range(shards)],
                               TensorType(t.element_type, [n]))
                    start += k
                    if list(t.get_shape()) != [n]:
                        v = _view(out, t.get_shape())
                        block.add_op(v)
                        out = v.outputs[0]
                    outs.append(out)
                return outs

            self._add(name, [flat], body)
            self.names[key] = name
        return self.names[key]


def _n(v: SSAValue) -> int:
    return math.prod(v.type.get_shape())


def _slice(block: Block, x: SSAValue, start: int, stop: int) -> SSAValue:
    """x[start:stop] of a rank-1 tensor (x itself when that is all of it)."""
    if start == 0 and stop == _n(x):
        return x
    op = AtenOp("aten.slice.Tensor", [x], [ArgRefAttr(0), _int(0), _int(start), _int(stop)], {},
                [TensorType(x.type.element_type, [stop - start])])
    block.add_op(op)
    return op.outputs[0]


def _cat(block: Block, pieces: Sequence[SSAValue], t: Attribute) -> SSAValue:
    if len(pieces) == 1:
        return pieces[0]
    cat = AtenOp("aten.cat.default", list(pieces),
                 [ArrayAttr([ArgRefAttr(i) for i in range(len(pieces))]), _int(0)], {}, [t])
    block.add_op(cat)
    return cat.outputs[0]
