"""A captured step run on one device with fused kernels, for tests and benchmarks.

`fuse` runs fusion passes on a module; `KernelStep` holds a fused copy of
a captured step (piper.capture) and runs it through the kernel backend
(piper/backend/kernels.py), so the step itself stays the unfused reference.
It sits above both the passes and the backend, which know nothing of
each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from xdsl.dialects.builtin import ModuleOp

from piper.backend.kernels import KernelReport, compile_function
from piper.diagnostics import PiperError
from piper.ir import context
from piper.passes import PASSES, pass_class
from piper.passes.fusion import FUSION_PIPELINE

PIPELINE: tuple[str, ...] = FUSION_PIPELINE


def fuse(module: ModuleOp, passes: Sequence[str] = PIPELINE) -> ModuleOp:
    """Run the fusion passes on every function of `module` (in place)."""
    ctx = context()
    for name in passes:
        if name not in PASSES:
            raise PiperError(f"unknown pass '{name}'")
        pass_class(name)().apply(ctx, module)
    return module



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
