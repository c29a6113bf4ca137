"""The `offload` directive: optimizer state in host memory.

    strategy = [piper.place(pp=1), piper.split(2), piper.replicate(2), piper.shard(1),
                piper.offload(optimizer=True)]

The optimizer state (and the step count) is loaded and stored in host
memory, the optimizer call runs on the host, and the rank's gradient and
master-parameter shard cross the host link before it and the updated
parameters after it: ZeRO-Offload's split. With ZeRO the offloaded part is
the rank's shard. In JSON: `{"directive": "offload"}`.

It rewrites the lowered programs (its pass, piper/passes/offload.py, runs
after lower-dist-to-sched), so it composes with every layout the
dist-level directives build. Not supported yet: `params=True` (the fp32
master copy in host memory) and `activations=True`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from piper.diagnostics import PiperError
from piper.directives.base import Directive
from piper.directives.options import flag
from piper.passes.offload import Offload as OffloadPass


@dataclass(frozen=True, repr=False)
class Offload(Directive):
    """Optimizer state (`optimizer`) in host memory, its update on the host."""

    directive: ClassVar[str] = "offload"

    optimizer: bool = True
    params: bool = False
    activations: bool = False

    def __post_init__(self):
        for what in ("optimizer", "params", "activations"):
            flag(f"offload: {what}", getattr(self, what))
        for what in ("params", "activations"):
            if getattr(self, what):
                raise PiperError(f"offload: {what}=True is not supported yet; "
                                 "optimizer=True offloads the optimizer state")
        if not self.optimizer:
            raise PiperError("offload: nothing to offload (optimizer=False)")

    def passes(self) -> list:
        return []  # nothing at the graph or dist level

    def sched_passes(self) -> list[OffloadPass]:
        """What runs on the programs, after lower-dist-to-sched."""
        return [OffloadPass(optimizer=self.optimizer)]


def offload(optimizer: bool = True, params: bool = False, activations: bool = False) -> Offload:
    """`offload(optimizer=True)`: optimizer state in host memory."""
    return Offload(optimizer, params, activations)
