"""Overlapped pairs: DualPipeV's `F&B` pairs run interleaved at the sched level.

`order` marks the two tasks of each pair, expert_parallel cuts them into
pieces around their all_to_alls, and overlap-pairs alternates the pieces,
so one task's dispatch and combine travel while the other task computes.
The runtime runs what the programs say (parity: test_moe_routed's
DualPipeV case trains exactly like eager through these programs); here the
programs themselves and the simulator's timeline are checked against the
same schedule written without pairs, and tensor parallelism's pieces
(cut at its all_reduces) are checked to interleave and train like eager.
"""

import torch
from eager import train_eagerly

import piper
from examples.gpt import GPTConfig, gpt_data, make_gpt
from examples.moe import MoEConfig, make_moe, moe_data
from piper.analysis.plan_check import programs
from piper.analysis.plan_sim import rank_step_times, simulate_plan
from piper.analysis.task_costs import UnitCosts
from piper.dialects import sched
from piper.tasks import schedules as S


def _plan(order):
    cfg = MoEConfig(dim=8, hidden=8, experts=4, top_k=2, layers=4, classes=4, batch=4,
                    routing="routed")
    model = make_moe(cfg)
    return piper.compile(model, moe_data(cfg), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         strategy=[piper.split_backward(), piper.place(pp=2, placement="v"),
                                   piper.split(4), order, piper.expert_parallel(2)])


def _calls_while_in_flight(prog) -> int:
    """How many tasks have a call between some collective's start and its wait."""
    started: dict = {}
    count = 0
    for op in prog.body.block.ops:
        if isinstance(op, sched.CollectiveOp):
            started[op.results[0]] = set()
        elif isinstance(op, sched.CallOp):
            for tasks in started.values():
                tasks.add(op.task.data)
        elif isinstance(op, sched.WaitOp) and op.handle in started:
            count += len(started.pop(op.handle))
    return count


def test_dualpipe_v_pairs_hide_the_all_to_alls():
    text = S.dualpipe_v(2, 4).text()
    assert "&" in text
    paired = _plan(piper.order(text=text))
    unpaired = _plan(piper.order(text=text.replace("&", " ")))

    # the same stage functions, in a different order
    def calls(plan, d):
        return sorted(op.task.data + op.callee.root_reference.data
                      for op in programs(plan.module)[d].body.block.ops
                      if isinstance(op, sched.CallOp) and op.task.data[:1].isdigit())
    for d in range(4):
        assert calls(paired, d) == calls(unpaired, d)

    # in the paired programs, the other task of the pair computes while an
    # all_to_all travels; unpaired, each all_to_all is waited for at once
    for d in range(4):
        assert _calls_while_in_flight(programs(paired.module)[d]) > \
            _calls_while_in_flight(programs(unpaired.module)[d])

    # with communication as costly as a piece of compute, the simulated step
    # is shorter, every device's
    costs = UnitCosts(comm=1.0)
    fast = rank_step_times(simulate_plan(paired.module, costs))
    slow = rank_step_times(simulate_plan(unpaired.module, costs))
    assert max(t[0] for t in fast.values()) < max(t[0] for t in slow.values())


def test_tensor_parallel_pieces_of_pairs_train_like_eager():
    """Tensor parallelism cuts tasks at its all_reduces; under DualPipeV the
    pairs' pieces interleave too (0F3's pieces alternate with 3I1's) and
    training stays exactly eager's."""
    cfg = GPTConfig(layers=4, tied=False)
    model, reference = make_gpt(cfg), make_gpt(cfg)
    reference.load_state_dict(model.state_dict())
    plan = piper.compile(model, gpt_data(cfg), optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                         strategy=[piper.split_backward(), piper.place(pp=2, placement="v"),
                                   piper.split(4), piper.order("dualpipe-v"),
                                   piper.tensor_parallel(2)])
    prog = programs(plan.module)[0]
    assert _calls_while_in_flight(prog) > 0
    tasks = [op.task.data for op in prog.body.block.ops if isinstance(op, sched.CallOp)]
    i = tasks.index("0F3")
    assert tasks[i:i + 4] == ["0F3", "3I1", "0F3", "3I1"]

    batches = []
    for s in range(3):
        x, y = gpt_data(GPTConfig(layers=4, tied=False, batch=cfg.batch * 4), seed=10 + s)
        batches.append({"idx": x, "targets": y})
    result = plan.run(batches, progress=False)
    losses = train_eagerly(reference, batches, torch.optim.AdamW(reference.parameters(), lr=1e-2),
                           lambda m, b: sum(m(x, y) for x, y in zip(b["idx"].split(cfg.batch),
                                                                    b["targets"].split(cfg.batch))
                                            ) / 4)
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=1e-6)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(result.state[name], p.detach(), rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")
