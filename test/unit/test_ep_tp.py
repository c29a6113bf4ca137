"""Expert parallelism composed with tensor parallelism trains like eager PyTorch.

`expert_parallel(2)` and `tensor_parallel(2)` on the MoE example give a mesh
ep x tp (tp innermost: device = ep rank * 2 + tp rank). Tokens are split over
ep only: both tp ranks of an ep rank hold the same tokens. Each case trains
3 AdamW steps on 4 gloo processes and compares every loss and the final
parameters with one process training the plain model (fp32, rtol 1e-5),
then checks the compiled programs' collectives: the experts' all_to_all
runs among the devices of one tp rank, the tp all_reduces within one ep
rank's tp group.
"""

import torch
from test_expert_parallel import run_and_compare

import piper
from examples.moe import MoEConfig
from piper.analysis.plan_check import programs
from piper.dialects import sched

EXPERTS_TP = {"layers.*.experts.*.fc": "colwise", "layers.*.experts.*.proj": "rowwise"}


def moe(routing: str = "dense") -> MoEConfig:
    return MoEConfig(dim=8, hidden=8, experts=4, top_k=2, layers=1, classes=4, batch=4,
                     routing=routing)


def groups(plan, device: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(op.kind.data, tuple(op.members)) for op in programs(plan.module)[device].body.block.ops
            if isinstance(op, sched.CollectiveOp)]


def loads(plan, device: int) -> dict[str, tuple[list[int], list[int] | None]]:
    return {op.tensor_name.data: (list(op.result.type.get_shape()),
                                  [a.data for a in op.shard.data] if op.shard else None)
            for op in programs(plan.module)[device].body.block.ops
            if isinstance(op, sched.LoadOp)}
