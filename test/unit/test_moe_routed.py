"""Routed mixture of experts: stacked experts, static-shape routing, expert parallelism.

The routed MoE example (`MoEConfig(routing="routed")`: `piper.moe` routing
into slots, experts stacked on dim 0, Switch's load-balancing loss) trains
with `expert_parallel` exactly like eager PyTorch: 3 AdamW steps on real
gloo processes, every loss and final parameter at rtol 1e-5. The eager
reference takes the mean of the loss over the global batch's chunks of the
captured size (what eager gradient accumulation computes: the
load-balancing loss, unlike the cross entropy, depends on which tokens are
routed together). Other cases check the routing itself against a plain
loop over `nonzero`, the bytes the plan moves, and the errors.
"""

import pytest
import torch

import piper
from examples.moe import MoEConfig, make_moe, moe_data
from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.dialects import sched

STEPS = 3


def routed(layers=1, **kw) -> MoEConfig:
    base = dict(dim=8, hidden=8, experts=4, top_k=2, layers=layers, classes=4, batch=4,
                routing="routed", aux_loss=0.01)
    return MoEConfig(**{**base, **kw})


def run_and_compare(cfg, strategy, chunks):
    """Train 3 steps with `strategy` and eagerly; `chunks`: captured batches per step."""
    model, reference = make_moe(cfg), make_moe(cfg)
    reference.load_state_dict(model.state_dict())
    plan = piper.compile(model, moe_data(cfg), optimizer=torch.optim.AdamW(
        model.parameters(), lr=1e-2), strategy=strategy)
    per_step = MoEConfig(**{**cfg.__dict__, "batch": cfg.batch * chunks})
    batches = []
    for s in range(STEPS):
        x, y = moe_data(per_step, seed=50 + s)
        batches.append({"input0": x, "input1": y})
    result = plan.run(batches)

    opt = torch.optim.AdamW(reference.parameters(), lr=1e-2)
    losses = []
    for b in batches:
        opt.zero_grad()
        loss = sum(reference(x, y) for x, y in zip(b["input0"].split(cfg.batch),
                                                   b["input1"].split(cfg.batch))) / chunks
        loss.backward()
        opt.step()
        losses.append(loss.item())
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=1e-6)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(result.state[name], p.detach(), rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")
    return plan


def collectives(plan, device: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(op.kind.data, tuple(op.operands[0].type.get_shape()))
            for op in programs(plan.module)[device].body.block.ops
            if isinstance(op, sched.CollectiveOp)]


def test_routed_expert_parallel_with_microbatches():
    cfg = routed()
    plan = run_and_compare(cfg, [piper.expert_parallel(2), piper.split(2)], chunks=2 * 2)
    # only the experts' slots travel: [experts, capacity, dim] each way
    a2a = [shape for kind, shape in collectives(plan, 0) if kind == "all_to_all"]
    assert a2a and all(shape == (4, 4, 8) for shape in a2a), a2a
