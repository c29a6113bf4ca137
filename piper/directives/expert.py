"""The `expert_parallel` directive: spread the experts of MoE layers over n devices.

    strategy = [piper.place(pp=2), piper.split(2), piper.order(schedule="1f1b"),
                piper.expert_parallel(2)]      # experts over 2 devices per stage

Each stage's experts (the model's `piper.annotate("EP", e)` regions) are
split into n contiguous blocks, one per device of a new mesh axis `ep`;
tokens are split over the same devices like data parallelism, and each MoE
layer exchanges tokens and expert outputs with all_to_all (see
piper/passes/expert_parallel.py). In JSON: `{"directive": "expert_parallel",
"n": 2}`.

It applies after the schedule: the pass cuts each forward and backward task
of a stage with experts into three tasks and two all_to_alls at the place
the schedule gave the task, so every named schedule keeps its order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from piper.directives.base import Directive
from piper.directives.options import MAX_COUNT, identifier, integer
from piper.passes.expert_parallel import ExpertParallel as ExpertParallelPass


@dataclass(frozen=True, repr=False)
class ExpertParallel(Directive):
    """Expert parallelism over `n` devices of mesh axis `axis`."""

    directive: ClassVar[str] = "expert_parallel"

    n: int
    axis: str = "ep"

    def __post_init__(self):
        integer("expert_parallel: n", self.n, 1, MAX_COUNT)
        identifier("expert_parallel: axis", self.axis)

    def passes(self) -> list[ExpertParallelPass]:
        return [ExpertParallelPass(n=self.n, axis=self.axis)]


def expert_parallel(n: int, axis: str = "ep") -> ExpertParallel:
    return ExpertParallel(n, axis)
