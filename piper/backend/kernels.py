"""The kernel backend: graph functions with fused groups run as Triton kernels.

`compile_function` builds the aten executor's `CompiledFunction` for a
function and hands it every `kernel.fused` op: with Triton on, the group
runs as its generated kernel (piper/backend/triton_codegen.py); with Triton
off, or for a group the generator cannot emit, its body runs op by op with
aten, so fused IR is always executable.

Switching Triton off: `compile_function(..., use_triton=False)`, or set
`PIPER_TRITON=0` in the environment (it overrides `use_triton=True`).
On a machine without a GPU, Triton runs in its interpreter when
`TRITON_INTERPRET=1` is set before triton is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from piper.backend.aten import CompiledFunction, find_function
from piper.diagnostics import PiperError, op_location
from piper.dialects.kernel import FusedOp

PIPELINE: tuple[str, ...] = ("fuse-matmul-epilogue", "fuse-reductions", "fuse-elementwise")


def triton_enabled(use_triton: bool = True) -> bool:
    """Whether fused groups run as Triton kernels (PIPER_TRITON=0 turns it off)."""
    return use_triton and os.environ.get("PIPER_TRITON", "1").strip() not in ("0", "off", "")


def fuse(module: ModuleOp, passes: Sequence[str] = PIPELINE) -> ModuleOp:
    """Run the fusion passes on every function of `module` (in place)."""
    from piper.ir import context
    from piper.passes import all_passes

    ctx = context()
    table = all_passes()
    for name in passes:
        if name not in table:
            raise PiperError(f"unknown pass '{name}'")
        table[name]()().apply(ctx, module)
    return module


@dataclass
class KernelReport:
    """Which fused groups run as Triton kernels and which fell back to aten."""

    triton: list[str] = field(default_factory=list)
    aten: list[tuple[str, str]] = field(default_factory=list)  # (group, reason)


def compile_function(module: ModuleOp, fn_name: str, device: Any = "cpu",
                     use_triton: bool = True) -> CompiledFunction:
    """A callable running @fn_name; fused groups run as Triton kernels.

    Everything that is not a fused group runs through the aten executor.
    The result's `kernel_report` lists the groups by backend.
    """
    enabled = triton_enabled(use_triton)
    if enabled:
        from piper.backend.triton_codegen import interpreting

        if torch.device(device).type == "cpu" and not interpreting():
            raise PiperError(
                "Triton kernels need a GPU device; on CPU set TRITON_INTERPRET=1 "
                "before importing triton, or pass use_triton=False (PIPER_TRITON=0)"
            )
    report = KernelReport()

    def hook(op: Operation) -> Callable | None:
        if not isinstance(op, FusedOp):
            return None
        where = op_location(op)
        fallback = CompiledFunction(module, op.body.block, device, op_hook=None)
        if not enabled:
            report.aten.append((where, "triton is switched off"))
            return fallback
        from piper.backend.triton_codegen import TritonGroup, Unsupported

        try:
            group = TritonGroup(op)
        except Unsupported as e:
            report.aten.append((where, str(e)))
            return fallback
        report.triton.append(where)

        def run(*vals, _g=group):
            try:
                return _g(*vals)
            except Exception as e:
                raise PiperError(f"fused {op.kind_name} kernel failed: {e}", where) from e

        return run

    fn = CompiledFunction(module, find_function(module, fn_name), device, op_hook=hook)
    fn.kernel_report = report
    return fn


class KernelStep:
    """A captured training step (piper.capture) run with fused kernels.

    Holds its own fused copy of the step's IR and of its training state, so
    the captured step itself stays the unfused reference.
    """

    def __init__(self, step, device: Any = "cpu", use_triton: bool = True,
                 passes: Sequence[str] = PIPELINE):
        self.signature = step.signature
        self.module = fuse(step.module.clone(), passes)
        self.values = {k: v.clone() for k, v in step.values.items()}
        self.device = device
        self.fn = compile_function(self.module, "train_step", device, use_triton)

    @property
    def kernel_report(self) -> KernelReport:
        return self.fn.kernel_report

    def run(self, *inputs: torch.Tensor) -> torch.Tensor:
        sig = self.signature
        if len(inputs) != len(sig.inputs):
            raise PiperError(f"train_step takes {len(sig.inputs)} inputs, got {len(inputs)}")
        args = [self.values[n] for n in sig.params + sig.buffers + sig.states]
        outs = self.fn(*args, *inputs)
        loss, rest = outs[0], outs[1:]
        for name, value in zip(sig.params + sig.states, rest, strict=True):
            self.values[name] = value
        return loss
