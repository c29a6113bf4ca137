"""The aten executor: runs graph IR functions with eager torch operators.

This is the reference semantics of the graph dialect (tests compare every
lowering against it) and the fallback backend for ops no kernel covers.
A function is compiled once into a flat list of steps with resolved
operators; values are dropped after their last use so peak memory follows
the program, not the whole trace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue
from xdsl.traits import IsTerminator

from piper.diagnostics import PiperError, op_location
from piper.dialects.graph import AtenOp, ConstantOp, torch_dtype
from piper.dialects.graph_values import call_args, resolve_target


class _Slot:
    """Stands for operand `i` in a pre-decoded argument list."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i


def _call_template(op: AtenOp, device):
    """Decode an op's arguments once; return vals -> (args, kwargs)."""
    args, kwargs = call_args(op, [_Slot(i) for i in range(len(op.inputs))], device)
    flat = [(j, a.i) for j, a in enumerate(args) if isinstance(a, _Slot)]
    nested = [j for j, a in enumerate(args)
              if isinstance(a, list) and any(isinstance(x, _Slot) for x in a)]
    kw = [(k, v.i) for k, v in kwargs.items() if isinstance(v, _Slot)]
    if not nested and not kw:
        def fill(vals):
            a = list(args)
            for j, i in flat:
                a[j] = vals[i]
            return a, kwargs
        return fill

    def fill_all(vals):
        a = list(args)
        for j, i in flat:
            a[j] = vals[i]
        for j in nested:
            a[j] = [vals[x.i] if isinstance(x, _Slot) else x for x in args[j]]
        k = dict(kwargs)
        for name, i in kw:
            k[name] = vals[i]
        return a, k

    return fill_all


def find_function(module: ModuleOp, name: str) -> func.FuncOp:
    for op in module.body.block.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == name:
            return op
    raise PiperError(f"no function @{name} in the module")


class CompiledFunction:
    """A graph function as a Python callable over tensors."""

    def __init__(self, module: ModuleOp, fn: func.FuncOp | Block, device: Any = "cpu",
                 cache: dict | None = None,
                 op_hook: Callable[[Operation], Callable | None] | None = None):
        """`fn` is a func.func, or a block ending in a terminator (a region
        body such as a fused group's). `op_hook(op)` may return the step for
        an op this executor does not run itself (None: not handled)."""
        self.device = device
        self.op_hook = op_hook
        cache = {} if cache is None else cache
        if isinstance(fn, func.FuncOp):
            self.name = fn.sym_name.data
            cache[self.name] = self
            block = fn.body.block
        else:
            parent = fn.parent_op()
            self.name = f"<{parent.name if parent else 'block'} body>"
            block = fn
        index: dict[SSAValue, int] = {}
        for a in block.args:
            index[a] = len(index)
        self.n_args = len(block.args)
        steps: list[tuple[Callable, list[int], list[int]]] = []
        for op in block.ops:
            if op is block.last_op and op.has_trait(IsTerminator):
                self.returns = [index[v] for v in op.operands]
                continue
            ins = [index[v] for v in op.operands]
            for r in op.results:
                index[r] = len(index)
            outs = [index[r] for r in op.results]
            steps.append((self._make_step(module, op, cache), ins, outs))
        self.n_slots = len(index)
        # last use of every slot, to free values early
        last: dict[int, int] = {}
        for i, (_, ins, _) in enumerate(steps):
            for s in ins:
                last[s] = i
        keep = set(self.returns)
        self.steps = [
            (fn_, ins, outs, [s for s in set(ins) if last[s] == i and s not in keep])
            for i, (fn_, ins, outs) in enumerate(steps)
        ]

    def _make_step(self, module, op, cache):
        device = self.device
        if isinstance(op, AtenOp):
            target = resolve_target(op.target.data)
            if target is None:
                raise PiperError(f"unknown operator {op.target.data}", op_location(op))
            where = op_location(op)

            call = _call_template(op, device)
            name = op.target.data

            def run_aten(*vals, _t=target):
                args, kwargs = call(vals)
                try:
                    out = _t(*args, **kwargs)
                except Exception as e:
                    raise PiperError(f"{name} failed: {e}", where) from e
                if isinstance(out, tuple | list):
                    return [o for o in out if isinstance(o, torch.Tensor)]
                return [out]

            return run_aten
        if isinstance(op, func.CallOp):
            callee = op.callee.root_reference.data
            if callee not in cache:
                CompiledFunction(module, find_function(module, callee), device, cache,
                                 self.op_hook)
            sub = cache[callee]
            return lambda *vals: sub(*vals)
        if isinstance(op, ConstantOp):
            t = op.output[0].type
            vals = [a.value.data for a in op.value.data]
            tensor = torch.tensor(vals, dtype=torch_dtype(t.element_type)).reshape(
                t.get_shape()
            )
            return lambda: [tensor.to(device)]
        if self.op_hook is not None and (step := self.op_hook(op)) is not None:
            return step
        raise PiperError(f"the aten executor cannot run '{op.name}'", op_location(op))

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        if len(args) != self.n_args:
            raise PiperError(f"@{self.name} takes {self.n_args} arguments, got {len(args)}")
        slots: list[Any] = [None] * self.n_slots
        slots[: len(args)] = args
        for fn_, ins, outs, dead in self.steps:
            res = fn_(*[slots[i] for i in ins])
            for o, v in zip(outs, res, strict=True):
                slots[o] = v
            for d in dead:
                slots[d] = None
        return [slots[i] for i in self.returns]


def run_function(module: ModuleOp, name: str, args: Sequence[torch.Tensor],
                 device: Any = "cpu") -> list[torch.Tensor]:
    return CompiledFunction(module, find_function(module, name), device)(*args)
