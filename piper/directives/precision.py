"""The `precision` directive: mixed-precision training.

    strategy = [piper.precision(param="bf16", reduce="fp32", master="fp32"),
                piper.replicate(2), piper.shard(1)]

Forward and backward compute in `param` (bf16) from fp32 master weights;
parameter gradients are cast to `reduce` (fp32, or bf16) before they are
summed over microbatches and reduced over replicas, and to fp32 before the
optimizer, which updates the fp32 masters with fp32 state: FSDP2's
`MixedPrecisionPolicy(param_dtype=torch.bfloat16,
reduce_dtype=torch.float32)`. In JSON: `{"directive": "precision",
"param": "bf16"}`.

A graph-level directive, like recompute: its pass rewrites the stage
functions right after pipeline-split (piper/passes/precision.py), so every
other directive (split, replicate, shard, the schedules) plans with bf16
activations and messages. fp16 needs `loss_scale` ("dynamic": GradScaler's
scaling; or a fixed number): its plan pass, loss-scale
(piper/passes/loss_scale.py), runs after every other dist-level pass.
Not supported yet: bf16 master weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from piper.diagnostics import PiperError
from piper.directives.base import Directive
from piper.directives.options import choice, integer
from piper.passes.loss_scale import SCALE, TRACKER, LossScale
from piper.passes.precision import Precision as PrecisionPass

# GradScaler's init_scale: the dynamic scale's start
INIT_SCALE = 65536.0

DTYPES = ("bf16", "fp16", "fp32")


@dataclass(frozen=True, repr=False)
class Precision(Directive):
    """Compute in `param`, reduce gradients in `reduce`, keep `master`
    weights and optimizer state; `loss_scale` is for fp16 only."""

    directive: ClassVar[str] = "precision"

    param: str = "bf16"
    reduce: str = "fp32"
    master: str = "fp32"
    loss_scale: float | str | None = None
    growth_interval: int = 2000

    def __post_init__(self):
        for what in ("param", "reduce", "master"):
            choice(f"precision: {what}", getattr(self, what), DTYPES)
        ls = self.loss_scale
        if ls is not None and (ls != "dynamic" and (isinstance(ls, bool) or not isinstance(
                ls, int | float) or not ls > 0 or ls == float("inf"))):
            raise PiperError(f"precision: loss_scale must be a positive number or \"dynamic\", "
                             f"got {ls!r}")
        if ls is not None and self.param != "fp16":
            raise PiperError(f"precision: loss_scale is for param=\"fp16\"; {self.param} has "
                             f"fp32's exponent range and needs no loss scaling (drop loss_scale)")
        if self.param == "fp16" and ls is None:
            raise PiperError("precision: param=\"fp16\" needs loss_scale (\"dynamic\", as "
                             "torch.amp.GradScaler does, or a fixed number): fp16 gradients "
                             "underflow without it")
        integer("precision: growth_interval", self.growth_interval, 1)
        if self.growth_interval != 2000 and ls != "dynamic":
            raise PiperError("precision: growth_interval is for loss_scale=\"dynamic\"")
        if self.reduce not in ("fp32", self.param):
            raise PiperError(f"precision: reduce={self.reduce!r} must be the compute dtype "
                             f"({self.param!r}) or the master dtype ('fp32')")
        if self.master != "fp32":
            raise PiperError(f"precision: master={self.master!r} is not supported yet; "
                             "master weights and optimizer state are fp32 (master=\"fp32\")")

    def passes(self) -> list[PrecisionPass]:
        return [PrecisionPass(param=self.param, reduce=self.reduce, master=self.master)]

    def plan_passes(self) -> list[LossScale]:
        """What runs on the plan, after every other dist-level pass."""
        if self.loss_scale is None:
            return []
        dynamic = self.loss_scale == "dynamic"
        return [LossScale(scale=INIT_SCALE if dynamic else float(self.loss_scale),
                          dynamic=dynamic, interval=self.growth_interval)]

    def initial_state(self) -> dict:
        """The training state the plan passes add: the scale (and the
        dynamic scale's growth tracker), as GradScaler starts them."""
        import torch  # lazy: directives are built without torch loaded

        out = {}
        for p in self.plan_passes():
            out[SCALE] = torch.tensor(p.scale, dtype=torch.float32)
            if p.dynamic:
                out[TRACKER] = torch.tensor(0, dtype=torch.int32)
        return out


def precision(param: str = "bf16", reduce: str = "fp32", master: str = "fp32",
              loss_scale: float | str | None = None, growth_interval: int = 2000) -> Precision:
    """`precision(param="bf16", reduce="fp32", master="fp32")`: bf16 compute
    from fp32 master weights, gradients reduced in fp32."""
    return Precision(param, reduce, master, loss_scale, growth_interval)
