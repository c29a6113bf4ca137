"""The kernel backend: graph functions with fused groups run as Triton kernels.

`kernel_hook` is the aten executor's hook for `kernel.fused` ops: with
Triton on, a group runs as its generated kernel
(piper/backend/triton_codegen.py); a group the plan marks `backend aten`,
every group when Triton is off, and a group the generator cannot emit run
their body op by op with aten, so fused IR is always executable. The
runtime builds its stage functions with this hook; `compile_function` does
the same for one function of a module.

Choosing per group is the plan's business (the `piper.fuse` directive and
the `kernel-backend` pass); switching Triton off everywhere, for one
process: `compile_function(..., use_triton=False)`, or set `PIPER_TRITON=0`
in the environment (it overrides everything else).
On a machine without a GPU, Triton runs in its interpreter when
`TRITON_INTERPRET=1` is set before triton is imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from piper.backend.aten import CompiledFunction, find_function
from piper.diagnostics import PiperError, op_location
from piper.dialects.kernel import FusedOp


def triton_enabled(use_triton: bool = True) -> bool:
    """Whether fused groups run as Triton kernels (PIPER_TRITON=0 turns it off)."""
    return use_triton and os.environ.get("PIPER_TRITON", "1").strip() not in ("0", "off", "")


@dataclass
class KernelReport:
    """Which fused groups run as Triton kernels and which fell back to aten."""

    triton: list[str] = field(default_factory=list)
    aten: list[tuple[str, str]] = field(default_factory=list)  # (group, reason)


def kernel_hook(module: ModuleOp, device: Any = "cpu", use_triton: bool = True,
                report: KernelReport | None = None) -> Callable[[Operation], Callable | None]:
    """The aten executor's `op_hook` that runs `kernel.fused` ops.

    A group runs as its Triton kernel unless the plan says `backend aten`,
    Triton is switched off (`use_triton=False`, PIPER_TRITON=0), or the
    generator cannot emit it; then its body runs op by op with aten. Each
    group is recorded in `report` with the backend it got.
    """
    enabled = triton_enabled(use_triton)
    report = KernelReport() if report is None else report

    def hook(op: Operation) -> Callable | None:
        if not isinstance(op, FusedOp):
            return None
        where = op_location(op)
        fallback = CompiledFunction(module, op.body.block, device, op_hook=None)
        if op.backend_name == "aten":
            report.aten.append((where, "the plan runs this group with aten"))
            return fallback
        if not enabled:
            report.aten.append((where, "triton is switched off"))
            return fallback
        from piper.backend.triton_codegen import TritonGroup, Unsupported, interpreting

        if torch.device(device).type == "cpu" and not interpreting():
            raise PiperError(
                "Triton kernels need a GPU device; on CPU set TRITON_INTERPRET=1 "
                "before importing triton, or run the groups with aten "
                "(piper.fuse(kernels=\"aten\"), use_triton=False or PIPER_TRITON=0)",
                where,
            )
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

    return hook


def compile_function(module: ModuleOp, fn_name: str, device: Any = "cpu",
                     use_triton: bool = True) -> CompiledFunction:
    """A callable running @fn_name; fused groups run as `kernel_hook` decides.

    Everything that is not a fused group runs through the aten executor.
    The result's `kernel_report` lists the groups by backend.
    """
    report = KernelReport()
    hook = kernel_hook(module, device, use_triton, report)
    fn = CompiledFunction(module, find_function(module, fn_name), device, op_hook=hook)
    fn.kernel_report = report
    return fn
