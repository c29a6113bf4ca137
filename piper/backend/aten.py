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


def _schema_of(op: Operation):
    if not isinstance(op, AtenOp):
        return None
    target = resolve_target(op.target.data)
    return getattr(target, "_schema", None), target


_CSE_MAX_ELEMENTS = 4096  # larger results are recomputed, not kept alive longer


def _cse_key(op: Operation, ins: list[int]) -> tuple | None:
    """A key under which two ops compute the same values (same operator,
    same attributes, same operand values), or None when the op must run
    each time: not an aten op, one with side effects or randomness, or one
    whose fresh results are large."""
    found = _schema_of(op)
    if found is None or found[0] is None:
        return None
    schema, target = found
    if schema.is_mutable or torch.Tag.nondeterministic_seeded in target.tags:
        return None
    for r, t in zip(schema.returns, op.outputs, strict=False):
        if r.alias_info is None and _numel(t.type) > _CSE_MAX_ELEMENTS:
            return None
    return (op.target.data, op.args, op.kwargs, tuple(ins),
            tuple(r.type for r in op.outputs))


def _numel(t) -> int:
    n = 1
    for d in t.get_shape():
        n *= d
    return n


def _reusable_slots(steps) -> set[int]:
    """Slots whose tensor only this function can see: results of aten ops
    that return fresh memory (no alias in the schema), never passed to an
    op that may return a view of them or to a step of another kind."""
    fresh: set[int] = set()
    viewed: set[int] = set()
    for op, ins, outs in steps:
        found = _schema_of(op)
        if found is None or found[0] is None:
            viewed.update(ins)
            continue
        schema = found[0]
        if any(r.alias_info is not None for r in schema.returns) or schema.is_mutable:
            viewed.update(ins)
        elif len(schema.returns) == len(outs):
            fresh.update(outs)
    return fresh - viewed


_IN_PLACE: dict = {}
# operators whose two tensor operands commute exactly (IEEE + and *)
_COMMUTATIVE = {"aten.add.Tensor", "aten.mul.Tensor"}


def _in_place(target):
    """The in-place overload of a pointwise operator with the same
    arguments (`aten.mul.Tensor` -> `aten.mul_.Tensor`), or None."""
    if target in _IN_PLACE:
        return _IN_PLACE[target]
    found = None
    schema = getattr(target, "_schema", None)
    if (schema is not None and torch.Tag.pointwise in target.tags
            and torch.Tag.nondeterministic_seeded not in target.tags
            and schema.arguments and schema.arguments[0].name == "self"
            and str(schema.arguments[0].type) == "Tensor"):
        packet = getattr(torch.ops.aten, schema.name.split("::")[-1] + "_", None)
        overload = schema.overload_name or "default"
        if packet is not None and overload in packet.overloads():
            cand = getattr(packet, overload)
            cs = cand._schema

            def sig(s):
                return [(a.name, str(a.type), a.kwarg_only) for a in s.arguments]

            if sig(cs) == sig(schema) and len(cs.returns) == 1:
                found = cand
    _IN_PLACE[target] = found
    return found


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
        returned = set()
        if block.last_op is not None and block.last_op.has_trait(IsTerminator):
            returned = set(block.last_op.operands)
        steps: list[tuple[Operation, list[int], list[int]]] = []
        seen: dict[tuple, list[int]] = {}  # pure op with these operands -> its result slots
        for op in block.ops:
            if op is block.last_op and op.has_trait(IsTerminator):
                self.returns = [index[v] for v in op.operands]
                continue
            ins = [index[v] for v in op.operands]
            key = _cse_key(op, ins) if not returned.intersection(op.results) else None
            if key is not None and key in seen:
                for r, slot in zip(op.results, seen[key], strict=True):
                    index[r] = slot  # the same operator on the same values: reuse
                continue
            for r in op.results:
                index[r] = len(index)
            outs = [index[r] for r in op.results]
            if key is not None:
                seen[key] = outs
            steps.append((op, ins, outs))
        self.n_slots = len(index)
        # last use of every slot, to free values early
        last: dict[int, int] = {}
        for i, (_, ins, _) in enumerate(steps):
            for v in ins:
                last[v] = i
        keep = set(self.returns)
        self._reusable = _reusable_slots(steps)
        self._generate(module, cache, [
            (op, ins, outs, sorted(v for v in set(ins) if last[v] == i and v not in keep))
            for i, (op, ins, outs) in enumerate(steps)
        ])

    def _generate(self, module, cache, steps) -> None:
        glob: dict[str, Any] = {"_tensors": _tensors}
        lines = ["def _run(_args):"]
        if self.n_args:
            lines.append("    " + "".join(f"v{i}, " for i in range(self.n_args)) + "= _args")
            # the list is the caller's hand-over (call_owned): from here on
            # each argument lives only as long as this function needs it
            lines.append("    _args.clear()")
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
                args, kwargs = call_args(op, [_Slot(i) for i in range(len(op.inputs))],
                                         self.device)
                if self._writable(op, ins, dead, args, 0):
                    # the first operand dies here and nothing else can see it:
                    # the in-place form writes the result into its memory
                    target = _in_place(target) or target
                elif (op.target.data in _COMMUTATIVE and not kwargs and len(args) == 2
                        and self._writable(op, ins, dead, args, 1) and _in_place(target)):
                    # a + b == b + a and a * b == b * a exactly: write into b
                    args = [args[1], args[0]]
                    target = _in_place(target)
                glob[f"f{k}"] = getattr(target, "_op", target)  # the C++ entry, no wrapper frame

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

    def _writable(self, op, ins, dead, args, i) -> bool:
        """Whether argument i is operand slot that dies at `op`, that only
        this function can see, and whose type is the op's result type: an
        in-place form may then write the result into it (other operands
        that are the very same tensor overlap it exactly, which pointwise
        operators allow)."""
        if len(args) <= i or not isinstance(args[i], _Slot) or len(op.outputs) != 1:
            return False
        slot = ins[args[i].i]
        return (slot in dead and slot in self._reusable
                and op.outputs[0].type == op.inputs[args[i].i].type)

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
        return self.call_owned(list(args))

    def call_owned(self, args: list[torch.Tensor]) -> list[torch.Tensor]:
        """Call with the arguments in a list the function takes over: it
        empties the list and drops each argument after its last use, so an
        argument the caller keeps no other reference to (a saved activation
        at its backward) is freed inside the call, not after it."""
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
