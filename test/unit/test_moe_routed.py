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


def test_routed_pipeline_1f1b_and_data_parallel():
    cfg = routed(layers=2, capacity_factor=1.5)
    run_and_compare(cfg, [piper.place(pp=2), piper.split(2), piper.order("1f1b"),
                          piper.replicate(2), piper.expert_parallel(2)], chunks=2 * 2 * 2)


def eager_moe(x, probs, top_k, experts_fn, capacity):
    """The usual loop: per expert, its tokens by nonzero (choice-major,
    first choices fill slots first), the first `capacity` kept."""
    weights, chosen = probs.topk(top_k, dim=-1)
    weights = weights / weights.sum(-1, keepdim=True)
    out = torch.zeros_like(x)
    for e in range(probs.shape[1]):
        pairs = (chosen.t() == e).nonzero()  # (choice, token), choice-major
        pairs = pairs[:capacity]
        for c, t in pairs.tolist():
            out[t] += weights[t, c] * experts_fn(e, x[t])
    return out


@pytest.mark.parametrize("factor", [None, 1.0, 0.5])
def test_routing_matches_a_loop_over_nonzero(factor):
    torch.manual_seed(0)
    tokens, experts, dim, k = 12, 4, 3, 2
    x = torch.randn(tokens, dim)
    probs = torch.softmax(torch.randn(tokens, experts), -1)
    w = torch.randn(experts, dim, dim)
    cap = piper.moe.capacity(tokens, experts, k, factor)
    routing = piper.moe.route(probs, k, cap)
    y = piper.moe.combine(torch.bmm(piper.moe.dispatch(x, routing), w), routing)
    expect = eager_moe(x, probs, k, lambda e, v: v @ w[e], cap)
    torch.testing.assert_close(y, expect)
    if factor == 0.5:  # capacity 3 < the pairs some expert got: tokens were dropped
        assert cap == 3 and not torch.equal(
            expect, eager_moe(x, probs, k, lambda e, v: v @ w[e], tokens))


@pytest.mark.parametrize("call, message", [
    (lambda: piper.moe.capacity(4, 2, 3), "top_k 3 exceeds the number of experts 2"),
    (lambda: piper.moe.capacity(4, 2, 1, 0.0), "capacity_factor must be a positive number"),
    (lambda: piper.moe.capacity(4, 2, 1, "1"), "capacity_factor must be a positive number"),
    (lambda: piper.moe.route(torch.ones(4, 2), 3, 4), "top_k 3 must be between 1 and"),
    (lambda: piper.moe.route(torch.ones(4), 1, 4), "probs must be [tokens, experts]"),
])
def test_routing_errors(call, message):
    with pytest.raises(PiperError) as e:
        call()
    assert message in str(e.value)


def test_experts_that_do_not_divide():
    cfg = routed(experts=3, top_k=1)
    with pytest.raises(PiperError) as e:
        piper.compile(make_moe(cfg), moe_data(cfg), optimizer=torch.optim.SGD(
            make_moe(cfg).parameters(), lr=0.1), strategy=[piper.expert_parallel(2)])
    assert "3 stacked experts (dim 0 of 'layers.0.experts." in str(e.value)
    assert "do not divide over n=2" in str(e.value)
