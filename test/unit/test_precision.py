"""piper.precision: bf16 compute from fp32 master weights.

The GPT example trains 3 steps on real gloo processes with bf16 compute,
fp32 master weights and optimizer state, and fp32 (or bf16) gradient
reduction, and is compared with one eager process doing the same
arithmetic: a bf16 copy of the model, refreshed from the fp32 masters each
step, runs forward and backward on each microbatch of each replica with
the loss cast to fp32 and scaled by 1/n, its gradients are cast to the
reduce dtype and summed over microbatches then replicas, and the
optimizer's update (piper.optim.AdamW: the elementwise formula the plan
runs) updates the fp32 masters from them, cast to fp32. With one thread
(what the ranks run with: bf16 matmuls round differently with more
threads) every loss and every parameter is bit-identical. Against plain full-batch bf16 training with
torch.optim.AdamW the losses agree to bf16 precision (rel 1e-2). A run
resumed from a checkpoint (fp32 masters and state) continues
bit-identically.
"""

import copy
import re

import pytest
import torch

import piper
from examples.gpt import GPTConfig, gpt_data, make_gpt
from piper.diagnostics import PiperError

STEPS = 3
LR = 1e-2


def reference_same_arithmetic(cfg, batches, mb, dp, reduce=torch.float32):
    """(losses, fp32 masters) of eager mixed-precision training, each step's
    batch in dp replicas of mb microbatches (the plan's chunks): gradients
    summed over microbatches, then over replicas, in `reduce`."""
    spec = piper.optim.AdamW(lr=LR)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        master = make_gpt(cfg)
        params = dict(master.named_parameters())
        state = {k: (torch.zeros_like(p), torch.zeros_like(p)) for k, p in params.items()}
        low = copy.deepcopy(master).to(torch.bfloat16)
        low_params = dict(low.named_parameters())
        losses = []
        n = mb * dp
        for step, b in enumerate(batches, 1):
            with torch.no_grad():
                for k, p in low_params.items():
                    p.copy_(params[k])
            chunks = list(zip(b["input0"].chunk(n), b["input1"].chunk(n), strict=True))
            grads, total = None, None
            for r in range(dp):
                acc, part = {}, None
                for x, y in chunks[r * mb:(r + 1) * mb]:
                    low.zero_grad()
                    loss = low(x, y).float()
                    loss.backward(torch.tensor(1.0 / n))
                    for k, p in low_params.items():
                        g = p.grad.to(reduce)
                        acc[k] = acc[k] + g if k in acc else g
                    part = loss if part is None else part + loss
                grads = acc if grads is None else {k: grads[k] + acc[k] for k in acc}
                total = part if total is None else total + part
            losses.append((total * (1.0 / n)).item())
            t = torch.tensor(float(step), dtype=torch.float64)
            with torch.no_grad():
                for k, p in params.items():
                    new, state[k] = spec.update(p, grads[k].float(), state[k], t)
                    p.copy_(new)
        return losses, master
    finally:
        torch.set_num_threads(threads)


def reference_plain_bf16(cfg, batches):
    """Losses of full-batch bf16 training with torch.optim.AdamW on fp32 masters."""
    master = make_gpt(cfg)
    opt = torch.optim.AdamW(master.parameters(), lr=LR)
    low = copy.deepcopy(master).to(torch.bfloat16)
    losses = []
    for b in batches:
        with torch.no_grad():
            for p, q in zip(low.parameters(), master.parameters(), strict=True):
                p.copy_(q)
        low.zero_grad()
        loss = low(b["input0"], b["input1"]).float()
        loss.backward()
        for p, q in zip(low.parameters(), master.parameters(), strict=True):
            q.grad = p.grad.float()
        opt.step()
        losses.append(loss.item())
    return losses


def run_bf16(cfg, strategy, mb, dp, reduce="fp32", checkpoint_dir=None):
    model = make_gpt(cfg)
    plan = piper.compile(model, gpt_data(cfg), optimizer=torch.optim.AdamW(model.parameters(),
                                                                           lr=LR),
                         strategy=[piper.precision(param="bf16", reduce=reduce, master="fp32"),
                                   *strategy])
    per_step = GPTConfig(**{**cfg.__dict__, "batch": cfg.batch * mb * dp})
    batches = []
    for s in range(STEPS):
        a, b = gpt_data(per_step, seed=50 + s)
        batches.append({"input0": a, "input1": b})
    ck = {} if checkpoint_dir is None else {"checkpoint_every": 2, "keep_checkpoints": 0,
                                            "checkpoint_dir": str(checkpoint_dir)}
    result = plan.run(batches, **ck)
    losses, master = reference_same_arithmetic(cfg, batches, mb, dp,
                                               getattr(torch, {"bf16": "bfloat16",
                                                               "fp32": "float32"}[reduce]))
    assert result.losses == losses  # bit-identical
    for name, p in master.named_parameters():
        assert result.state[name].dtype == torch.float32  # fp32 masters
        assert torch.equal(result.state[name], p.detach()), name
    plain = reference_plain_bf16(cfg, batches)
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(plain),
                               rtol=1e-2, atol=0)
    if checkpoint_dir is not None:  # the fp32 masters and state resume bit-identically
        resumed = plan.run(batches[2:], progress=False, worker_args=(
            "--load-checkpoint", str(checkpoint_dir / "step-00000002")))
        assert resumed.losses == result.losses[2:]
        for name, value in result.state.items():
            assert torch.equal(resumed.state[name], value), name
    return plan


def test_dp2_zero1_bf16_matches_eager_mixed_precision():
    cfg = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=1, tied=True)
    plan = run_bf16(cfg, [piper.place(pp=1), piper.split(2), piper.replicate(2), piper.shard(1)],
                    mb=2, dp=2)
    text = plan.text()
    # the gradients are summed and reduced in fp32
    assert "reduce_scatter" in text
    assert not [line for line in text.splitlines()
                if "reduce_scatter" in line and "bf16" in line]


def sent_bytes(plan) -> int:
    """The bytes every device sends in a step, from the plan's summary."""
    return sum(int(m) for m in re.findall(r"([0-9]+) B sent", plan.summary()))


def test_pp2_1f1b_bf16_matches_eager_mixed_precision(tmp_path):
    from piper.analysis.memory import program_peak_bytes
    from piper.analysis.plan_check import programs

    cfg = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=2, tied=True)
    strategy = [piper.place(pp=2), piper.split(2), piper.order(schedule="1f1b")]
    plan = run_bf16(cfg, strategy, mb=2, dp=1, checkpoint_dir=tmp_path)
    # the activations sent between the stages are bf16, and the plan's
    # memory estimate sees the smaller activations
    model = make_gpt(cfg)
    fp32 = piper.compile(model, gpt_data(cfg), strategy=strategy,
                         optimizer=torch.optim.AdamW(model.parameters(), lr=LR))
    assert "tensor<2x8x16xbf16>" in plan.text()
    assert sent_bytes(plan) * 2 == sent_bytes(fp32)
    for d, prog in programs(plan.module).items():
        assert program_peak_bytes(prog) < program_peak_bytes(programs(fp32.module)[d])


def test_dp2_zero1_bf16_reduction():
    """reduce="bf16": gradients summed over 2 microbatches and
    reduce-scattered over 2 replicas in bf16, cast to fp32 for the optimizer."""
    cfg = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=1, tied=True)
    plan = run_bf16(cfg, [piper.place(pp=1), piper.split(2), piper.replicate(2), piper.shard(1)],
                    mb=2, dp=2, reduce="bf16")
    assert [line for line in plan.text().splitlines()
            if "reduce_scatter" in line and "bf16" in line]


def test_composes_with_recompute_and_split_backward():
    """On the stage functions after recompute and split_backward (F, I, W,
    OPT), run by the reference executor in this process: bit-identical."""
    from piper.ir import context
    from piper.passes.pipeline_split import PipelineSplit
    from piper.passes.precision import Precision
    from piper.passes.recompute import Recompute
    from piper.passes.split_backward import SplitBackward

    cfg = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=2, tied=True)
    model = make_gpt(cfg)
    step = piper.capture(model, gpt_data(cfg),
                         optimizer=torch.optim.AdamW(model.parameters(), lr=LR))
    for p in (PipelineSplit(), Recompute(), SplitBackward(), Precision()):
        p.apply(context(), step.module)
    batches = [dict(zip(("input0", "input1"), gpt_data(cfg, seed=50 + s), strict=True))
               for s in range(STEPS)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses = [step.run(b["input0"], b["input1"]).item() for b in batches]
    finally:
        torch.set_num_threads(threads)
    reference, master = reference_same_arithmetic(cfg, batches, 1, 1)
    assert losses == reference
    trained = step.state_dict()
    for name, p in master.state_dict().items():
        assert torch.equal(trained[name], p), name


def test_fused_kernels_absorb_the_casts():
    """Fusion takes the casts into its kernels; with aten kernels (the same
    ops, grouped) one process trains bit-identically still."""
    from piper.dialects.graph import AtenOp
    from piper.dialects.kernel import FusedOp

    cfg = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=2, tied=True)
    plan = run_bf16(cfg, [piper.place(pp=1), piper.fuse(kernels="aten")], mb=1, dp=1)
    fused = [op for op in plan.module.walk() if isinstance(op, FusedOp)]
    assert any(isinstance(o, AtenOp) and o.target.data == "aten._to_copy.default"
               for f in fused for o in f.walk())


def test_json_form_round_trips():
    from piper.directives.strategy import from_json, to_json

    d = piper.precision()
    assert repr(d) == '{"directive": "precision"}'
    (back,) = from_json('[{"directive": "precision", "param": "bf16", "reduce": "fp32"}]')
    assert back == d
    assert from_json(to_json([d])) == [d]


@pytest.mark.parametrize("kwargs, message", [
    ({"param": "int8"}, "precision: param must be one of 'bf16', 'fp16', 'fp32', got 'int8'"),
    ({"param": torch.bfloat16}, "precision: param must be one of"),
    ({"param": "fp16"}, "precision: param=\"fp16\" needs loss_scale (\"dynamic\""),
    ({"loss_scale": 1024.0}, ("precision: loss_scale is for param=\"fp16\"; bf16 has fp32's "
                              "exponent range")),
    ({"param": "fp16", "loss_scale": -1}, "precision: loss_scale must be a positive number"),
    ({"param": "fp32", "reduce": "bf16"}, ("precision: reduce='bf16' must be the compute "
                                           "dtype ('fp32') or the master dtype ('fp32')")),
    ({"master": "bf16"}, "precision: master='bf16' is not supported yet"),
])
def test_bad_options_are_one_clear_error(kwargs, message):
    with pytest.raises(PiperError) as e:
        piper.precision(**kwargs)
    assert message in str(e.value)


def test_bad_json_names_the_entry():
    from piper.directives.strategy import from_json

    with pytest.raises(PiperError) as e:
        from_json('[{"directive": "split", "n": 2}, {"directive": "precision", "param": "fp8"}]')
    assert "strategy: entry 1: precision: param must be one of" in str(e.value)
    with pytest.raises(PiperError) as e:
        from_json('[{"directive": "precision", "dtype": "bf16"}]')
    assert "has unknown fields ['dtype']" in str(e.value)
