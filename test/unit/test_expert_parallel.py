"""Expert parallelism trains the MoE example exactly like eager PyTorch.

Each parity case compiles the MoE example with `piper.expert_parallel(2)`
(alone with microbatches, with a 1F1B pipeline, with data parallelism),
trains 3 steps on real gloo processes (torchrun) and compares every loss and
the final parameters with one process training the plain model with
torch.optim on the same global batches (fp32, rtol 1e-5). The other cases
check the errors a user can cause, without starting processes.
"""

import pytest
import torch
import torch.nn as nn
from eager import train_eagerly

import piper
from examples.mlp import MLPConfig, make_mlp, mlp_data
from examples.moe import Head, MoEConfig, MoELayer, make_moe, moe_data
from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.dialects import sched

STEPS = 3


def moe(layers: int) -> MoEConfig:
    return MoEConfig(dim=8, hidden=8, experts=4, top_k=2, layers=layers, classes=4, batch=4)


def run_and_compare(cfg, strategy, ranks_per_batch, opt="adamw", checkpoint_dir=""):
    """Train 3 steps with `strategy` and with eager torch; return the plan.

    `ranks_per_batch` is how many captured batches one step's global batch
    holds (ep x microbatches x dp). The final state comes back whole, by
    the model's names (`result.state`, `plan.state_dict()`); with
    `checkpoint_dir`, the last step is also checkpointed and
    `piper.load_checkpoint` must reassemble it into a plain model."""
    model, reference = make_moe(cfg), make_moe(cfg)
    reference.load_state_dict(model.state_dict())

    def optimizer(m):
        if opt == "adamw":
            return torch.optim.AdamW(m.parameters(), lr=1e-2)
        return torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

    plan = piper.compile(model, moe_data(cfg), optimizer=optimizer(model), strategy=strategy)
    per_step = MoEConfig(**{**cfg.__dict__, "batch": cfg.batch * ranks_per_batch})
    batches = []
    for s in range(STEPS):
        x, y = moe_data(per_step, seed=50 + s)
        batches.append({"input0": x, "input1": y})
    result = plan.run(batches, checkpoint_every=STEPS if checkpoint_dir else 0,
                      checkpoint_dir=checkpoint_dir)

    losses = train_eagerly(reference, batches, optimizer(reference))
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=1e-6)
    assert set(result.state) >= {n for n, _ in reference.named_parameters()}
    state = plan.state_dict()
    restored = None
    if checkpoint_dir:
        from piper.runtime.checkpoint import latest

        restored = piper.load_checkpoint(make_moe(cfg, seed=7), latest(checkpoint_dir)[0])
    for name, p in reference.named_parameters():
        for got in (result.state[name], state[name],
                    *([restored.state_dict()[name]] if restored else [])):
            torch.testing.assert_close(got, p.detach(), rtol=1e-5, atol=1e-6,
                                       msg=lambda m, name=name: f"{name}: {m}")
    return plan


def loaded(plan) -> dict[int, set[str]]:
    """Training-state tensors each device's program loads."""
    return {d: {op.tensor_name.data for op in p.body.block.ops if isinstance(op, sched.LoadOp)}
            for d, p in programs(plan.module).items()}


def collectives(plan, device: int) -> list[str]:
    return [op.kind.data for op in programs(plan.module)[device].body.block.ops
            if isinstance(op, sched.CollectiveOp)]


def test_expert_parallel_with_microbatches():
    plan = run_and_compare(moe(1), [piper.expert_parallel(2), piper.split(2)],
                           ranks_per_batch=2 * 2)
    assert plan.num_devices == 2
    state = loaded(plan)
    # Experts 0, 1 live on ep rank 0, experts 2, 3 on rank 1; the rest on both.
    for d, own, other in ((0, (0, 1), (2, 3)), (1, (2, 3), (0, 1))):
        for e in own:
            assert f"layers.0.experts.{e}.fc.weight" in state[d]
            assert f"layers.0.experts.{e}.fc.weight:exp_avg" in state[d]
        for e in other:
            assert not any(n.startswith(f"layers.0.experts.{e}.") for n in state[d])
        assert "layers.0.router.fc.weight" in state[d]
    # Per microbatch: forward dispatch (h, gates) and combine, backward
    # dispatch (output gradient) and combine (gradients of h and gates).
    assert collectives(plan, 0).count("all_to_all") == 2 * (3 + 3)


def test_expert_parallel_with_pipeline_1f1b():
    plan = run_and_compare(moe(2), [piper.place(pp=2), piper.split(2),
                                    piper.order(schedule="1f1b"), piper.expert_parallel(2)],
                           ranks_per_batch=2 * 2, opt="sgd")
    assert plan.num_devices == 4
    state = loaded(plan)
    # Device = pp rank * 2 + ep rank: layer 1's experts 2, 3 sit on device 3.
    assert {n for n in state[3] if ".experts." in n} == {
        f"layers.1.experts.{e}.{p}.{w}" + s for e in (2, 3) for p in ("fc", "proj")
        for w in ("weight", "bias") for s in ("", ":momentum_buffer")}


def test_expert_parallel_with_data_parallel():
    plan = run_and_compare(moe(1), [piper.replicate(2), piper.expert_parallel(2)],
                           ranks_per_batch=2 * 2)
    assert plan.num_devices == 4
    # Device = dp replica * 2 + ep rank: both replicas hold experts 0, 1 on ep rank 0.
    state = loaded(plan)
    for d in (0, 2):
        assert "layers.0.experts.1.proj.bias" in state[d]
        assert not any(n.startswith("layers.0.experts.2.") for n in state[d])
    groups = {(op.kind.data, tuple(op.members)) for op in programs(plan.module)[0].body.block.ops
              if isinstance(op, sched.CollectiveOp)}
    assert ("all_to_all", (0, 1)) in groups  # experts exchange tokens within a replica
    assert ("all_reduce", (0, 2)) in groups  # every gradient over dp (experts' too)
    assert ("all_reduce", (0, 1)) in groups  # replicated parameters' gradients over ep


def test_directive_json_and_description():
    from piper.directives.strategy import describe, from_json, to_json

    d = from_json('[{"directive": "expert_parallel", "n": 2}]')
    assert d == [piper.expert_parallel(2)]
    assert describe(d[0]) == "expert_parallel(n=2 axis='ep')"
    assert from_json(to_json(d)) == d
    with pytest.raises(PiperError, match="expert_parallel: n must be an integer >= 1, got 0"):
        piper.expert_parallel(0)


def test_experts_must_divide_over_n():
    cfg = moe(1)
    with pytest.raises(PiperError) as e:
        piper.compile(make_moe(cfg), moe_data(cfg), strategy=[piper.expert_parallel(3)])
    msg = str(e.value)
    assert "directive expert_parallel(n=3" in msg
    assert "4 experts (EP 0..3) do not divide over n=3 ranks" in msg


def test_model_without_experts():
    cfg = MLPConfig(dim=8, layers=1, classes=4, batch=2)
    with pytest.raises(PiperError) as e:
        piper.compile(make_mlp(cfg), mlp_data(cfg), strategy=[piper.expert_parallel(2)])
    msg = str(e.value)
    assert "directive expert_parallel(n=2" in msg and "no stage has expert regions" in msg


class _TwoMoELayersOneStage(nn.Module):
    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.layers = nn.ModuleList(MoELayer(cfg) for _ in range(2))
        self.head = Head(cfg.dim, cfg.classes)

    def forward(self, x, targets):
        with piper.annotate("PP"):
            return self.head(self.layers[1](self.layers[0](x)), targets)


def test_two_moe_layers_in_one_stage():
    cfg = moe(1)
    torch.manual_seed(0)
    with pytest.raises(PiperError) as e:
        piper.compile(_TwoMoELayersOneStage(cfg), moe_data(cfg),
                      strategy=[piper.expert_parallel(2)])
    msg = str(e.value)
    assert "directive expert_parallel(n=2" in msg
    assert 'put each MoE layer in its own "PP" region' in msg
