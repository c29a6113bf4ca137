"""The aten executor: runs graph IR functions with eager torch operators.

This is the reference semantics of the graph dialect (tests compare every
lowering against it) and the fallback backend for ops no kernel covers.
A function is compiled once into straight-line Python (one call of a
resolved operator per op); values are dropped after their last use so peak
memory follows the program, not the whole trace.
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


def _tensors(out) -> list:
    """The tensor results of an operator call, in order."""
    if isinstance(out, (tuple, list)):
        return [o for o in out if isinstance(o, torch.Tensor)]
    return [out]


def _returns_one_tensor(target) -> bool:
    schema = getattr(target, "_schema", None)
    return schema is not None and len(schema.returns) == 1 and str(schema.returns[0].type) == "Tensor"


def find_function(module: ModuleOp, name: str) -> func.FuncOp:
    for op in module.body.block.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == name:
            return op
    raise PiperError(f"no function @{name} in the module")


class CompiledFunction:
    """A graph function as a Python callable over tensors.

    The function is translated once into straight-line Python source, one
    line per op (`v7 = mm(v3, v5)`, then `del v3` after its last use), with
    the resolved operators and decoded constant arguments bound as globals,
    and compiled with `compile()`. A call then costs one Python call per op
    and nothing else: no argument templates to fill, no slot lists, no
    per-op wrapper frames. A failing op is found again from the traceback's
    line number, so its error still names the op and its location.
    """

    def __init__(self, module: ModuleOp, fn: func.FuncOp | Block, device: Any = "cpu",
                 cache: dict | None = None,
                 op_hook: Callable[[Operation], Callable | None] | None = None):
        """`fn` is a func.func, or a block ending in a terminator (a region
        body such as a fused group's). `op_hook(op)` may return the step for
        an op this executor does not run itself (None: not handled); a step
        takes the op's operands and returns the list of its results."""
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
        self.returns: list[int] = []
        steps: list[tuple[Operation, list[int], list[int]]] = []
        for op in block.ops:
            if op is block.last_op and op.has_trait(IsTerminator):
                self.returns = [index[v] for v in op.operands]
                continue
            ins = [index[v] for v in op.operands]
            for r in op.results:
                index[r] = len(index)
            steps.append((op, ins, [index[r] for r in op.results]))
        self.n_slots = len(index)
        # last use of every slot, to free values early
        last: dict[int, int] = {}
        for i, (_, ins, _) in enumerate(steps):
            for v in ins:
                last[v] = i
        keep = set(self.returns)
        self._generate(module, cache, [
            (op, ins, outs, sorted(v for v in set(ins) if last[v] == i and v not in keep))
            for i, (op, ins, outs) in enumerate(steps)
        ])

    def _generate(self, module, cache, steps) -> None:
        glob: dict[str, Any] = {"_tensors": _tensors}
        lines = ["def _run(_args):"]
        if self.n_args:
            lines.append("    " + "".join(f"v{i}, " for i in range(self.n_args)) + "= _args")
        self._errors: dict[int, tuple[str, str]] = {}  # source line -> (message head, where)

        def const(value) -> str:
            if value is None or isinstance(value, bool | int | str):
                return repr(value)
            name = f"c{len(glob)}"
            glob[name] = value
            return name

        for k, (op, ins, outs, dead) in enumerate(steps):
            if isinstance(op, AtenOp):
                target = resolve_target(op.target.data)
                if target is None:
                    raise PiperError(f"unknown operator {op.target.data}", op_location(op))
                glob[f"f{k}"] = getattr(target, "_op", target)  # the C++ entry, no wrapper frame
                args, kwargs = call_args(op, [_Slot(i) for i in range(len(op.inputs))],
                                         self.device)

                def expr(a, ins=ins) -> str:
                    if isinstance(a, _Slot):
                        return f"v{ins[a.i]}"
                    if isinstance(a, list) and any(isinstance(x, _Slot) for x in a):
                        return "[" + ", ".join(expr(x) for x in a) + "]"
                    return const(a)

                call = f"f{k}(" + ", ".join(
                    [expr(a) for a in args] + [f"{n}={expr(v)}" for n, v in kwargs.items()]) + ")"
                if len(outs) == 1 and _returns_one_tensor(target):
                    line = f"v{outs[0]} = {call}"
                elif outs:
                    line = "".join(f"v{o}, " for o in outs) + f"= _tensors({call})"
                else:
                    line = call
                self._errors[len(lines) + 1] = (f"{op.target.data} failed", op_location(op))
            else:
                glob[f"s{k}"] = self._make_step(module, op, cache)
                call = f"s{k}(" + ", ".join(f"v{i}" for i in ins) + ")"
                line = ("".join(f"v{o}, " for o in outs) + f"= {call}") if outs else call
            lines.append("    " + line)
            if dead:
                lines.append("    del " + ", ".join(f"v{d}" for d in dead))
        lines.append("    return [" + ", ".join(f"v{r}" for r in self.returns) + "]")
        self.source = "\n".join(lines) + "\n"
        exec(compile(self.source, f"<piper @{self.name}>", "exec"), glob)
        self._run = glob["_run"]

    def _make_step(self, module, op, cache):
        device = self.device
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
        try:
            return self._run(args)
        except PiperError:
            raise
        except Exception as e:
            failed = self._failed_op(e.__traceback__)
            if failed is None:
                raise
            head, where = failed
            raise PiperError(f"{head}: {e}", where) from e

    def _failed_op(self, tb) -> tuple[str, str] | None:
        """The aten op whose line of the generated code raised, if any."""
        code = self._run.__code__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code is code:
                line = tb.tb_lineno
            tb = tb.tb_next
        return self._errors.get(line) if line is not None else None


def run_function(module: ModuleOp, name: str, args: Sequence[torch.Tensor],
                 device: Any = "cpu") -> list[torch.Tensor]:
    return CompiledFunction(module, find_function(module, name), device)(*args)
