"""Expert parallelism composed with tensor parallelism trains like eager PyTorch.

`expert_parallel(2)` and `tensor_parallel(2)` on the MoE example give a mesh
ep x tp (tp innermost: device = ep rank * 2 + tp rank). Tokens are split over
ep only: both tp ranks of an ep rank hold the same tokens. Each case trains
3 AdamW steps on 4 gloo processes and compares every loss and the final
parameters with one process training the plain model (fp32, rtol 1e-5),
then checks the compiled programs' collectives: the experts' all_to_all
runs among the devices of one tp rank, the tp all_reduces within one ep
rank's tp group. With a pipeline and with ZeRO over dp (8 processes) the
cases are slow ones; the last case checks the error for experts whose
output would stay split over tp.
"""

import pytest
from test_expert_parallel import run_and_compare

import piper
from examples.moe import MoEConfig, make_moe, moe_data
from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.dialects import sched


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


def test_experts_split_over_ep_and_tp(tmp_path):
    """plan=None after expert_parallel finds each expert's MLP (fc colwise,
    proj rowwise) in the experts' functions: an expert lives on one ep rank
    and is split over that rank's tp group. The checkpoint loads into a
    plain model."""
    plan = run_and_compare(moe(), [piper.expert_parallel(2), piper.tensor_parallel(2)],
                           ranks_per_batch=2, checkpoint_dir=str(tmp_path / "ckpt"))
    assert plan.num_devices == 4
    for device in range(4):
        ep, tp = divmod(device, 2)
        held = loads(plan, device)
        for e in (2 * ep, 2 * ep + 1):  # experts 0, 1 on ep rank 0; 2, 3 on ep rank 1
            at = f"layers.0.experts.{e}"
            assert held[f"{at}.fc.weight"] == ([4, 8], [tp, 2])  # hidden 8 by rows
            assert held[f"{at}.fc.weight:exp_avg"] == ([4, 8], [tp, 2])
            assert held[f"{at}.proj.weight"] == ([8, 4], [tp, 2, 1])  # by columns
            assert held[f"{at}.proj.bias"] == ([8], None)
        assert not any(f"experts.{e}." in n for n in held for e in (2 - 2 * ep, 3 - 2 * ep))
        assert held["layers.0.router.fc.weight"] == ([4, 8], None)
        ep_group, tp_group = (tp, 2 + tp), (2 * ep, 2 * ep + 1)
        kinds = groups(plan, device)
        # dispatch and combine, forward and backward (h and the gates each way)
        assert [g for k, g in kinds if k == "all_to_all"] == [ep_group] * 6
        # within the tp group, per source rank's chunk of tokens: each held
        # expert's rowwise output (forward, its bias added after the sum),
        # the gradient of h summed over the held experts (backward)
        assert kinds.count(("all_reduce", tp_group)) == 2 * 2 + 2
        # the loss and one bucket of the replicated parameters' gradients over ep
        assert kinds.count(("all_reduce", ep_group)) == 2
        assert {g for _, g in kinds} == {ep_group, tp_group}


def test_stacked_experts_over_ep_head_over_tp():
    """Routed MoE (stacked experts): the experts' rows are split over ep and
    replicated over tp (every tp rank of an ep rank runs the same slots);
    the head is split over tp with the cross entropy on its class shards."""
    plan = run_and_compare(moe("routed"), [piper.expert_parallel(2),
                                           piper.tensor_parallel(2, plan={"head.fc": "loss"})],
                           ranks_per_batch=2)
    for device in range(4):
        ep, tp = divmod(device, 2)
        held = loads(plan, device)
        assert held["layers.0.experts.w1"] == ([2, 8, 8], [ep, 2])  # experts' rows over ep
        assert held["layers.0.experts.w1:exp_avg"] == ([2, 8, 8], [ep, 2])
        assert held["head.fc.weight"] == ([2, 8], [tp, 2])  # classes over tp
        ep_group, tp_group = (tp, 2 + tp), (2 * ep, 2 * ep + 1)
        kinds = groups(plan, device)
        assert [g for k, g in kinds if k == "all_to_all"] == [ep_group] * 4
        assert ("all_reduce", tp_group) in kinds
        assert {g for _, g in kinds} == {ep_group, tp_group}


@pytest.mark.slow
def test_pipeline_1f1b_ep_tp():
    """pp=2 x ep=2 x tp=2 (8 processes): device = (pp rank * 2 + ep rank) *
    2 + tp rank; the same path as above per stage, with 1F1B."""
    cfg = MoEConfig(dim=8, hidden=8, experts=4, top_k=2, layers=2, classes=4, batch=4)
    plan = run_and_compare(cfg, [piper.place(pp=2), piper.split(2), piper.order(schedule="1f1b"),
                                 piper.expert_parallel(2), piper.tensor_parallel(2)],
                           ranks_per_batch=2 * 2)
    assert set(groups(plan, 7)) == {("all_to_all", (5, 7)), ("all_reduce", (6, 7)),
                                    ("all_reduce", (5, 7))}


@pytest.mark.slow
@pytest.mark.parametrize("zero", [1, 3])
def test_zero_ep_tp(zero):
    """dp=2 x ep=2 x tp=2 with ZeRO over dp (8 processes): stacked experts'
    rows over ep, ZeRO-sharded over the dp group of each (ep, tp) rank."""
    plan = run_and_compare(moe("routed"), [piper.replicate(2), piper.shard(zero),
                                           piper.expert_parallel(2),
                                           piper.tensor_parallel(2, plan={"head.fc": "loss"})],
                           ranks_per_batch=2 * 2)
    kinds = set(groups(plan, 7))
    assert ("reduce_scatter", (3, 7)) in kinds and ("all_to_all", (5, 7)) in kinds


def test_experts_output_split_over_tp():
    """An expert whose output stays split over tp (its last Linear colwise)
    would send shards through expert_parallel's all_to_all: one error."""
    cfg = moe()
    with pytest.raises(PiperError) as e:
        piper.compile(make_moe(cfg), moe_data(cfg), strategy=[
            piper.expert_parallel(2),
            piper.tensor_parallel(2, plan={"layers.*.experts.*.proj": "colwise"})])
    msg = str(e.value)
    assert "directive tensor_parallel(n=2" in msg
    assert ("expert_parallel's all_to_all reads %add_part, a value sharded on dim 1 over tp; "
            "what it exchanges must be whole on every tp rank") in msg
