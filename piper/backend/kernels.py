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
On a CPU device Triton kernels run in Triton's interpreter. With
TRITON_INTERPRET unset, Piper picks it by itself (`cpu_kernels`: it sets
TRITON_INTERPRET=1, which triton reads when a kernel is decorated), or
aten when triton cannot be imported, and says which once on stderr;
TRITON_INTERPRET=0 set by the user keeps Triton off the CPU (an error).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from piper.backend.aten import CompiledFunction, find_function
from piper.diagnostics import PiperError, op_location
from piper.dialects.kernel import FusedOp


def triton_enabled(use_triton: bool = True) -> bool:
    """Whether fused groups run as Triton kernels (PIPER_TRITON=0 turns it off)."""
    return use_triton and os.environ.get("PIPER_TRITON", "1").strip() not in ("0", "off", "")


# How to choose instead of letting Piper pick, in every note it prints.
HOW_TO_CHOOSE = ('choose with piper.fuse(kernels="aten"), PIPER_TRITON=0 (aten) or '
                 'TRITON_INTERPRET=1 (the interpreter)')
_CPU_CHOICE: list[str] = []  # the choice cpu_kernels made in this process


def cpu_kernels() -> str:
    """How Triton groups run on a CPU device in this process: "interpreter",
    "aten", or "refused" (the user set TRITON_INTERPRET=0).

    With TRITON_INTERPRET unset, Piper picks: Triton's interpreter (it sets
    TRITON_INTERPRET=1 before importing triton, so the ranks torchrun starts
    inherit the choice), or aten when triton cannot be imported (as each
    rank finds for itself). It says which, once, on stderr.
    """
    if _CPU_CHOICE:
        return _CPU_CHOICE[0]
    v = os.environ.get("TRITON_INTERPRET", "").strip()
    if v:
        return "refused" if v.lower() in ("0", "false", "off", "no") else "interpreter"
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401  (heavy, optional: only when a CPU runs a Triton group)
    except Exception as e:
        del os.environ["TRITON_INTERPRET"]
        _CPU_CHOICE.append("aten")
        print(f"piper: no GPU, and Triton cannot be used ({type(e).__name__}: {e}): fused "
              f"kernels run with aten; {HOW_TO_CHOOSE}", file=sys.stderr, flush=True)
        return "aten"
    _CPU_CHOICE.append("interpreter")
    print(f"piper: no GPU: fused kernels run in Triton's interpreter (slow); {HOW_TO_CHOOSE}",
          file=sys.stderr, flush=True)
    return "interpreter"


def runs_triton_groups(module: ModuleOp) -> bool:
    """Whether some fused group of the plan's functions asks for Triton."""
    return any(isinstance(op, FusedOp) and op.backend_name != "aten"
               for fn in module.body.block.ops if isinstance(fn, func.FuncOp)
               for op in fn.walk())


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
        if torch.device(device).type == "cpu":
            mode = cpu_kernels()
            if mode == "aten":
                report.aten.append((where, "no GPU, and triton cannot be imported"))
                return fallback
            if mode == "refused":
                raise PiperError(
                    "Triton kernels need a GPU device; on CPU unset TRITON_INTERPRET=0 (or set "
                    "TRITON_INTERPRET=1) to run them in Triton's interpreter, or run the groups "
                    "with aten (piper.fuse(kernels=\"aten\"), use_triton=False or "
                    "PIPER_TRITON=0)",
                    where,
                )
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
