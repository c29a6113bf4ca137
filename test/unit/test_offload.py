"""piper.offload(optimizer=True): optimizer state in host memory.

An MLP trains 3 AdamW steps on 2 gloo processes (dp=2, ZeRO-1, 2
microbatches) with and without offload: on a CPU the host is the device
and every copy a real copy, so the two runs are bit-identical. The plans
say where each byte lives: offloaded, each rank's optimizer state shard
(and step count) moves from device to host memory, exactly, in the memory
estimate and in the simulator (which runs the copies on their own streams).
"""

import pytest
import torch

import piper
from piper.analysis.memory import program_peak_bytes, resident_bytes
from piper.analysis.plan_check import programs
from piper.analysis.plan_sim import simulate_plan
from piper.analysis.task_costs import AnalyticCosts
from piper.diagnostics import PiperError


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(32, 32)
        self.b = torch.nn.Linear(32, 4)

    def forward(self, x, y):
        return torch.nn.functional.mse_loss(self.b(torch.relu(self.a(x))), y)


def compile_mlp(extra=()):
    model = MLP()
    return piper.compile(model, (torch.randn(1, 32), torch.randn(1, 4)),
                         optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                         strategy=[piper.place(pp=1), piper.split(2), piper.replicate(2),
                                   piper.shard(1), *extra])


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
    with pytest.raises(PiperError, match="offload: params=True is not supported yet"):
        piper.offload(params=True)
    with pytest.raises(PiperError, match="offload: optimizer must be true or false"):
        piper.offload(optimizer="yes")
    model = MLP()
    with pytest.raises(PiperError, match="offload: no optimizer call reads optimizer state"):
        piper.compile(model, (torch.randn(1, 32), torch.randn(1, 4)),
                      optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      strategy=[piper.place(pp=1), piper.offload()])
