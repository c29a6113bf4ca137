"""The `offload` directive: training state and activations in host memory.

    strategy = [piper.place(pp=2), piper.split(4), piper.order("1f1b"),
                piper.offload(optimizer=True, params=True, activations=[0])]

`optimizer`: the optimizer state (and the step count) is loaded and stored
in host memory and the optimizer call runs on the host, the rank's
gradient and master-parameter shard crossing the host link before it and
the updated parameters after it: ZeRO-Offload's split. `params`: the
parameters (the fp32 masters under `precision`) live in host memory too,
copied to the device for the tasks that read them and freed after.
`activations` (true, or a list of stages): the results a forward task
saves for its backward wait in host memory in between. With ZeRO the
offloaded part is the rank's shard. In JSON: `{"directive": "offload",
"params": true, "activations": [0]}`.

It rewrites the lowered programs (its pass, piper/passes/offload.py, runs
after lower-dist-to-sched), so it composes with every layout the
dist-level directives build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from piper.diagnostics import PiperError
from piper.directives.base import Directive
from piper.directives.options import MAX_COUNT, flag, integer

MAX_BYTES = 1 << 60  # an exbibyte: larger is a typo
from piper.passes.offload import Offload as OffloadPass


@dataclass(frozen=True, repr=False)
class Offload(Directive):
    """Optimizer state, parameters and saved activations in host memory."""

    directive: ClassVar[str] = "offload"

    optimizer: bool = True
    params: bool = False
    activations: bool | tuple[int, ...] = False
    host_memory: int | None = None  # bytes of host memory a rank may use

    def __post_init__(self):
        for what in ("optimizer", "params"):
            flag(f"offload: {what}", getattr(self, what))
        acts = self.activations
        if isinstance(acts, list | tuple):
            if not acts:
                raise PiperError("offload: activations is an empty list of stages; give "
                                 "the stages whose activations move, or true for every stage")
            acts = tuple(integer(f"offload: activations[{i}]", s, 0, MAX_COUNT - 1)
                         for i, s in enumerate(acts))
            object.__setattr__(self, "activations", acts)
        elif not isinstance(acts, bool):
            raise PiperError("offload: activations must be true, false or a list of "
                             f"stages, got {acts!r}")
        if not (self.optimizer or self.params or self.activations):
            raise PiperError("offload: nothing to offload (optimizer, params and "
                             "activations are all false)")
        if self.host_memory is not None:
            integer("offload: host_memory", self.host_memory, 1, MAX_BYTES)

    def passes(self) -> list:
        return []  # nothing at the graph or dist level

    def sched_passes(self) -> list[OffloadPass]:
        """What runs on the programs, after lower-dist-to-sched."""
        acts = self.activations
        return [OffloadPass(optimizer=self.optimizer, params=self.params,
                            activations=bool(acts),
                            stages=acts if isinstance(acts, tuple) else (),
                            host_memory=self.host_memory or 0)]


def offload(optimizer: bool = True, params: bool = False,
            activations: bool | list[int] = False, host_memory: int | None = None) -> Offload:
    """`offload(optimizer=True, params=False, activations=False)`: what lives
    in host memory; `activations` is true (every stage) or a list of stages;
    `host_memory`: the bytes of host memory a rank may use (a plan that
    needs more is an error at compile time)."""
    return Offload(optimizer, params, activations, host_memory)
