"""piper.precision(param="fp16", loss_scale=...): GradScaler's loss scaling.

A small MLP trains 4 steps in fp16 from fp32 masters on 2 gloo processes
(dp=2, ZeRO-1, 2 microbatches), and one eager process does the same with
`torch.amp.GradScaler` itself: an fp16 copy of the model refreshed from
the fp32 masters, `scaler.scale(loss).backward(1/n)` per microbatch and
replica, the fp16 gradients cast to fp32 and summed over microbatches then
replicas into the masters' .grad, `scaler.step` (unscale, skip on
inf/nan) of an optimizer applying piper.optim.AdamW's formula, and
`scaler.update`. Step 2's batch holds an input fp16 cannot represent
(1e5): inf in the forward, nan gradients on replica 0 only (ZeRO-1: the
rank holding the other shard sees them only through the found-inf
all-reduce), so both skip that step and halve the scale. With
growth_interval=1 every good step doubles it. Every loss, every fp32
master, the scale and the growth tracker are bit-identical, and a run
resumed from the step-2 checkpoint continues bit-identically.
"""

import copy
import math

import pytest
import torch

import piper
from piper.diagnostics import PiperError

LR = 1e-2


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)

    def forward(self, x, y):
        return torch.nn.functional.mse_loss(self.b(torch.relu(self.a(x))), y)


class SpecOptimizer(torch.optim.Optimizer):
    """A torch optimizer applying a piper.optim spec (the plan's formula)."""

    def __init__(self, params, spec):
        super().__init__(params, {})
        self.spec, self.t = spec, 0

    def step(self):
        self.t += 1
        t = torch.tensor(float(self.t), dtype=torch.float64)
        with torch.no_grad():
            for p in self.param_groups[0]["params"]:
                st = self.state[p]
                old = st.get("mv") or (torch.zeros_like(p), torch.zeros_like(p))
                new, st["mv"] = self.spec.update(p, p.grad, old, t)
                p.copy_(new)


def eager_grad_scaler(batches, mb, dp, growth_interval):
    """(losses, masters, scaler) of eager fp16 training with GradScaler."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what the ranks run with
    try:
        master = MLP()
        low = copy.deepcopy(master).half()
        opt = SpecOptimizer(master.parameters(), piper.optim.AdamW(lr=LR))
        scaler = torch.amp.GradScaler("cpu", growth_interval=growth_interval)
        n = mb * dp
        losses = []
        for b in batches:
            with torch.no_grad():
                for p, q in zip(low.parameters(), master.parameters(), strict=True):
                    p.copy_(q)
            chunks = list(zip(b["input0"].chunk(n), b["input1"].chunk(n), strict=True))
            grads, total = None, None
            for r in range(dp):
                acc, part = None, None
                for x, y in chunks[r * mb:(r + 1) * mb]:
                    low.zero_grad()
                    loss = low(x.half(), y.half()).float()
                    scaler.scale(loss).backward(torch.tensor(1.0 / n))
                    g = [p.grad.float() for p in low.parameters()]
                    acc = g if acc is None else [a + c for a, c in zip(acc, g, strict=True)]
                    part = loss if part is None else part + loss
                part = part * (1.0 / mb)  # the plan's per-replica mean, then its mean
                grads = acc if grads is None else [a + c for a, c in zip(grads, acc, strict=True)]
                total = part * (1.0 / dp) if total is None else total + part * (1.0 / dp)
            losses.append(total.item())
            for q, g in zip(master.parameters(), grads, strict=True):
                q.grad = g
            scaler.step(opt)
            scaler.update()
        return losses, master, scaler
    finally:
        torch.set_num_threads(threads)


def test_fp16_dynamic_loss_scale_skips_a_step_as_grad_scaler_does(tmp_path):
    mb, dp, interval = 2, 2, 1
    model = MLP()
    plan = piper.compile(
        model, (torch.randn(2, 8), torch.randn(2, 4)),
        optimizer=torch.optim.AdamW(model.parameters(), lr=LR),
        strategy=[piper.precision(param="fp16", loss_scale="dynamic",
                                  growth_interval=interval),
                  piper.place(pp=1), piper.split(mb), piper.replicate(dp), piper.shard(1)])
    gen = torch.Generator().manual_seed(1)
    batches = [{"input0": torch.randn(8, 8, generator=gen),
                "input1": torch.randn(8, 4, generator=gen)} for _ in range(4)]
    batches[1]["input0"][0, 0] = 1e5  # inf in fp16: replica 0's first microbatch
    result = plan.run(batches, progress=False, checkpoint_every=2, keep_checkpoints=0,
                      checkpoint_dir=str(tmp_path))
    losses, master, scaler = eager_grad_scaler(batches, mb, dp, interval)

    assert math.isnan(result.losses[1]) and math.isnan(losses[1])
    assert [v for i, v in enumerate(result.losses) if i != 1] == \
        [v for i, v in enumerate(losses) if i != 1]  # bit-identical
    for name, p in master.named_parameters():
        assert torch.equal(result.state[name], p.detach()), name
    # 3 good steps, 1 skipped: 65536 * 2 (step 1) / 2 (step 2) * 2 * 2
    assert scaler.get_scale() == 262144.0
    assert result.state["loss_scale"].item() == scaler.get_scale()
    assert result.state["loss_scale_growth_tracker"].item() == scaler._growth_tracker.item()
    assert result.state["step"].item() == 3.0  # AdamW's count skips the skipped step too
    assert "all_reduce max %found_inf" in plan.text()
    # the scale is training state: resumed after step 2 (the skipped one),
    # the run continues bit-identically
    resumed = plan.run(batches[2:], progress=False, worker_args=(
        "--load-checkpoint", str(tmp_path / "step-00000002")))
    assert resumed.losses == result.losses[2:]
    for name, value in result.state.items():
        assert torch.equal(resumed.state[name], value), name


def test_fp16_static_loss_scale_plan():
    model = MLP()
    plan = piper.compile(model, (torch.randn(2, 8), torch.randn(2, 4)),
                         strategy=[piper.precision(param="fp16", loss_scale=1024.0),
                                   piper.place(pp=1), piper.split(2)])
    text = plan.text()
    assert "@loss_scale_update" not in text  # a fixed scale is never updated
    assert 'sched.load "loss_scale"' in text and "found_inf" in text


@pytest.mark.parametrize("kwargs, message", [
    ({"param": "fp16"}, "precision: param=\"fp16\" needs loss_scale"),
    ({"param": "bf16", "loss_scale": "dynamic"}, "precision: loss_scale is for param=\"fp16\""),
    ({"param": "fp16", "loss_scale": 8.0, "growth_interval": 10},
     "precision: growth_interval is for loss_scale=\"dynamic\""),
    ({"param": "fp16", "loss_scale": "dynamic", "growth_interval": 0},
     "precision: growth_interval must be an integer >= 1"),
])
def test_loss_scale_bad_options(kwargs, message):
    with pytest.raises(PiperError, match=message.replace("(", r"\(")):
        piper.precision(**kwargs)
