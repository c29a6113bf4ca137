"""What the simulator and the memory estimate say about a tensor-parallel plan.

The GPT example (2 layers, dim 16) with Megatron's plan over tp=2,
compiled, not run: its all_reduces are charged at each preset's intra-node
link (tp is the mesh's innermost axis, so a tp group is consecutive
devices, on one node), and each device's parameters, gradients and
optimizer state hold half of every split weight. verify-plan's check of a
tp group's collective order is in test/sched/verify-plan.mlir.
"""

import dataclasses
import functools

import pytest
import torch

import piper
from examples.gpt import GPTConfig, gpt_data, make_gpt
from piper.analysis import cost_model as C
from piper.analysis.plan_check import programs
from piper.analysis.plan_sim import simulate_plan
from piper.analysis.task_costs import AnalyticCosts, UnitCosts
from piper.dialects import sched
from piper.dialects.dist import type_bytes
from piper.directives.strategy import compile_plan

PLAN = {"blocks.*.attn.qkv": "colwise", "blocks.*.attn.proj": "rowwise",
        "blocks.*.mlp.fc": "colwise", "blocks.*.mlp.proj": "rowwise"}
SPLIT = ("attn.qkv.weight", "attn.proj.weight", "mlp.fc.weight", "mlp.fc.bias",
         "mlp.proj.weight")


@functools.cache
def _captured():
    cfg = GPTConfig(layers=2, batch=2, tied=False)
    model = make_gpt(cfg)
    step = piper.capture(model, gpt_data(cfg),
                         optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3))
    return step, model


@functools.cache
def _plan(pp: int, tp: int):
    """The compiled plan (simulating it leaves it as it is) and the model."""
    step, model = _captured()
    module = step.module.clone()
    compile_plan(module, [piper.place(pp=pp)]
                 + ([piper.tensor_parallel(tp, plan=PLAN)] if tp > 1 else []))
    return module, model


def _ring_all_reduce(nbytes: float, n: int, latency: float, bw: float) -> float:
    return 2 * (n - 1) * latency + 2 * (n - 1) / n * nbytes / bw


@pytest.mark.parametrize("device", sorted(C.PRESETS))
def test_tp_all_reduces_are_charged_at_the_intra_node_link(device):
    module, _ = _plan(1, 2)
    r = simulate_plan(module, AnalyticCosts(device))
    spec = C.PRESETS[device]
    lat = spec.collective_step_latency or spec.intra_latency
    reduces = [i for i in r.instrs if i.kind == "all_reduce"]
    # per layer 2 in the forward and 2 in the backward, on each of the 2 devices
    assert len(reduces) == 2 * 2 * 4
    for i in reduces:
        assert i.meta["group"] == [0, 1] and i.meta["link"] == "intra-node"
        assert r.duration[i.id] == pytest.approx(
            _ring_all_reduce(i.bytes, 2, lat, spec.intra_bw), rel=1e-12)
        # the inter-node link would cost more
        assert r.duration[i.id] < _ring_all_reduce(i.bytes, 2, spec.inter_latency,
                                                   spec.inter_bw)


def test_tp_stays_on_a_node_and_the_pipeline_crosses_nodes():
    # pp=2 x tp=2 on nodes of 2 devices: tp groups [0, 1] and [2, 3] are each
    # one node (intra-node link); the stage-to-stage messages go between nodes
    module, _ = _plan(2, 2)
    spec = dataclasses.replace(C.PRESETS["h100"], devices_per_node=2)
    r = simulate_plan(module, AnalyticCosts(spec))
    reduces = [i for i in r.instrs if i.kind == "all_reduce"]
    sends = [i for i in r.instrs if i.kind == "send"]
    assert reduces and sends
    assert {tuple(i.meta["group"]) for i in reduces} == {(0, 1), (2, 3)}
    assert {i.meta["link"] for i in reduces} == {"intra-node"}
    assert {i.meta["link"] for i in sends} == {"inter-node"}
    for i in reduces:
        assert r.duration[i.id] == pytest.approx(
            _ring_all_reduce(i.bytes, 2, spec.intra_latency, spec.intra_bw), rel=1e-12)
    for i in sends:
        assert r.duration[i.id] == pytest.approx(spec.inter_latency + i.bytes / spec.inter_bw)


def _loaded(module, device: int) -> dict[str, int]:
    """Bytes of the training state a device's program loads: parameters,
    optimizer state (`name:exp_avg`, ..., and AdamW's shared `step`)."""
    out = {"params": 0, "optimizer": 0}
    for op in programs(module)[device].body.block.ops:
        if isinstance(op, sched.LoadOp):
            name = op.tensor_name.data
            kind = "optimizer" if ":" in name or name == "step" else "params"
            out[kind] += type_bytes(op.result.type)
    return out


def test_memory_estimate_counts_the_local_shards():
    # tp=2: each device holds half of every split weight (and of its gradient
    # and optimizer state) and all of the replicated ones
    one, model = _plan(1, 1)
    two, _ = _plan(1, 2)
    total = sum(4 * p.numel() for p in model.parameters())
    split = sum(4 * p.numel() for name, p in model.named_parameters() if name.endswith(SPLIT))
    assert 0 < split < total
    local = total - split // 2
    r1, r2 = simulate_plan(one, UnitCosts()), simulate_plan(two, UnitCosts())
    assert r1.peak_of(0, "grads") == total and _loaded(one, 0)["params"] == total
    assert r2.devices == [0, 1]
    for d in r2.devices:
        assert _loaded(two, d)["params"] == local
        assert r2.peak_of(d, "grads") == local
        # AdamW's two moments per element (its step counters are the same on both)
        assert _loaded(one, 0)["optimizer"] - _loaded(two, d)["optimizer"] == 2 * (total - local)
        # the simulated peaks of parameters and optimizer state shrink with them
        assert r2.peak_of(d, "params") < r1.peak_of(0, "params")
        assert r2.peak_of(d, "optimizer") < r1.peak_of(0, "optimizer")
        assert r2.peak_mem[d] < r1.peak_mem[0]
