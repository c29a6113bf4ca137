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
from eager import train_eagerly
from test_own_model import assert_close_normwise

import piper
from examples.moe import MoEConfig, make_moe, moe_data
from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.runtime.trace import hidden_fraction, read_traces

STEPS = 3


def routed(layers=1, **kw) -> MoEConfig:
    base = dict(dim=8, hidden=8, experts=4, top_k=2, layers=layers, classes=4, batch=4,
                routing="routed", aux_loss=0.01)
    return MoEConfig(**{**base, **kw})


def run_and_compare(cfg, strategy, chunks, trace=None):
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
    result = plan.run(batches, trace=trace)

    losses = train_eagerly(reference, batches, torch.optim.AdamW(reference.parameters(), lr=1e-2),
                           lambda m, b: sum(m(x, y) for x, y in zip(b["input0"].split(cfg.batch),
                                                                    b["input1"].split(cfg.batch))
                                            ) / chunks)
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


def test_routed_data_parallel_reduces_each_gradient_once():
    cfg = routed()
    model = make_moe(cfg)
    plan = piper.compile(model, moe_data(cfg), strategy=[piper.replicate(2),
                                                         piper.expert_parallel(2)],
                         optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2))
    # the experts' rows over dp (the ep ranks hold other rows), the
    # replicated parameters' over dp x ep at once
    groups = [(shape, len(op.members)) for op in programs(plan.module)[0].body.block.ops
              if isinstance(op, sched.CollectiveOp) and op.kind.data == "all_reduce"
              for shape in [tuple(op.operands[0].type.get_shape())]]
    assert ((2, 8, 8), 2) in groups and ((8, 8), 4) in groups, groups
    assert not any(size == 2 and shape == (8, 8) for shape, size in groups), groups


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


@pytest.mark.parametrize("parallel", ["pp2", "dp2"])
def test_transformers_qwen3_moe_expert_parallel(parallel):
    """Qwen3-MoE, unmodified but for its experts running through slots
    (dropless), with its own load-balancing loss: pp=2 x ep=2 with 1F1B, and
    dp=2 x ep=2 (the experts' gradients reduced over their owner's dp
    replicas only, the rest over dp x ep)."""
    T = pytest.importorskip("transformers")
    cfg = T.Qwen3MoeConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        num_experts=4, num_experts_per_tok=2, use_cache=False, output_router_logits=True,
        router_aux_loss_coef=0.01)
    torch.manual_seed(0)
    model, reference = T.Qwen3MoeForCausalLM(cfg).train(), T.Qwen3MoeForCausalLM(cfg).train()
    reference.load_state_dict(model.state_dict())
    assert piper.moe.route_through_slots(model) == [
        "model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    piper.annotate("PP", model.model.layers)
    gen = torch.Generator().manual_seed(7)
    rows, chunks = 2, 2 * 2  # captured rows; microbatches (pp2) or dp replicas, x ep ranks
    ids = torch.randint(0, 97, (rows, 8), generator=gen)
    plan = piper.compile(model, {"input_ids": ids, "labels": ids},
                         optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                         strategy=[piper.place(pp=2), piper.split(2), piper.order("1f1b"),
                                   piper.expert_parallel(2)] if parallel == "pp2" else
                         [piper.replicate(2), piper.expert_parallel(2)])
    batches = [{"input_ids": x, "labels": x}
               for x in torch.randint(0, 97, (STEPS, rows * chunks, 8), generator=gen)]
    result = plan.run(batches)

    # the model's own grouped-matmul experts, eagerly
    losses = train_eagerly(reference, batches, torch.optim.AdamW(reference.parameters(), lr=1e-3),
                           lambda m, b: sum(m(input_ids=x, labels=x).loss
                                            for x in b["input_ids"].split(rows)) / chunks)
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=0)
    trained = plan.state_dict()
    for name, p in reference.named_parameters():  # as the other transformers parity tests
        assert_close_normwise(trained[name], p.detach(), name)
    # the experts' rows are split over the ep ranks: rank 1 loads experts 2, 3
    loads = {op.tensor_name.data: op for op in programs(plan.module)[1].body.block.ops
             if isinstance(op, sched.LoadOp)}
    w = loads["model.layers.0.mlp.experts.gate_up_proj"]
    assert list(w.result.type.get_shape()) == [2, 32, 32]


class LoopMoE(torch.nn.Module):
    """Top-1 MoE written the usual way: a loop over experts and nonzero."""

    def __init__(self):
        super().__init__()
        self.router = torch.nn.Linear(4, 2)
        self.experts = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))

    def forward(self, x):
        chosen = self.router(x).argmax(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            idx = (chosen == e).nonzero().squeeze(1)
            out = out.index_add(0, idx, expert(x[idx]))
        return out.sum()


def test_usual_routing_code_gets_the_static_alternative():
    model = LoopMoE()
    with pytest.raises(PiperError) as e:
        piper.compile(model, (torch.randn(6, 4),), loss_fn=None,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1), strategy=[])
    text = str(e.value)
    assert "aten.nonzero" in text and "test_moe_routed.py:" in text
    assert "piper.moe (route, dispatch, combine)" in text


def test_routed_dualpipe_v(tmp_path):
    """Zero-bubble schedules: each backward is an input-gradient part (cut
    around its all_to_alls) and a weight-gradient part, whose expert ops run
    on the owner from what the forward and the input-gradient part left there.
    The overlapped pairs' pieces run interleaved (overlap-pairs): the ranks'
    traces show other tasks' calls running while an all_to_all travels."""
    cfg = routed(layers=4)  # 4 stages, 2 a device in a V
    plan = run_and_compare(cfg, [piper.split_backward(), piper.place(pp=2, placement="v"),
                                 piper.split(4), piper.order("dualpipe-v"),
                                 piper.expert_parallel(2)], chunks=4 * 2, trace=tmp_path / "trace")
    labels = plan.summary()
    assert "W0" in labels and "I0" in labels
    traces = read_traces(tmp_path / "trace")
    assert sorted(traces) == [0, 1, 2, 3]
    for doc in traces.values():
        events = doc["traceEvents"]
        pieces = [e for e in events if e.get("tid") == "compute" and e["name"][0].isdigit()]
        a2a = [e for e in events if e.get("tid") == "comm" and e["name"] == "all_to_all"]
        assert doc["piper"]["steps"] == STEPS and a2a
        # a task's piece runs from start to end while an all_to_all is in
        # flight (run unpaired, every all_to_all is waited for right away)
        assert any(a["ts"] <= c["ts"] and c["ts"] + c["dur"] <= a["ts"] + a["dur"]
                   for a in a2a for c in pieces)
    assert 0.0 < hidden_fraction(traces, "all_to_all") <= 1.0


@pytest.mark.parametrize("zero, factor", [(1, 1.5), (3, None)])
def test_routed_expert_parallel_with_zero(zero, factor):
    """ZeRO over dp within each ep rank's rows: the flat shard k of dp of
    rows block b is the flat shard b*dp + k of dp*ep. ZeRO-1 with a capacity
    (3 slots per expert for 8 routed pairs: tokens are dropped), ZeRO-3
    dropless."""
    plan = run_and_compare(routed(capacity_factor=factor),
                           [piper.replicate(2), piper.shard(zero), piper.expert_parallel(2)],
                           chunks=2 * 2)
    shards = {op.tensor_name.data: [a.data for a in op.shard.data]
              for op in programs(plan.module)[3].body.block.ops
              if isinstance(op, sched.LoadOp) and op.shard is not None}
    assert shards["layers.0.experts.w1:exp_avg"] == [3, 4]  # dp rank 1, ep rank 1
    assert shards["layers.0.router.weight:exp_avg"] == [1, 2]


class OwnMoE(torch.nn.Module):
    """A routed MoE of the user's own, with no Piper annotation inside."""

    def __init__(self):
        super().__init__()
        from examples.moe import StackedExperts

        self.router = torch.nn.Linear(8, 4, bias=False)
        self.experts = StackedExperts(4, 8, 8)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x, y):
        probs = torch.softmax(self.router(x), -1)
        routing = piper.moe.route(probs, 2, piper.moe.capacity(x.shape[0], 4, 2))
        h = x + piper.moe.combine(self.experts(piper.moe.dispatch(x, routing)), routing)
        return torch.nn.functional.cross_entropy(self.head(h), y)


def test_stacked_experts_annotated_from_outside():
    torch.manual_seed(0)
    model = OwnMoE()
    piper.annotate("EP", model.experts)
    x, y = torch.randn(4, 8), torch.randint(0, 4, (4,))
    plan = piper.compile(model, (x, y), loss_fn=None, strategy=[piper.expert_parallel(2)],
                         optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    a2a = [shape for kind, shape in collectives(plan, 1) if kind == "all_to_all"]
    # slots out and back in the forward; the outputs' gradient out in the
    # backward (the slots hold the model's input, which needs no gradient)
    assert a2a == [(4, 4, 8)] * 3, a2a
    loads = {op.tensor_name.data: list(op.result.type.get_shape())
             for op in programs(plan.module)[1].body.block.ops if isinstance(op, sched.LoadOp)}
    assert loads["experts.w1"] == [2, 8, 8] and loads["router.weight"] == [4, 8]


def test_two_moe_layers_in_one_stage():
    """Both MoE layers on one stage: the forward is cut into three segments
    around two expert regions (and the backward likewise, in reverse)."""
    plan = run_and_compare(routed(layers=2), [piper.place(pp=1), piper.split(2),
                                              piper.expert_parallel(2)], chunks=2 * 2)
    a2a = [shape for kind, shape in collectives(plan, 0) if kind == "all_to_all"]
    assert len(a2a) == 2 * 2 * 2 * 2  # layers x (dispatch, combine) x (F, B) x microbatches


class NoExperts(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.act = torch.nn.GELU()

    def forward(self, x):
        return self.act(self.fc(x)).sum()


def test_ep_annotation_on_a_module_without_parameters():
    model = NoExperts()
    piper.annotate("EP", model.act)
    with pytest.raises(PiperError) as e:
        piper.compile(model, (torch.randn(4, 4),), loss_fn=None,
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      strategy=[piper.expert_parallel(2)])
    assert "expert_parallel: stage 0: the expert region reads no parameter" in str(e.value)
