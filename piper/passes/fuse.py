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
from piper.passes.fuse_elementwise import FuseElementwise
from piper.passes.fuse_matmul_epilogue import FuseMatmulEpilogue
from piper.passes.fuse_reductions import FuseReductions
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
            for p in (FuseMatmulEpilogue(filter=self.filter), FuseReductions(filter=self.filter),
                      FuseElementwise(filter=self.filter)):
                p.apply(ctx, op)
        KernelBackend(backend=self.kernels, filter=self.filter).apply(ctx, op)
