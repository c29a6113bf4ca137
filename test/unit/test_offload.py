"""piper.offload(optimizer, params, activations): state and activations
in host memory.

Each parity case trains 3 AdamW steps on gloo processes with and without
offload: on a CPU the host is the device and every copy a real copy, so
the runs are bit-identical (every loss, every tensor of the final state).
The cases: optimizer offload with dp=2 ZeRO-1; everything offloaded with a
pp=2 1F1B pipeline under bf16 precision (fp32 masters); parameters and
activations with dp=2 ZeRO-3 (the update on the device); parameters and
activations with tensor_parallel(2) on the GPT example; everything under
DualPipeV (and compiled under interleaved 1F1B and ZB-H1); parameters
and activations with expert_parallel(2) on the MoE example (slow). The plans say where each byte
lives: offloaded, each rank's state moves from device to host memory,
exactly, in the memory estimate and in the simulator (which runs the
copies on their own streams and, with prefetch, hides them behind a
pipeline's compute).
"""

import re

import pytest
import torch
from test_tensor_parallel import MEGATRON_MLP
from xdsl.context import Context

import piper
from examples.gpt import GPTConfig, gpt_data, make_gpt
from examples.mlp import MLPConfig, make_mlp, mlp_data
from examples.moe import MoEConfig, make_moe, moe_data
from piper.analysis.memory import program_peak_bytes, resident_bytes
from piper.analysis.plan_check import programs
from piper.analysis.plan_sim import simulate_plan
from piper.analysis.task_costs import AnalyticCosts
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.directives.strategy import from_json, to_json
from piper.passes.offload import Offload


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(32, 32)
        self.b = torch.nn.Linear(32, 4)

    def forward(self, x, y):
        return torch.nn.functional.mse_loss(self.b(torch.relu(self.a(x))), y)


class TwoStages(MLP):
    def forward(self, x, y):
        with piper.annotate("PP"):
            h = torch.relu(self.a(x))
        with piper.annotate("PP"):
            return torch.nn.functional.mse_loss(self.b(h), y)


def compile_mlp(extra=(), layout=None, model=MLP):
    m = model()
    layout = layout or [piper.place(pp=1), piper.split(2), piper.replicate(2), piper.shard(1)]
    return piper.compile(m, (torch.randn(1, 32), torch.randn(1, 4)),
                         optimizer=torch.optim.AdamW(m.parameters(), lr=1e-2),
                         strategy=[*layout, *extra])


def mlp_batches():
    gen = torch.Generator().manual_seed(3)
    return [{"input0": torch.randn(4, 32, generator=gen),
             "input1": torch.randn(4, 4, generator=gen)} for _ in range(3)]


def assert_bit_identical(plain, off, batches):
    a, b = plain.run(batches, progress=False), off.run(batches, progress=False)
    assert a.losses == b.losses
    assert a.state.keys() == b.state.keys()
    for name, value in a.state.items():
        assert torch.equal(b.state[name], value), name


def assert_all_state_on_the_host(plain, off):
    """Every rank's training state lives in host memory between steps:
    exactly the bytes the plan without offload keeps on the device."""
    for d, p in programs(off.module).items():
        q = programs(plain.module)[d]
        assert resident_bytes(p) == 0 and resident_bytes(q, "host") == 0
        assert resident_bytes(p, "host") == resident_bytes(q) > 0


def test_offloaded_optimizer_trains_bit_identically_and_moves_its_state_to_the_host():
    plain, off = compile_mlp(), compile_mlp([piper.offload(optimizer=True)])
    gen = torch.Generator().manual_seed(3)
    batches = [{"input0": torch.randn(4, 32, generator=gen),
                "input1": torch.randn(4, 4, generator=gen)} for _ in range(3)]
    a, b = plain.run(batches, progress=False), off.run(batches, progress=False)
    assert a.losses == b.losses
    assert a.state.keys() == b.state.keys()
    for name, value in a.state.items():
        assert torch.equal(b.state[name], value), name

    text = off.text()
    assert 'sched.load host "a.weight:exp_avg" shard 0 of 2' in text
    assert 'stream "d2h"' in text and 'stream "h2d"' in text
    assert 'task "0OPT0" stream "host"' in text
    state = {}  # per device: its optimizer state shard and step count, in bytes
    for d, p in programs(off.module).items():
        state[d] = resident_bytes(p, "host")
        q = programs(plain.module)[d]
        assert state[d] == 2 * (32 * 32 + 32 + 32 * 4 + 4) // 2 * 4 + 8  # exp_avg(_sq) + step
        assert resident_bytes(q, "host") == 0 and program_peak_bytes(q, "host") == 0
        assert resident_bytes(p) == resident_bytes(q) - state[d]
        assert program_peak_bytes(p, "host") >= state[d]
        assert program_peak_bytes(p) <= program_peak_bytes(q)

    costs = AnalyticCosts("h100")
    sim_plain = simulate_plan(plain.module, costs, resident=True)
    sim_off = simulate_plan(off.module, costs, resident=True)
    for d in sim_off.devices:
        assert sim_off.peak_mem[d] == sim_plain.peak_mem[d] - state[d]
        assert sim_off.host_peak[d] >= state[d] and sim_plain.host_peak[d] == 0
    copies = [i for i in sim_off.instrs if i.kind == "copy"]
    assert {i.stream for i in copies} == {"d2h", "h2d"}
    # priced on the H100's PCIe Gen5 link (64 GB/s a direction)
    assert all(sim_off.duration[i.id] == pytest.approx(10e-6 + i.bytes / 64e9) for i in copies)


def test_offload_options():
    assert piper.offload().to_dict() == {"directive": "offload"}
    assert piper.offload(params=True, activations=[0]).to_dict() == {
        "directive": "offload", "params": True, "activations": [0]}
    d = from_json('[{"directive": "offload", "params": true, "activations": [0]}]')
    assert d == [piper.offload(params=True, activations=[0])] and from_json(to_json(d)) == d
    for make, message in [
            (lambda: piper.offload(optimizer="yes"), "offload: optimizer must be true or false"),
            (lambda: piper.offload(optimizer=False),
             re.escape("offload: nothing to offload (optimizer, params and activations "
                       "are all false)")),
            (lambda: piper.offload(activations=[]), "offload: activations is an empty list"),
            (lambda: piper.offload(activations="all"),
             "offload: activations must be true, false or a list of stages, got 'all'"),
            (lambda: piper.offload(activations=[-1]),
             r"offload: activations\[0\] must be an integer >= 0, got -1")]:
        with pytest.raises(PiperError, match=message):
            make()
    model = MLP()
    with pytest.raises(PiperError, match="offload: no optimizer call reads optimizer state"):
        piper.compile(model, (torch.randn(1, 32), torch.randn(1, 4)),
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      strategy=[piper.place(pp=1), piper.offload()])
    with pytest.raises(PiperError, match=r"offload: activations: there is no stage 2 "
                                         r"\(stages 0, 1\)"):
        compile_mlp([piper.offload(activations=[2])], [piper.place(pp=2)], TwoStages)


def test_host_memory_budget():
    # rank 0 keeps 4760 B of optimizer state on the host, and during the
    # update also its gradient and parameter shards and their results
    plan = compile_mlp([piper.offload(host_memory=16648)])
    assert 'task "0OPT0" stream "host"' in plan.text()
    with pytest.raises(PiperError, match=r"offload: rank0 needs at least 16648 B of host "
                                         r"memory \(state kept there 4760 B, the step's live "
                                         r"host values at their peak 16648 B\), over "
                                         r"host_memory=16647 B; offload less"):
        compile_mlp([piper.offload(host_memory=16647)])
    assert piper.offload(host_memory=1 << 30).to_dict() == {"directive": "offload",
                                                            "host_memory": 1 << 30}
    for bad, message in [(0, "must be an integer >= 1, got 0"),
                         ("1GiB", "must be an integer >= 1, got '1GiB'"),
                         (True, "must be an integer >= 1, got True"),
                         (1.5, "must be an integer >= 1, got 1.5"),
                         (1 << 61, f"must be at most {1 << 60}, got {1 << 61}")]:
        with pytest.raises(PiperError, match=re.escape(f"offload: host_memory {message}")):
            piper.offload(host_memory=bad)


class Linear(torch.nn.Module):
    """A loss linear in its weight: the backward needs nothing the forward saw."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(4))

    def forward(self, x):
        return (self.w * 2.0).sum() + x.sum()


def test_activations_with_nothing_saved_is_an_error():
    model = Linear()
    with pytest.raises(PiperError, match="offload: activations: no forward task of stage 0 "
                                         "saves a result for its backward"):
        piper.compile(model, (torch.randn(4),), optimizer=torch.optim.SGD(model.parameters()),
                      strategy=[piper.place(pp=1), piper.offload(optimizer=False,
                                                                 activations=True)])

def test_everything_offloaded_with_a_1f1b_pipeline_under_bf16():
    """pp=2 1F1B, 4 microbatches, bf16 compute from fp32 masters: the
    masters, the optimizer state and every stage's saved activations in
    host memory. Stage 0's parameter copy serves its forward and backward
    tasks together (1F1B interleaves them); each saved activation crosses
    the host link twice, priced on the H100's PCIe link; the device peak
    drops; stage 1's update on the host overlaps stage 0's backward."""
    layout = [piper.place(pp=2), piper.split(4), piper.order("1f1b"),
              piper.precision(param="bf16")]
    plain = compile_mlp(layout=layout, model=TwoStages)
    off = compile_mlp([piper.offload(params=True, activations=True)], layout, TwoStages)
    assert_bit_identical(plain, off, mlp_batches())
    assert_all_state_on_the_host(plain, off)
    rank0 = programs(off.module)[0]
    text = str(rank0)
    assert 'sched.load host "a.weight" : tensor<32x32xf32>' in text  # the fp32 master
    assert text.count('sched.copy %a_weight to "device" stream "h2d"') == 1
    saved = [o for o in rank0.body.block.ops if isinstance(o, sched.CopyOp) and o.to_host
             and isinstance(o.value.owner, sched.CallOp) and "F" in o.value.owner.task.data]
    assert len(saved) == 4  # one saved result per forward task
    for d, p in programs(off.module).items():
        assert program_peak_bytes(p) < program_peak_bytes(programs(plain.module)[d])
    sim_plain = simulate_plan(plain.module, AnalyticCosts("h100"), resident=True)
    sim_off = simulate_plan(off.module, AnalyticCosts("h100"), resident=True)
    for d in sim_off.devices:
        assert sim_off.peak_mem[d] < sim_plain.peak_mem[d]
        assert sim_off.host_peak[d] >= resident_bytes(programs(off.module)[d], "host")
    copies = [i for i in sim_off.instrs if i.kind == "copy"]
    assert all(i.bytes > 0 for i in copies)  # resident parameters move all their bytes
    assert all(sim_off.duration[i.id] == pytest.approx(10e-6 + i.bytes / 64e9) for i in copies)
    # stage 1 updates its weights on the host while stage 0 runs its last backward
    task = {i.meta.get("task"): i for i in sim_off.instrs if i.meta.get("task")}
    assert task["1OPT0"].stream == "host"
    assert sim_off.start[task["1OPT0"].id] < sim_off.end[task["0B3"].id]


def test_parameters_and_activations_offloaded_with_zero3():
    """dp=2 ZeRO-3, the optimizer left on the device: each rank's parameter
    shard is loaded into host memory, copied to the device for the
    all_gather that rebuilds the weights and for the update, and the
    updated shard copied back to the host for its store."""
    layout = [piper.place(pp=1), piper.split(2), piper.replicate(2), piper.shard(3)]
    plain = compile_mlp(layout=layout)
    off = compile_mlp([piper.offload(optimizer=False, params=True, activations=True)], layout)
    assert_bit_identical(plain, off, mlp_batches())
    shard = (32 * 32 + 32 + 32 * 4 + 4) // 2 * 4  # each rank's half of the parameters
    for d, p in programs(off.module).items():
        assert resident_bytes(p, "host") == shard
        assert resident_bytes(p) == resident_bytes(programs(plain.module)[d]) - shard
    text = off.text()
    assert 'sched.load host "a.weight" shard 0 of 2 : tensor<512xf32>' in text
    assert 'sched.copy %a_weight_shard to "device" stream "h2d"' in text
    assert 'sched.store "a.weight" shard 0 of 2 %a_weight_OPT0_host' in text


def test_parameters_and_activations_offloaded_with_tensor_parallel_gpt():
    """tensor_parallel(2) with Megatron's MLP split on the GPT example: each
    rank's weight blocks in host memory, the saved activations too."""
    cfg = GPTConfig(layers=1, batch=2)

    def plan(extra):
        model = make_gpt(cfg)
        return piper.compile(model, gpt_data(cfg),
                             optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                             strategy=[piper.tensor_parallel(2, plan=MEGATRON_MLP), *extra])

    plain, off = plan([]), plan([piper.offload(params=True, activations=True)])
    batches = []
    for s in range(3):
        x, y = gpt_data(cfg, seed=50 + s)
        batches.append({"input0": x, "input1": y})
    assert_bit_identical(plain, off, batches)
    assert_all_state_on_the_host(plain, off)


class Deep(torch.nn.Module):
    """Two stages of two 512-wide layers: a stage's forward per microbatch
    takes about as long on an H100 as its input crossing PCIe."""

    def __init__(self):
        super().__init__()
        self.l = torch.nn.ModuleList(torch.nn.Linear(512, 512, bias=False) for _ in range(4))

    def forward(self, x, y):
        with piper.annotate("PP"):
            x = torch.relu(self.l[1](torch.relu(self.l[0](x))))
        with piper.annotate("PP"):
            x = torch.relu(self.l[3](torch.relu(self.l[2](x))))
            return torch.nn.functional.mse_loss(x, y)


def test_a_pipeline_hides_the_activation_copies():
    """pp=2 1F1B, 8 microbatches, recompute: stage 0 keeps each
    microbatch's input for its backward, in host memory. Its copies run on
    their streams; issued ahead (prefetch) they hide behind the pipeline's
    compute and the simulated step equals the plan's without offload on the
    h100 preset, while issued just before the backward they do not."""
    m = Deep()
    plain = piper.compile(m, (torch.randn(256, 512), torch.randn(256, 512)),
                          optimizer=torch.optim.AdamW(m.parameters()),
                          strategy=[piper.place(pp=2), piper.split(8), piper.order("1f1b"),
                                    piper.recompute()])
    costs = AnalyticCosts("h100")
    step = max(simulate_plan(plain.module, costs).end.values())
    times = {}
    for ahead in (0, 2):
        module = plain.module.clone()
        Offload(optimizer=False, activations=True, stages=(0,), prefetch=ahead).apply(
            Context(), module)
        sim = simulate_plan(module, costs)
        copies = [i for i in sim.instrs if i.kind == "copy"]
        assert len(copies) == 16 and {i.device for i in copies} == {0}
        assert {i.stream for i in copies} == {"d2h", "h2d"}
        times[ahead] = max(sim.end.values())
    assert times[2] == pytest.approx(step, rel=1e-3)
    assert times[0] > step * 1.01


SCHEDULES = {
    "interleaved": [piper.place(pp=2), piper.split(4), piper.order(schedule="interleaved")],
    "zb-h1": [piper.split_backward(), piper.place(pp=2), piper.split(4),
              piper.order(schedule="zb-h1")],
}


def test_every_pipeline_schedule_composes():
    """DualPipeV (two chunks a device in opposite directions, backward split
    into I and W tasks) trains bit-identically with everything offloaded;
    interleaved 1F1B and ZB-H1 plans offload every byte of state too
    (their programs pass verify-plan, which compile runs)."""
    cfg = MLPConfig(dim=16, layers=4, classes=8, batch=2)

    def plan(layout, extra=()):
        model = make_mlp(cfg)
        return piper.compile(model, mlp_data(cfg),
                             optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                             strategy=[*layout, *extra])

    everything = [piper.offload(params=True, activations=True)]
    v = [piper.split_backward(), piper.place(pp=2, placement="v"), piper.split(4),
         piper.order(schedule="dualpipe-v")]
    plain, off = plan(v), plan(v, everything)
    per_step = MLPConfig(**{**cfg.__dict__, "batch": cfg.batch * 4})
    batches = [dict(zip(("input0", "input1"), mlp_data(per_step, seed=50 + s), strict=True))
               for s in range(3)]
    assert_bit_identical(plain, off, batches)
    assert_all_state_on_the_host(plain, off)
    for name, layout in SCHEDULES.items():
        p = plan(layout, everything)
        assert all(resident_bytes(q) == 0 for q in programs(p.module).values()), name
        assert 'stream "d2h"' in p.text(), name


@pytest.mark.slow  # ~30 s; the pass has no EP-specific path: the TP and ZeRO-3 cases cover it
def test_parameters_and_activations_offloaded_with_expert_parallel():
    """expert_parallel(2) on the MoE example: each rank's experts (and the
    replicated router) in host memory, the activations around the
    all_to_alls too."""
    cfg = MoEConfig(dim=8, hidden=8, experts=4, top_k=2, layers=1, classes=4, batch=4)

    def plan(extra):
        model = make_moe(cfg)
        return piper.compile(model, moe_data(cfg),
                             optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                             strategy=[piper.expert_parallel(2), *extra])

    plain, off = plan([]), plan([piper.offload(params=True, activations=True)])
    per_step = MoEConfig(**{**cfg.__dict__, "batch": cfg.batch * 2})
    batches = [dict(zip(("input0", "input1"), moe_data(per_step, seed=50 + s), strict=True))
               for s in range(3)]
    assert_bit_identical(plain, off, batches)
    assert_all_state_on_the_host(plain, off)
