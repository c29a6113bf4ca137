"""Every named schedule compiles to verified per-device programs.

For each schedule, pp in {2, 4, 8} and microbatches in {pp, 2pp, 4pp}: a
captured MLP with the right number of PP regions goes through the whole
directive pipeline down to sched programs and verify-plan; then every
(stage, microbatch) has exactly one F and one B (or one I and one W) over
all programs, and each rank runs its tasks in the schedule's order.
Bad strategies end in one error naming the directive.
"""

import collections
import functools
import re

import pytest
import torch

import piper
from examples.mlp import MLPConfig, make_mlp, mlp_data
from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.directives.strategy import compile_plan
from piper.dialects import sched
from piper.tasks import schedules as S

SCHEDULES = {  # name -> (chunks per device, split backward, placement)
    "gpipe": (1, False, "loop"),
    "1f1b": (1, False, "loop"),
    "interleaved": (2, False, "loop"),
    "zb-h1": (1, True, "loop"),
    "dualpipe-v": (2, True, "v"),
}


@functools.cache
def captured(layers: int):
    cfg = MLPConfig(dim=4, layers=layers, classes=4, batch=2)
    model = make_mlp(cfg)
    return piper.capture(model, mlp_data(cfg), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def strategy(name, pp, mb):
    chunks, split_bw, placement = SCHEDULES[name]
    out = [piper.place(pp=pp, placement=placement), piper.split(mb), piper.order(schedule=name)]
    return ([piper.split_backward()] if split_bw else []) + out


CASES = [(name, pp, mb) for name in SCHEDULES for pp in (2, 4, 8) for mb in (pp, 2 * pp, 4 * pp)]


@pytest.mark.parametrize("name,pp,mb", CASES)
def test_schedule_plan_verifies_and_covers_every_task(name, pp, mb):
    chunks, split_bw, _ = SCHEDULES[name]
    module = captured(pp * chunks).module.clone()
    compile_plan(module, strategy(name, pp, mb))  # ends with verify-plan
    progs = programs(module)
    assert sorted(progs) == list(range(pp))
    count = collections.Counter()
    for prog in progs.values():
        for op in prog.body.block.ops:
            if isinstance(op, sched.CallOp) and "OPT" not in op.task.data:
                count[op.task.data] += 1
    stages = pp * chunks
    kinds = "FIW" if split_bw else "FB"
    expected = {f"{s}{k}{m}" for s in range(stages) for k in kinds for m in range(mb)}
    assert set(count) == expected
    assert all(v == 1 for v in count.values())
    # each rank runs its tasks in the schedule's order
    want = S.for_plan(name, pp, mb, stages, split_backward=split_bw)
    for r, prog in progs.items():
        got = [op.task.data for op in prog.body.block.ops
               if isinstance(op, sched.CallOp) and "OPT" not in op.task.data
               and op.task.data not in ("pack", "unpack")]
        # a full backward (B) of a split plan runs as its I then its W
        expected_order = [x for a in want.orders[r] for x in (
            [f"{a.stage}I{a.mb}", f"{a.stage}W{a.mb}"] if a.kind == "B" and split_bw else [str(a)])]
        assert got == expected_order, f"rank {r}"


@pytest.mark.parametrize("pp", [2, 4])
def test_explicit_order_plan_verifies_and_follows_the_text(pp):
    """A user's order (all forwards then all backwards on every rank but
    the last, which alternates) compiles to programs that run each rank's
    tasks exactly as written."""
    mb = 2 * pp
    orders = {}
    for r in range(pp):
        fwd = [f"{r}F{i}" for i in range(mb)]
        bwd = [f"{r}B{i}" for i in range(mb)]
        orders[r] = [x for pair in zip(fwd, bwd) for x in pair] if r == pp - 1 else fwd + bwd
    text = "; ".join(f"rank{r}: " + " ".join(o) for r, o in orders.items())
    module = captured(pp).module.clone()
    compile_plan(module, [piper.place(pp=pp), piper.split(mb), piper.order(text=text)])
    for r, prog in programs(module).items():
        got = [op.task.data for op in prog.body.block.ops
               if isinstance(op, sched.CallOp) and "OPT" not in op.task.data]
        assert got == orders[r], f"rank {r}"


def test_dualpipe_v_with_one_chunk_per_device_is_refused():
    module = captured(2).module.clone()
    with pytest.raises(PiperError, match=r"directive order\(schedule='dualpipe-v'\): schedule: "
                                          r"'dualpipe-v' needs 2 chunks per device; the plan has 1"):
        compile_plan(module, [piper.split_backward(), piper.place(pp=2), piper.split(4),
                              piper.order(schedule="dualpipe-v")])


def test_dualpipe_v_needs_the_v_placement():
    module = captured(4).module.clone()
    with pytest.raises(PiperError, match="'dualpipe-v' puts stage 2 on rank 1, the plan has it on rank 0"):
        compile_plan(module, [piper.split_backward(), piper.place(pp=2), piper.split(4),
                              piper.order(schedule="dualpipe-v")])


def test_interleaved_with_one_chunk_per_device_is_refused():
    module = captured(4).module.clone()
    with pytest.raises(PiperError, match=r"directive order\(schedule='interleaved'\): schedule: "
                                          r"'interleaved' needs at least 2 stages per device; "
                                          r"the plan has 1"):
        compile_plan(module, [piper.place(pp=4), piper.split(4), piper.order(schedule="interleaved")])


@pytest.mark.parametrize("name", ["zb-h1", "dualpipe-v"])
def test_split_backward_schedules_need_split_backward(name):
    chunks, _, placement = SCHEDULES[name]
    module = captured(2 * chunks).module.clone()
    with pytest.raises(PiperError, match=rf"directive order\(schedule='{name}'\): schedule: "
                                          rf"'{name}' schedules input-grad \(I\) and weight-grad "
                                          r"\(W\) tasks; the plan's backwards are not split \(add "
                                          r"split_backward\(\) to the strategy\)"):
        compile_plan(module, [piper.place(pp=2, placement=placement), piper.split(4),
                              piper.order(schedule=name)])


def test_interleaved_microbatches_must_divide():
    module = captured(8).module.clone()
    with pytest.raises(PiperError, match=r"directive order\(schedule='interleaved'\).*\(6\).*pp \(4\)"):
        compile_plan(module, [piper.place(pp=4), piper.split(6), piper.order(schedule="interleaved")])


def test_stages_that_do_not_divide_over_pp():
    module = captured(3).module.clone()
    with pytest.raises(PiperError, match=r"directive place\(pp=2.*3 stages do not divide over pp=2"):
        compile_plan(module, [piper.place(pp=2), piper.split(2)])


def test_explicit_order_that_deadlocks_names_devices():
    module = captured(2).module.clone()
    text = "rank0: 0F0 0B0 0F1 0B1\nrank1: 1F1 1B1 1F0 1B0"
    with pytest.raises(PiperError) as e:
        compile_plan(module, [piper.place(pp=2), piper.split(2), piper.order(text=text)])
    assert re.search(r"schedule deadlocks: device 0 at 0B0 waits for 1B0; device 1 at 1F1 waits for 0F1",
                     e.value.render())


def test_strategy_as_json_round_trips_and_compiles():
    from piper.directives.strategy import from_json, to_json

    ds = strategy("1f1b", 2, 4)
    assert from_json(to_json(ds)) == ds
    module = captured(2).module.clone()
    compile_plan(module, from_json(to_json(ds)))
    with pytest.raises(PiperError, match="entry 0 must be an object"):
        from_json('[{"directive": "nope"}]')
