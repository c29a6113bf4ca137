"""Every strategy trains exactly like single-process eager PyTorch.

Each case compiles a real model with a strategy, trains 3 steps on real
gloo processes (torchrun) and compares every loss and the final parameters
with one process training the plain model with torch.optim on the same
global batches (fp32, rtol 1e-5).
"""

import collections

import pytest
import torch
from eager import train_eagerly

import piper
from examples.gpt import GPTConfig, gpt_data, make_gpt
from examples.mlp import MLPConfig, make_mlp, mlp_data

STEPS = 3


def run_and_compare(make, cfg, data, strategy, mb, dp, opt="adamw"):
    model, reference = make(cfg), make(cfg)
    reference.load_state_dict(model.state_dict())

    def optimizer(m):
        if opt == "adamw":
            return torch.optim.AdamW(m.parameters(), lr=1e-2)
        return torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)

    example = data(cfg)
    plan = piper.compile(model, example, optimizer=optimizer(model), strategy=strategy)
    per_step = type(cfg)(**{**cfg.__dict__, "batch": cfg.batch * mb * dp})
    batches = []
    for s in range(STEPS):
        a, b = data(per_step, seed=50 + s)
        batches.append({"input0": a, "input1": b})
    result = plan.run(batches)

    losses = train_eagerly(reference, batches, optimizer(reference))
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=1e-6)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(result.state[name], p.detach(), rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")
    return plan


def mlp(layers):
    return MLPConfig(dim=16, layers=layers, classes=8, batch=2)


@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_data_parallel(opt):
    plan = run_and_compare(make_mlp, mlp(1), mlp_data,
                           [piper.replicate(2), piper.split(2)], mb=2, dp=2, opt=opt)
    assert plan.num_devices == 2


# Collectives on each device of the plans of test_zero (packed, the default):
# ZeRO-1 reduce-scatters a step's summed gradients once and gathers the
# updated shards once; ZeRO-2 reduce-scatters each of the 2 microbatches'
# gradients; ZeRO-3 also gathers the parameters for each microbatch's
# forward and again for its backward (reshard_after_forward: the backward
# re-computes the transposed weights from its own gather), and no updated
# parameters after the optimizer.
ZERO_COLLECTIVES = {
    1: {"reduce_scatter": 1, "all_gather": 1, "all_reduce": 1},
    2: {"reduce_scatter": 2, "all_gather": 1, "all_reduce": 1},
    3: {"reduce_scatter": 2, "all_gather": 4, "all_reduce": 1},
}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero(stage):
    from piper.analysis.plan_check import programs
    from piper.dialects import sched

    plan = run_and_compare(make_mlp, mlp(1), mlp_data,
                           [piper.replicate(2), piper.split(2), piper.shard(stage)], mb=2, dp=2)
    # the plan is the asked stage's: each device's collectives are that stage's
    # (the loss is the one all_reduce), not merely some reduce_scatter and all_gather
    for d, prog in programs(plan.module).items():
        kinds = collections.Counter(op.kind.data for op in prog.body.block.ops
                                    if isinstance(op, sched.CollectiveOp))
        assert kinds == ZERO_COLLECTIVES[stage], f"device {d}: {dict(kinds)}"


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_pipeline(schedule):
    run_and_compare(make_mlp, mlp(2), mlp_data,
                    [piper.place(pp=2), piper.split(4), piper.order(schedule=schedule)], mb=4, dp=1)


def test_interleaved_two_chunks_per_device():
    plan = run_and_compare(make_mlp, mlp(4), mlp_data,
                           [piper.place(pp=2), piper.split(4), piper.order(schedule="interleaved")],
                           mb=4, dp=1)
    assert plan.num_devices == 2


def test_zero_bubble_h1():
    plan = run_and_compare(make_mlp, mlp(2), mlp_data,
                           [piper.split_backward(), piper.place(pp=2), piper.split(4),
                            piper.order(schedule="zb-h1")], mb=4, dp=1)
    assert '"0W0"' in plan.text() and '"1I0"' in plan.text()


def test_dualpipe_v():
    plan = run_and_compare(make_mlp, mlp(4), mlp_data,
                           [piper.split_backward(), piper.place(pp=2, placement="v"),
                            piper.split(4), piper.order(schedule="dualpipe-v")], mb=4, dp=1)
    assert plan.num_devices == 2


def test_composed_gpt_pp_dp_zero():
    cfg = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=1, tied=False)
    run_and_compare(make_gpt, cfg, gpt_data,
                    [piper.place(pp=2), piper.split(2), piper.replicate(2), piper.shard(2),
                     piper.order(schedule="1f1b")], mb=2, dp=2)


def test_recompute_trains_identically_with_less_activation_memory():
    from piper.analysis.memory import program_peak_bytes
    from piper.analysis.plan_check import programs

    cfg = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=2, tied=False)
    base = [piper.place(pp=2), piper.split(4), piper.order(schedule="gpipe")]
    plain = piper.compile(make_gpt(cfg), gpt_data(cfg), optimizer=None, strategy=base)
    plan = run_and_compare(make_gpt, cfg, gpt_data, base + [piper.recompute()], mb=4, dp=1)
    for d, prog in programs(plan.module).items():
        assert program_peak_bytes(prog) < program_peak_bytes(programs(plain.module)[d])


def test_core_filter_directives():
    """Placement and every device's order written out as filters, no generators."""
    run_and_compare(make_mlp, mlp(2), mlp_data, [
        piper.place({"PP": 0}, devices=[0]),
        piper.place({"PP": 1}, devices=[1]),
        piper.split(4),
        piper.order(0, ["0F0", "0F1", {"PP": 0, "PASS": "F", "MB": [2, 3]}, {"PASS": "B"}]),
        piper.order(1, [{"MB": 0}, {"MB": 1}, {"MB": 2}, {"MB": 3}]),  # 1F0 1B0 1F1 1B1 ...
    ], mb=4, dp=1)


def test_bucketed_replicate():
    """Each stage's gradients packed into buckets, one all_reduce per bucket."""
    plan = run_and_compare(make_mlp, mlp(1), mlp_data,
                           [piper.replicate(2, bucket_bytes=1200), piper.split(2)], mb=2, dp=2)
    assert plan.text().count('task "pack"') == 2 * 2  # 2 buckets on each of 2 devices


def test_zero3_prefetch():
    plan = run_and_compare(make_mlp, mlp(1), mlp_data,
                           [piper.replicate(2), piper.split(2), piper.shard(3, prefetch=1)],
                           mb=2, dp=2)
    assert "all_gather" in plan.text()


@pytest.mark.parametrize("schedule", ["1f1b", "zb-h1"])
def test_zero3_reshards_after_forward_on_gpt(schedule):
    """ZeRO-3 (reshard_after_forward, the default): the backward gathers its
    parameters again and re-computes the transposed weights, so no forward
    returns a value computed from parameters alone; training is exactly
    eager's, also with the backward split into input and weight parts
    (the re-computation goes with the input part)."""
    from piper.passes.func_utils import functions, graph_attrs
    from piper.passes.recompute import _of_params

    cfg = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=1, tied=False)
    split = [piper.split_backward()] if schedule == "zb-h1" else []
    plan = run_and_compare(make_gpt, cfg, gpt_data,
                           split + [piper.place(pp=2), piper.split(2), piper.replicate(2),
                                    piper.shard(3), piper.order(schedule)], mb=2, dp=2)
    fns = functions(plan.module)
    for name in ("F0", "F1"):
        f = fns[name]
        results = list(f.body.block.last_op.operands)
        saved = [v for k, v in enumerate(results) if graph_attrs(f, k, True).get("kind") == "saved"]
        assert saved and not any(_of_params(f, v) for v in saved), name
    backward = ("I0", "I1") if split else ("B0", "B1")
    assert all(any(graph_attrs(fns[b], i).get("kind") == "param"
                   for i in range(len(fns[b].body.block.args))) for b in backward)


def test_checkpoint_resumes_adamw_state_with_identical_losses(tmp_path):
    """Sharded AdamW state (moments and step count under ZeRO-1) saved after
    2 steps and loaded into the same layout and into another one (no ZeRO):
    both resumed runs continue exactly like the uninterrupted run."""
    cfg = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=2, batch=1, tied=False)
    batches = []
    per_step = GPTConfig(**{**cfg.__dict__, "batch": 4})
    for s in range(4):
        a, b = gpt_data(per_step, seed=70 + s)
        batches.append({"input0": a, "input1": b})

    def plan(zero: bool):
        torch.manual_seed(0)
        model = make_gpt(cfg)
        strategy = [piper.place(pp=2), piper.split(2), piper.replicate(2)]
        strategy += [piper.shard(1)] if zero else []
        return piper.compile(model, gpt_data(cfg), strategy=strategy + [piper.order("1f1b")],
                             optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2))

    sharded = plan(zero=True)
    assert "shard 0 of 2" in sharded.text()  # optimizer state lives in shards
    # the uninterrupted run writes the checkpoint after step 2 on its way
    whole = sharded.run(batches, checkpoint_every=2, checkpoint_dir=str(tmp_path),
                        keep_checkpoints=0, progress=False)
    ck = tmp_path / "step-00000002"
    same = sharded.run(batches[2:], worker_args=("--load-checkpoint", str(ck)), progress=False)
    other = plan(zero=False).run(batches[2:], worker_args=("--load-checkpoint", str(ck)),
                                 progress=False)
    for resumed in (same, other):
        torch.testing.assert_close(torch.tensor(resumed.losses), torch.tensor(whole.losses[2:]),
                                   rtol=1e-6, atol=1e-7)
        for name, value in whole.state.items():
            torch.testing.assert_close(resumed.state[name], value, rtol=1e-6, atol=1e-7,
                                       msg=lambda m: f"{name}: {m}")


def test_batches_of_the_wrong_size_name_the_directives():
    cfg = mlp(1)
    plan = piper.compile(make_mlp(cfg), mlp_data(cfg), strategy=[piper.replicate(2), piper.split(2)])
    x, y = mlp_data(MLPConfig(**{**cfg.__dict__, "batch": 6}))
    with pytest.raises(piper.PiperError) as e:
        plan.save("/nonexistent/never-written", [{"input0": x, "input1": y}])
    assert ("batches[0]['x'] has shape [6, 16]; the plan takes 2 replicas x 2 microbatches "
            "of shape [2, 16], a batch of shape [8, 16] (set by replicate(n=2), split(n=2); capture "
            "traced one microbatch)") in str(e.value)
