"""fuse: lower stage functions to fused kernels (the `fuse` directive).

    fuse{kernels="triton"}                       every function: Triton kernels
    fuse{kernels="aten" filter="[PASS=OPT]"}     the optimizer: aten op by op
    fuse{kernels="off"}                          dissolve earlier groups

The fusion passes (fuse-matmul-epilogue, fuse-reductions, fuse-elementwise,
piper/passes/fusion.py) group the ops of the selected functions, then
kernel-backend marks every group with what runs it; `off` only dissolves.
`filter` selects stage functions as the fusion passes do (a task filter in
text form, piper/tasks/filters.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError
from piper.passes import pass_class
from piper.passes.fusion import FUSION_PIPELINE
from piper.passes.kernel_backend import KernelBackend

KERNELS = ("triton", "aten", "off")


@dataclass(frozen=True)
class Fuse(ModulePass):
    """Fuse the functions `filter` selects into kernels run by `kernels`."""

    name = "fuse"

    kernels: str = "triton"
    filter: str = ""  # stage functions, e.g. "[PP=1 PASS=B]"; "": every function

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.kernels not in KERNELS:
            raise PiperError(f"fuse: kernels must be one of {', '.join(KERNELS)}, "
                             f"got '{self.kernels}'")
        if self.kernels != "off":
            for name in FUSION_PIPELINE:  # the one order the fusion passes run in
                pass_class(name)(filter=self.filter).apply(ctx, op)
        KernelBackend(backend=self.kernels, filter=self.filter).apply(ctx, op)
