"""Event simulator, cost model, and schedule closed forms.

Bubble, everywhere below: a device's idle compute time divided by the step
time (the end of the last instruction), the same on every device for these
schedules. Communication is free unless a test says otherwise.
"""

import dataclasses
import json

import pytest

from piper.analysis import cost_model as C
from piper.analysis.simulator import (SimInstr, plot_memory, plot_timeline, schedule_instrs,
                                      simulate, simulate_schedule, summary_table,
                                      to_chrome_trace)
from piper.diagnostics import PiperError
from piper.tasks import schedules as S

GRID = [(p, m) for p in (2, 4, 8) for m in (p, 2 * p, 4 * p)]
FB = {"F": 1, "B": 2}            # F/B-only schedules: B = 2F
FIW = {"F": 1, "I": 1, "W": 1}   # split schedules: F = I = W (so a full B = 2)


# ------------------------------------------------------------ closed forms

@pytest.mark.parametrize("p,m", GRID)
@pytest.mark.parametrize("make", [S.gpipe, S.one_f_one_b], ids=["gpipe", "1f1b"])
@pytest.mark.parametrize("costs", [FB, {"F": 1, "B": 1}], ids=["F1B2", "F1B1"])
def test_gpipe_and_1f1b_bubble(make, p, m, costs):
    r = simulate_schedule(make(p, m), costs)
    unit = costs["F"] + costs["B"]
    assert r.step_time == pytest.approx((m + p - 1) * unit)
    for d in r.devices:
        assert r.busy[d] == pytest.approx(m * unit)
        assert r.bubble[d] == pytest.approx((p - 1) / (m + p - 1), abs=1e-12)


@pytest.mark.parametrize("p,m", GRID)
@pytest.mark.parametrize("v", [2, 3])
def test_interleaved_bubble(p, m, v):
    # F=1, B=2 per chunk (a chunk is 1/v of a rank's layers)
    r = simulate_schedule(S.interleaved_1f1b(p, m, v), FB)
    for d in r.devices:
        assert r.bubble[d] == pytest.approx((p - 1) / (v * m + p - 1), abs=1e-12)


@pytest.mark.parametrize("p,m", GRID)
def test_zb_h1_bubble_is_a_third_of_1f1b(p, m):
    # F = I = W = 1; 1F1B runs the same work with B = I + W = 2.
    zb = simulate_schedule(S.zb_h1(p, m), FIW)
    base = simulate_schedule(S.one_f_one_b(p, m), FB)
    F, B, W = 1, 2, 1
    for d in zb.devices:
        # ZB1P row of DualPipe's comparison table: (PP-1)(F+B-2W); 1F1B: (PP-1)(F+B)
        assert zb.bubble_time(d) == pytest.approx((p - 1) * (F + B - 2 * W))
        assert base.bubble_time(d) == pytest.approx((p - 1) * (F + B))
        assert 0.30 <= zb.bubble_time(d) / base.bubble_time(d) <= 0.37
    # and it keeps 1F1B's peak of p activations in flight
    assert max(zb.peak_mem.values()) == max(base.peak_mem.values()) == min(p, m)


@pytest.mark.parametrize("p,m", [(p, m) for p, m in GRID if m >= 2 * p])
def test_dualpipe_v_bubble_and_memory(p, m):
    # DualPipe README (deepseek-ai/DualPipe), "Pipeline Bubbles and Memory
    # Usage Comparison", row DualPipeV, with PP = 2p stages on p devices:
    #   bubble (PP/2 - 1)(F&B + B - 3W),  activation per device PP + 1 chunks.
    # F, B, W are per chunk; F&B is an overlapped pair, here F + B (overlap
    # hides communication, not compute). With F = I = W = 1: B = 2, F&B = 3.
    F, B, W = 1, 2, 1
    FandB = F + B
    PP = 2 * p
    r = simulate_schedule(S.dualpipe_v(p, m), FIW)
    for d in r.devices:
        assert r.busy[d] == pytest.approx(2 * m * (F + B))
        assert r.bubble_time(d) == pytest.approx((PP / 2 - 1) * (FandB + B - 3 * W))
        # act_bytes=1 per (stage, microbatch): peak counts chunk activations
        assert r.peak_mem[d] <= PP + 1
    assert max(r.peak_mem.values()) == PP + 1
    # a DualPipeV chunk is half a 1F1B stage: PP+1 chunks = p + 1/2 stages,
    # within p+1 stage-sized activations, about 1F1B's p on its first rank
    assert max(r.peak_mem.values()) / 2 <= p + 1


@pytest.mark.parametrize("p,m", GRID)
def test_1f1b_holds_p_activations_gpipe_holds_m(p, m):
    one = simulate_schedule(S.one_f_one_b(p, m), FB)
    gp = simulate_schedule(S.gpipe(p, m), FB)
    assert one.peak_mem[0] == min(p, m)
    assert gp.peak_mem[0] == m
    assert all(one.peak_mem[d] == min(p - d, m) for d in one.devices)


def test_overlapped_pair_cost():
    s = S.dualpipe_v(2, 4)
    serial = simulate_schedule(s, FIW)
    faster = simulate_schedule(s, {**FIW, "F&B": 2.5})
    assert faster.step_time < serial.step_time
    pairs = [i for i in schedule_instrs(s, {**FIW, "F&B": 2.5}) if "pair" in i.meta]
    assert pairs and all(i.duration in (2.5 / 3, 5.0 / 3) for i in pairs)
    # the two halves of a pair start back to back, the second right after the first
    for a, b in zip(pairs[::2], pairs[1::2]):
        assert faster.start[b.id] == pytest.approx(faster.end[a.id])


def test_comm_delays_cross_rank_edges():
    c = 0.25
    s = S.one_f_one_b(2, 1)
    r = simulate_schedule(s, FB, comm=c)
    # 0F0 [0,1], send [1,1+c], 1F0, 1B0 [1+c, 4+c], send back, 0B0 [4+2c, 6+2c]
    assert r.step_time == pytest.approx(6 + 2 * c)
    assert r.start["1F0"] == pytest.approx(1 + c)
    assert {i.stream for i in r.instrs if i.kind == "send"} == {"comm"}
    # comm streams do not count as busy compute
    assert r.busy[0] == pytest.approx(3)


def test_optimizer_step_and_split_memory():
    s = S.zb_h1(2, 2)
    r = simulate_schedule(s, {**FIW, "OPT": 0.5}, act_bytes=100, act_kept_for_w=0.25)
    # each rank ends with its optimizer step, right after its last action
    for d in r.devices:
        last = str(s.orders[d][-1])
        assert r.start[f"OPT{d}"] == pytest.approx(r.end[last])
        assert r.end[f"OPT{d}"] == pytest.approx(r.end[last] + 0.5)
    assert r.step_time == pytest.approx(max(r.end[f"OPT{d}"] for d in r.devices))
    # I releases 75 of 100 bytes, W the last 25: memory returns to zero
    for d in r.devices:
        assert r.mem_series[d][-1][1] == 0
    i0 = next(i for i in r.instrs if i.id == "0I0")
    assert i0.mem_free_bytes == 75


# ------------------------------------------------------------ the simulator

def test_streams_deps_and_order():
    prog = [
        SimInstr("a", 0, "F", 2.0),
        SimInstr("b", 0, "F", 1.0),                                 # after a: same stream
        SimInstr("c", 0, "all_reduce", 1.5, stream="comm", deps=["a"]),  # concurrent with b
        SimInstr("d", 1, "F", 1.0, deps=["c"]),
    ]
    r = simulate(prog)
    assert (r.start["b"], r.end["b"]) == (2.0, 3.0)
    assert (r.start["c"], r.end["c"]) == (2.0, 3.5)
    assert (r.start["d"], r.end["d"]) == (3.5, 4.5)
    assert r.step_time == 4.5
    assert r.busy == {0: 3.0, 1: 1.0}
    assert r.bubble[0] == pytest.approx(1.5 / 4.5)
    assert r.streams == {0: ["compute", "comm"], 1: ["compute"]}


def test_rendezvous_completes_together():
    prog = [
        SimInstr("f0", 0, "F", 1.0),
        SimInstr("send", 0, "send", 0.5, stream="comm", deps=["f0"], group="x", peer=1),
        SimInstr("busy1", 1, "F", 3.0),
        SimInstr("recv", 1, "recv", 0.5, deps=["busy1"], group="x", peer=0),
        SimInstr("f1", 1, "F", 1.0, deps=["recv"]),
    ]
    r = simulate(prog)
    assert r.start["send"] == 1.0 and r.start["recv"] == 3.0       # the send waits
    assert r.end["send"] == r.end["recv"] == 3.5
    assert r.transfer_start("send") == 3.0
    assert r.start["f1"] == 3.5
    ev = [e for e in to_chrome_trace(r)["traceEvents"] if e.get("args", {}).get("id") == "send"]
    assert ev[0]["args"]["wait"] == pytest.approx(2.0)


def test_collective_uses_cost_model_for_its_group():
    spec = C.PRESETS["h100"]
    n, nbytes = 4, 1e9
    prog = [SimInstr(f"f{d}", d, "F", float(d)) for d in range(n)]
    prog += [SimInstr(f"ar{d}", d, "all_reduce", None, deps=[f"f{d}"], group="g", bytes=nbytes)
             for d in range(n)]
    r = simulate(prog, C.CostModel("h100"))
    want = 2 * (n - 1) * spec.intra_latency + 2 * (n - 1) / n * nbytes / spec.intra_bw
    assert r.end["ar0"] == pytest.approx(3.0 + want)
    assert len({r.end[f"ar{d}"] for d in range(n)}) == 1


def test_memory_allocs_frees_and_series():
    prog = [
        SimInstr("a", 0, "F", 1.0, mem_alloc_bytes=10),
        SimInstr("b", 0, "F", 1.0, mem_alloc_bytes=5),
        SimInstr("c", 0, "B", 1.0, frees=["a"]),
        SimInstr("d", 0, "B", 1.0, mem_free_bytes=5),
    ]
    r = simulate(prog, base_mem={0: 100})
    assert r.peak_mem[0] == 115
    assert r.mem_series[0] == [(0.0, 110), (1.0, 115), (3.0, 105), (4.0, 100)]


def test_free_at_same_time_comes_before_alloc():
    prog = [SimInstr("a", 0, "F", 1.0, mem_alloc_bytes=10, mem_free_bytes=10),
            SimInstr("b", 0, "F", 1.0, mem_alloc_bytes=10)]
    assert simulate(prog).peak_mem[0] == 10


@pytest.mark.parametrize("prog,msg", [
    ([SimInstr("a", 0, "F", 1.0), SimInstr("a", 0, "F", 1.0)], r"two instructions named 'a'"),
    ([SimInstr("a", 0, "F", 1.0, deps=["zz"])], r"unknown instruction 'zz'"),
    ([SimInstr("a", 0, "F", 1.0, mem_alloc_bytes=1), SimInstr("b", 1, "B", 1.0, frees=["a"])],
     r"frees a, allocated on device 0"),
    ([SimInstr("a", 0, "F", None)], r"no duration, flops or bytes"),
])
def test_simulate_input_errors(prog, msg):
    with pytest.raises(PiperError, match=msg):
        simulate(prog)


def test_simulate_reports_deadlock():
    # each device receives before it sends: a classic cycle through the groups
    prog = [
        SimInstr("r0", 0, "recv", 1.0, group="g10", peer=1),
        SimInstr("s0", 0, "send", 1.0, group="g01", peer=1),
        SimInstr("r1", 1, "recv", 1.0, group="g01", peer=0),
        SimInstr("s1", 1, "send", 1.0, group="g10", peer=0),
    ]
    with pytest.raises(PiperError) as e:
        simulate(prog)
    msg = str(e.value)
    assert "programs deadlock" in msg
    assert "device 0 stream compute at r0 waits in group g10 for s1 (device 1)" in msg
    assert "device 1 stream compute at r1 waits in group g01 for s0 (device 0)" in msg


def test_cost_model_formulas():
    h = C.PRESETS["h100"]
    assert C.compute_time(2 * h.peak_flops, 0, "h100") == pytest.approx(2.0)
    assert C.compute_time(0, h.mem_bw, "h100") == pytest.approx(1.0)   # memory bound
    assert C.compute_time(h.peak_flops, 0, "h100", efficiency=0.5) == pytest.approx(2.0)
    assert C.p2p_time(1e9, "h100", (0, 1)) == pytest.approx(h.intra_latency + 1e9 / h.intra_bw)
    assert C.p2p_time(1e9, "h100", (0, 8)) == pytest.approx(h.inter_latency + 1e9 / h.inter_bw)
    n, b = 8, 8e9
    ar = C.collective_time("all_reduce", b, range(n), "h100")
    rs = C.collective_time("reduce_scatter", b, range(n), "h100")
    ag = C.collective_time("all_gather", b, range(n), "h100")
    assert ar == pytest.approx(2 * (n - 1) * h.intra_latency + 2 * (n - 1) / n * b / h.intra_bw)
    assert ar == pytest.approx(rs + ag)          # ring all-reduce = reduce-scatter + all-gather
    cross = C.collective_time("all_reduce", b, range(16), "h100")
    assert cross > ar                             # spans two nodes: inter-node link
    assert C.collective_time("all_reduce", b, [3], "h100") == 0.0
    assert C.PRESETS["h200"].mem_bw > h.mem_bw and C.PRESETS["cpu"].peak_flops < h.peak_flops
    with pytest.raises(PiperError, match="unknown device 'tpu'"):
        C.device_spec("tpu")
    with pytest.raises(PiperError, match="unknown collective 'gossip'"):
        C.collective_time("gossip", 1, range(2), "h100")


def test_measured_collectives_and_shared_cores():
    """A spec's measured collectives replace the ring's formula for the kinds
    and group sizes measured within a node; host_cores stretches compute."""
    cpu = C.PRESETS["cpu"]
    spec = dataclasses.replace(cpu, collectives=C.measured_collectives(
        {("all_reduce", 2): (1e-3, 1e9), ("reduce_scatter", "4"): (2e-3, 5e8)}), host_cores=2)
    assert C.collective_time("all_reduce", 1e6, (0, 1), spec) == pytest.approx(1e-3 + 1e-3)
    assert C.collective_time("reduce_scatter", 1e6, range(4), spec) == pytest.approx(4e-3)
    # not measured: the ring over the link, as without measurements
    for kind, n in (("all_reduce", 4), ("all_gather", 2)):
        assert C.collective_time(kind, 1e6, range(n), spec) == \
            C.collective_time(kind, 1e6, range(n), cpu)
    assert C.core_share(spec, 4) == 2.0 and C.core_share(spec, 2) == 1.0
    assert C.core_share(cpu, 64) == 1.0                  # no host_cores: a core per device
    with pytest.raises(PiperError, match="unknown collective 'gossip'"):
        C.measured_collectives({("gossip", 2): (1.0, 1.0)})
    # a collective compute cannot hide holds the host for its unhidden part
    dp = _plan("1f1b", 2, 4, (piper.replicate(2),))
    for hidden in (1.0, 0.25):
        ins = plan_instrs(dp, AnalyticCosts(dataclasses.replace(cpu, comm_overlap=hidden)))
        by_id = {i.id: i for i in ins}
        held = [i for i in ins if i.kind == "comm_cpu"]
        colls = [i for i in ins if i.kind == "all_reduce"]
        assert colls and len(held) == (0 if hidden == 1.0 else len(colls))
        for h in held:
            coll = by_id[h.id.removesuffix(":cpu")]
            assert h.stream == "compute" and h.device == coll.device
            assert h.duration == pytest.approx(0.75 * coll.duration)
    # a 2-device plan on one shared core: every compute duration doubles
    module = _plan("1f1b", 2, 4)
    alone = AnalyticCosts(cpu)
    shared = AnalyticCosts(dataclasses.replace(cpu, host_cores=1))
    a, b = plan_instrs(module, alone), plan_instrs(module, shared)
    for x, y in zip(a, b, strict=True):
        if x.stream == "compute" and x.duration:
            assert y.duration == pytest.approx(2 * x.duration)
        else:
            assert y.duration == x.duration


def test_compute_duration_from_flops():
    h = C.PRESETS["h200"]
    r = simulate([SimInstr("mm", 0, "F", None, flops=h.peak_flops * 0.01, bytes=1.0)],
                 C.CostModel("h200"))
    assert r.step_time == pytest.approx(0.01)


# ------------------------------------------------------------ exports

def test_chrome_trace_structure():
    r = simulate_schedule(S.one_f_one_b(2, 2), FB, comm=0.5)
    tr = json.loads(json.dumps(to_chrome_trace(r)))
    ev = tr["traceEvents"]
    procs = {e["pid"]: e["args"]["name"] for e in ev if e["name"] == "process_name"}
    assert procs == {0: "device 0", 1: "device 1"}
    threads = {(e["pid"], e["args"]["name"]) for e in ev if e["name"] == "thread_name"}
    assert threads == {(0, "compute"), (0, "comm"), (1, "compute"), (1, "comm")}
    xs = [e for e in ev if e["ph"] == "X"]
    assert len(xs) == len(r.instrs) == 8 + 4
    by = {e["args"]["id"]: e for e in xs}
    assert by["1B1"]["ts"] == pytest.approx(r.start["1B1"] * 1e6)
    assert by["1B1"]["dur"] == pytest.approx(2e6)
    assert by["1B1"]["cat"] == "B" and by["1B1"]["args"]["mb"] == 1
    assert {e["ph"] for e in ev} == {"M", "X", "C"}
    assert max(e["args"]["bytes"] for e in ev if e["ph"] == "C") == 2


def test_plots_and_summary(tmp_path):
    r = simulate_schedule(S.dualpipe_v(2, 4), FIW, comm=0.2)
    png, svg, mem = tmp_path / "t.png", tmp_path / "t.svg", tmp_path / "m.png"
    plot_timeline(r, png)
    plot_timeline(r, svg, title="dualpipe_v")
    plot_memory(r, mem)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert b"<svg" in svg.read_bytes()[:2000] and b"dualpipe_v" in svg.read_bytes()
    assert mem.read_bytes()[:4] == b"\x89PNG" and mem.stat().st_size > 5000
    table = summary_table(r)
    assert table.splitlines()[0].startswith(f"step time {r.step_time:g}")
    assert len(table.splitlines()) == 2 + len(r.devices)
    assert f"{100 * r.bubble[1]:.1f}%" in table.splitlines()[3]


# ------------------------------------------------------------ compiled plans
#
# The same questions asked of real sched programs: an MLP captured with one
# PP region per stage goes through the directive pipeline to per-device
# programs, which piper.analysis.plan_sim simulates instruction by
# instruction (calls, sums, loads, frees on the compute stream; messages and
# collectives on the comm stream).

import functools  # noqa: E402

import torch  # noqa: E402

import piper  # noqa: E402
from examples.mlp import MLPConfig, make_mlp, mlp_data  # noqa: E402
from piper.analysis.memory import program_peak_bytes  # noqa: E402
from piper.analysis.op_work import aten_work, function_work, op_works  # noqa: E402
from piper.analysis.plan_check import programs  # noqa: E402
from piper.analysis.plan_sim import plan_instrs, rank_step_times, simulate_plan  # noqa: E402
from piper.analysis.profile import ProfiledCosts  # noqa: E402
from piper.analysis.task_costs import AnalyticCosts, UnitCosts, cost_source  # noqa: E402
from piper.directives.strategy import compile_plan  # noqa: E402
from piper.dialects import sched  # noqa: E402
from piper.ir import parse_module  # noqa: E402

PLAN_SCHEDULES = {  # name -> (chunks per device, split backward, placement)
    "gpipe": (1, False, "loop"), "1f1b": (1, False, "loop"),
    "interleaved": (2, False, "loop"), "zb-h1": (1, True, "loop"),
    "dualpipe-v": (2, True, "v"),
}


@functools.cache
def _captured(layers: int, dim: int = 4):
    cfg = MLPConfig(dim=dim, layers=layers, classes=4, batch=2)
    model = make_mlp(cfg)
    return piper.capture(model, mlp_data(cfg),
                         optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


@functools.cache
def _plan(name: str, p: int, m: int, extra: tuple = ()):
    chunks, split_bw, placement = PLAN_SCHEDULES[name]
    module = _captured(p * chunks).module.clone()
    strategy = ([piper.split_backward()] if split_bw else []) + [
        piper.place(pp=p, placement=placement), piper.split(m), *extra,
        piper.order(schedule=name)]
    return compile_plan(module, strategy)


@pytest.mark.parametrize("name", ["gpipe", "1f1b", "interleaved", "zb-h1"])
@pytest.mark.parametrize("p,m", [(2, 4), (4, 8)])
def test_compiled_plans_meet_the_closed_forms(name, p, m):
    # unit costs (F=1, I=W=1, B=2, all else free) and buffered sends: the
    # compiled programs, with their sums, loads, waits and frees, idle
    # exactly as the schedule's closed form says
    r = simulate_plan(_plan(name, p, m), UnitCosts(), p2p="eager")
    v = PLAN_SCHEDULES[name][0]
    for d in r.devices:
        assert r.busy[d] == pytest.approx(3 * m * v)
        if name == "zb-h1":
            assert r.bubble_time(d) == pytest.approx((p - 1) * (1 + 2 - 2 * 1))
        else:
            assert r.bubble[d] == pytest.approx((p - 1) / (v * m + p - 1), abs=1e-12)


def test_zb_h1_plan_keeps_a_third_of_1f1b_bubble():
    zb = simulate_plan(_plan("zb-h1", 4, 8), UnitCosts(), p2p="eager")
    one = simulate_plan(_plan("1f1b", 4, 8), UnitCosts(), p2p="eager")
    for d in zb.devices:
        assert zb.bubble_time(d) / one.bubble_time(d) == pytest.approx(1 / 3)


@pytest.mark.parametrize("name,p,m", [("gpipe", 4, 8), ("1f1b", 4, 8), ("interleaved", 2, 4),
                                      ("zb-h1", 2, 4), ("dualpipe-v", 2, 4)])
def test_rendezvous_sends_never_beat_buffered_ones(name, p, m):
    # gloo's isend completes only when the peer posted its irecv: a sender
    # can stall at a send's wait. GPipe and 1F1B lose nothing to it.
    sync = simulate_plan(_plan(name, p, m), UnitCosts())
    eager = simulate_plan(_plan(name, p, m), UnitCosts(), p2p="eager")
    assert sync.step_time >= eager.step_time
    if name in ("gpipe", "1f1b"):
        assert sync.step_time == eager.step_time == 3 * (m + p - 1)


def _saved_bytes(module, fn_name: str) -> int:
    """Bytes of a stage function's results kept for its backward."""
    from xdsl.dialects import func as func_d

    from piper.analysis.op_work import tensor_bytes
    fn = next(o for o in module.body.block.ops
              if isinstance(o, func_d.FuncOp) and o.sym_name.data == fn_name)
    return sum(tensor_bytes(t) for t, a in zip(fn.function_type.outputs.data, fn.res_attrs.data)
               if a.data["graph.kind"].data == "saved")


@pytest.mark.parametrize("p", [2, 4])
def test_plan_activation_memory_1f1b_p_gpipe_m(p):
    # On the first stage, GPipe holds the saved activations of all m
    # microbatches, 1F1B of at most p: its peak does not grow with m.
    peaks = {}
    for name in ("gpipe", "1f1b"):
        for m in (2 * p, 4 * p):
            r = simulate_plan(_plan(name, p, m), UnitCosts())
            peaks[name, m] = r.peak_of(0, "activations")
    saved = _saved_bytes(_plan("gpipe", p, 2 * p), "F0")
    assert saved > 0
    transient = peaks["gpipe", 2 * p] - 2 * p * saved     # what is in flight besides
    assert peaks["gpipe", 4 * p] == transient + 4 * p * saved
    assert peaks["1f1b", 2 * p] == peaks["1f1b", 4 * p] == transient + p * saved


@pytest.mark.parametrize("strategy", [
    (piper.place(pp=2), piper.split(4), piper.order(schedule="1f1b")),
    (piper.place(pp=1), piper.replicate(2), piper.split(2)),
    (piper.place(pp=2), piper.split(2), piper.replicate(2), piper.shard(1),
     piper.order(schedule="gpipe")),
    (piper.place(pp=1), piper.replicate(2), piper.shard(3)),
], ids=["pp", "dp", "pp-dp-zero1", "zero3"])
def test_plan_memory_matches_the_runtime_accounting(strategy):
    module = _captured(2).module.clone()
    compile_plan(module, list(strategy))
    r = simulate_plan(module, AnalyticCosts("h100"))
    for d, prog in programs(module).items():
        assert r.peak_mem[d] == program_peak_bytes(prog)
        assert sum(r.peak_breakdown[d].values()) == r.peak_mem[d]
        assert r.mem_series[d][-1][1] == 0          # everything is freed by the end
        assert r.peak_of(d, "params") > 0 and r.peak_of(d, "grads") > 0


def test_zero3_reshard_after_forward_lowers_the_peak():
    """ZeRO-3 that reshards after the forward keeps no full parameter (nor a
    transposed copy) from a forward to its backward: a lower peak than
    keeping them, at the same loss-side plan, on a GPT whose forward saves
    transposed weights."""
    from examples.gpt import GPTConfig, gpt_data, make_gpt

    cfg = GPTConfig(vocab=32, seq=8, dim=32, heads=2, layers=2, batch=2)
    model = make_gpt(cfg)
    step = piper.capture(model, gpt_data(cfg), optimizer=torch.optim.AdamW(model.parameters()))
    peaks = {}
    for reshard in (True, False):
        module = step.module.clone()
        compile_plan(module, [piper.place(pp=1), piper.split(2), piper.replicate(2),
                              piper.shard(3, reshard_after_forward=reshard)])
        r = simulate_plan(module, AnalyticCosts("h100"))
        peaks[reshard] = max(r.peak_mem.values())
    assert peaks[True] < peaks[False]


def test_plan_memory_categories_zero1():
    # ZeRO-1 over 2 replicas with AdamW: each rank holds the full parameters
    # and gradients but only its half of the optimizer state
    cfg = MLPConfig(dim=8, layers=1, classes=4, batch=2)
    model = make_mlp(cfg)
    nparams = sum(p.numel() for p in model.parameters())
    module = piper.capture(model, mlp_data(cfg),
                           optimizer=torch.optim.AdamW(model.parameters())).module
    compile_plan(module, [piper.place(pp=1), piper.replicate(2), piper.shard(1)])
    r = simulate_plan(module, UnitCosts())
    for d in r.devices:
        assert r.peak_of(d, "params") >= 4 * nparams
        assert r.peak_of(d, "grads") >= 4 * nparams
        # half of exp_avg and exp_avg_sq and the f64 step counter, loaded and
        # (while the optimizer step runs) its updated copy
        shard = 2 * 4 * nparams // 2 + 8
        assert r.peak_of(d, "optimizer") == 2 * shard


def test_comm_overlaps_compute_and_waits_block():
    text = """
    func.func @f(%x: tensor<4xf32>) -> (tensor<4xf32>) {
      %y = graph.aten "aten.mul.Tensor"(%x, %x) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
      func.return %y : tensor<4xf32>
    }
    sched.program @rank0 device 0 {
      %x = sched.load "x" : tensor<4xf32>
      %a = sched.call @f(%x) task "0F0" stream "compute" : (tensor<4xf32>) -> (tensor<4xf32>)
      %h = sched.send %a to 1 tag 0 stream "comm" : tensor<4xf32>
      %b = sched.call @f(%x) task "0F1" stream "compute" : (tensor<4xf32>) -> (tensor<4xf32>)
      sched.wait %h
      %c = sched.call @f(%b) task "0F2" stream "compute" : (tensor<4xf32>) -> (tensor<4xf32>)
      sched.free %x : tensor<4xf32>
      sched.free %a : tensor<4xf32>
      sched.free %b : tensor<4xf32>
      sched.free %c : tensor<4xf32>
    }
    sched.program @rank1 device 1 {
      %h = sched.recv from 0 tag 0 stream "comm" : tensor<4xf32>
      %a = sched.wait %h : tensor<4xf32>
      sched.free %a : tensor<4xf32>
    }
    """
    module = parse_module(text)
    r = simulate_plan(module, UnitCosts(comm=1.5))
    ids = {i.label: i.id for i in r.instrs if not i.meta.get("hidden")}
    # the send (1.5) runs on the comm stream while 0F1 (1) computes; 0F2
    # waits for the send: 1 + max(1, 1.5) + 1
    assert r.start[ids["0F1"]] == 1.0
    assert r.end[ids[">1"]] == pytest.approx(2.5)
    assert r.start[ids["0F2"]] == pytest.approx(2.5)
    assert r.step_time == pytest.approx(3.5)
    assert r.busy[0] == 3.0 and r.bubble[0] == pytest.approx(0.5 / 3.5)
    assert r.streams[0] == ["compute", "comm"]
    tr = to_chrome_trace(r, scale=1.0)
    threads = {(e["pid"], e["args"]["name"]) for e in tr["traceEvents"]
               if e["name"] == "thread_name"}
    assert threads == {(0, "compute"), (0, "comm"), (1, "compute"), (1, "comm")}
    # hidden bookkeeping (loads, frees, waits) stays out of the trace
    assert {e["name"] for e in tr["traceEvents"] if e["ph"] == "X"} == {"0F0", "0F1", "0F2",
                                                                         ">1", "<0"}


def test_trace_has_a_track_per_device_and_stream_for_a_plan(tmp_path):
    r = simulate_plan(_plan("1f1b", 2, 4, (piper.replicate(2),)), AnalyticCosts("h200"))
    tr = json.loads(json.dumps(to_chrome_trace(r)))
    ev = tr["traceEvents"]
    threads = {(e["pid"], e["args"]["name"]) for e in ev if e["name"] == "thread_name"}
    assert {d for d, _ in threads} == {0, 1, 2, 3}
    for d in range(4):
        assert (d, "compute") in threads and (d, "comm") in threads
    # events of one thread never overlap (unordered messages get extra lanes)
    by_tid = {}
    for e in ev:
        if e["ph"] == "X":
            by_tid.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_tid.values():
        spans.sort()
        for (a0, a1), (b0, _) in zip(spans, spans[1:]):
            assert b0 >= a1 - 1e-6
    kinds = {e["cat"] for e in ev if e["ph"] == "X"}
    assert {"F", "B", "OPT", "all_reduce", "send", "recv"} <= kinds
    counters = [e for e in ev if e["ph"] == "C" and e["pid"] == 0]
    assert {"params", "grads", "activations"} <= set(counters[-1]["args"])
    plot_timeline(r, tmp_path / "t.svg")
    plot_memory(r, tmp_path / "m.png", by_kind=True)
    assert b"<svg" in (tmp_path / "t.svg").read_bytes()[:2000]
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_steps_run_back_to_back():
    r = simulate_plan(_plan("1f1b", 2, 4), UnitCosts(), steps=3)
    one = simulate_plan(_plan("1f1b", 2, 4), UnitCosts())
    times = rank_step_times(r)
    assert sorted(times) == [0, 1] and all(len(t) == 3 for t in times.values())
    assert times[0][0] == one.step_time                       # rank 0 ends last
    # steady state: every later step of every rank takes the same time
    assert len({round(t, 9) for ts in times.values() for t in ts[1:]}) == 1
    assert r.peak_mem == one.peak_mem


def test_op_work_counts_flops_and_bytes():
    text = """
    func.func @g(%a: tensor<8x16xf32>, %b: tensor<16x4xf32>, %c: tensor<4xf32>,
                 %x: tensor<2x8x16xf32>, %y: tensor<2x16x4xf32>) -> (tensor<8x4xf32>, tensor<2x8x4xf32>) {
      %m = graph.aten "aten.mm.default"(%a, %b) : (tensor<8x16xf32>, tensor<16x4xf32>) -> tensor<8x4xf32>
      %am = graph.aten "aten.addmm.default"(%c, %a, %b) : (tensor<4xf32>, tensor<8x16xf32>, tensor<16x4xf32>) -> tensor<8x4xf32>
      %bm = graph.aten "aten.bmm.default"(%x, %y) : (tensor<2x8x16xf32>, tensor<2x16x4xf32>) -> tensor<2x8x4xf32>
      %t = graph.aten "aten.t.default"(%m) : (tensor<8x4xf32>) -> tensor<4x8xf32>
      %g = graph.aten "aten.gelu.default"(%am) : (tensor<8x4xf32>) -> tensor<8x4xf32>
      %s = graph.aten "aten.add.Tensor"(%g, %m) : (tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<8x4xf32>
      func.return %s, %bm : tensor<8x4xf32>, tensor<2x8x4xf32>
    }
    func.func @h(%a: tensor<8x16xf32>, %b: tensor<16x4xf32>, %c: tensor<4xf32>,
                 %x: tensor<2x8x16xf32>, %y: tensor<2x16x4xf32>) -> (tensor<8x4xf32>, tensor<2x8x4xf32>) {
      %r:2 = func.call @g(%a, %b, %c, %x, %y) : (tensor<8x16xf32>, tensor<16x4xf32>, tensor<4xf32>, tensor<2x8x16xf32>, tensor<2x16x4xf32>) -> (tensor<8x4xf32>, tensor<2x8x4xf32>)
      func.return %r#0, %r#1 : tensor<8x4xf32>, tensor<2x8x4xf32>
    }
    """
    module = parse_module(text)
    ops = [o for o in module.walk() if o.name == "graph.aten"]
    mm, addmm, bmm, t, gelu, add = (aten_work(o) for o in ops)
    assert mm.flops == 2 * 8 * 16 * 4 and mm.bytes == 4 * (8 * 16 + 16 * 4 + 8 * 4)
    assert addmm.flops == 2 * 8 * 16 * 4 + 8 * 4
    assert bmm.flops == 2 * 2 * 8 * 16 * 4
    assert (t.flops, t.bytes, t.ops) == (0, 0, 0)                # a view is free
    assert gelu.flops == 8 * 32 and add.flops == 32 and add.bytes == 3 * 4 * 32
    total = function_work(module, "h")                            # through the call
    assert total.flops == sum(w.flops for w in (mm, addmm, bmm, gelu, add))
    assert total.ops == 5 and len(op_works(module, "h")) == 5
    call = next(o for o in module.walk() if o.name == "func.call")

    class FakeCall:  # what AnalyticCosts reads of a sched.call
        callee = call.callee
        task = None

    works = (mm, addmm, bmm, gelu, add)
    spec = C.PRESETS["h100"]           # everything here is tiny: memory or launch bound
    want = sum(max(w.flops / spec.peak_flops, w.bytes / spec.mem_bw) + spec.op_overhead
               for w in works)
    assert AnalyticCosts("h100").call(module, FakeCall) == pytest.approx(want)
    # a compute-bound device: half the efficiency, twice the time
    toy = C.DeviceSpec("toy", 1e6, 1e12, 1e9, 1e9, 0.0, 1e9, 0.0, 8, 0.0)
    full = AnalyticCosts(toy).call(module, FakeCall)
    assert full == pytest.approx(sum(w.flops for w in works) / 1e6)
    assert AnalyticCosts(toy, efficiency=0.5).call(module, FakeCall) == pytest.approx(2 * full)


def test_cost_sources_and_profiled_costs():
    module = _plan("1f1b", 2, 4)
    with pytest.raises(PiperError, match="unknown cost source 'magic'"):
        cost_source("magic")
    with pytest.raises(PiperError, match="efficiency must be in"):
        AnalyticCosts("cpu", efficiency=0)
    threads = torch.get_num_threads()
    prof = ProfiledCosts(repeat=3)
    r = simulate_plan(module, prof)
    assert torch.get_num_threads() == threads                     # restored after timing
    calls = [o for p in programs(module).values() for o in p.body.block.ops
             if isinstance(o, sched.CallOp)]
    # each stage function is timed once, however often it is called
    assert set(prof.calls) == {o.callee.root_reference.data for o in calls}
    assert len(calls) > len(prof.calls) and all(t > 0 for t in prof.calls.values())
    for ins in r.instrs:
        if ins.meta.get("callee"):
            assert r.duration[ins.id] == prof.calls[ins.meta["callee"]]
    assert r.unit == "s" and 0 < r.step_time < 5.0
    # the comm cost comes from the spec: a free-compute copy shows only it
    unit = plan_instrs(module, UnitCosts(F=0, B=0, comm=0.25))
    assert {i.duration for i in unit if i.kind in ("send", "recv")} == {0.25}


def test_simulate_plan_errors():
    graph_only = _captured(2).module
    with pytest.raises(PiperError, match="no sched.program in the module"):
        simulate_plan(graph_only, UnitCosts())
    with pytest.raises(PiperError, match="steps must be at least 1"):
        simulate_plan(_plan("1f1b", 2, 4), UnitCosts(), steps=0)
    with pytest.raises(PiperError, match="p2p must be"):
        simulate_plan(_plan("1f1b", 2, 4), UnitCosts(), p2p="magic")


def test_simulate_pass_prints_a_table_and_writes_views(tmp_path, capsys):
    from piper.ir import print_module
    from piper.tools.piper_opt import main as piper_opt

    plan = tmp_path / "plan.mlir"
    plan.write_text(print_module(_plan("1f1b", 2, 4)))
    trace, png, mem = tmp_path / "t.json", tmp_path / "t.png", tmp_path / "m.svg"
    opts = f'costs="unit" trace="{trace}" plot="{png}" memory_plot="{mem}"'
    capsys.readouterr()
    assert piper_opt([str(plan), "-o", str(tmp_path / "out.mlir"),
                      "-p", f"simulate{{{opts}}}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "simulate: costs unit"
    assert lines[1].startswith("step time 15   mean bubble 20.0%")
    assert lines[2].split()[:6] == ["device", "end", "busy", "idle", "bubble", "peak"]
    assert lines[3].split()[:5] == ["0", "15", "12", "3", "20.0%"]
    assert len(lines) == 5
    assert "sched.program @rank0" in (tmp_path / "out.mlir").read_text()   # IR unchanged
    assert json.loads(trace.read_text())["otherData"]["step_time"] == 15
    assert png.read_bytes()[:4] == b"\x89PNG" and b"<svg" in mem.read_bytes()[:2000]
    assert piper_opt([str(plan), "-o", "/dev/null", "-p",
                      'simulate{plot="/no/such/dir/t.png"}']) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.strip() == (f"{plan}:1:1: error: simulate: cannot write "
                               "'/no/such/dir/t.png': no folder /no/such/dir")


# ------------------------------------------------------------ validation bench

def test_sim_validation_bench_smoke(tmp_path):
    # tiny model, one strategy, 2 steps: the script runs end to end on real
    # gloo processes and writes its JSON; no timing is asserted, but the
    # predicted peak memory must equal the runtime's measured one exactly
    from benchrun import bench_main

    out = tmp_path / "v.json"
    assert bench_main("sim_validation.py", ["--tiny", "--steps", "2", "--repeat", "1",
                                            "--strategies", "pp2", "--no-diagnostic",
                                            "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["machine"]["cores"] and data["model"]["size"] == "tiny"
    # the link the prediction used was measured here, from two message sizes
    link = data["comm_probe"]["link"]
    assert link["latency_s"] > 0 and link["bandwidth_Bps"] > 0
    assert set(data["comm_probe"]["measured"]) == {"4096", str(1 << 20)}
    s = data["strategies"]["pp2"]
    assert s["ranks_count"] == 2 and set(s["ranks"]) == {"0", "1"}
    for r in s["ranks"].values():
        assert r["predicted"]["step_s"] > 0 and r["measured"]["step_s"] > 0
        assert len(r["measured"]["steps_s"]) == 2
        assert r["predicted"]["peak_bytes"] == r["measured"]["peak_bytes"]
        assert r["error"]["peak_bytes"] == 0.0
        assert r["error"]["step"] == pytest.approx(
            r["predicted"]["step_s"] / r["measured"]["step_s"] - 1, abs=1e-4)


@pytest.mark.parametrize("p,m", [(2, 4), (4, 8), (4, 10)])
def test_dualpipe_v_plan_idles_p_minus_1_because_its_pairs_are_not_bound(p, m):
    # The schedule-level DualPipeV idles 2(p-1) (its closed form, above):
    # an overlapped pair starts only once the inputs of both halves are
    # there. Piper's runtime runs the two halves one after the other, each
    # when its own inputs are there; the compiled plan then idles p-1, and
    # the schedule simulated with unbound pairs says exactly the same.
    r = simulate_schedule(S.dualpipe_v(p, m), FIW)
    unbound = simulate_schedule(S.dualpipe_v(p, m), FIW, pairs=False)
    plan = simulate_plan(_plan("dualpipe-v", p, m), UnitCosts(), p2p="eager")
    for d in plan.devices:
        assert r.bubble_time(d) == pytest.approx(2 * (p - 1))
        assert unbound.bubble_time(d) == pytest.approx(p - 1)
        assert plan.bubble_time(d) == pytest.approx(p - 1)
        assert plan.busy[d] == pytest.approx(unbound.busy[d])
    assert not any("pair" in i.meta for i in schedule_instrs(S.dualpipe_v(p, m), FIW,
                                                              pairs=False))


def test_one_cost_source_prices_each_plans_own_functions():
    # with recompute, @B0 also runs the forward again: one analytic source
    # used on both plans (as a search would) must price each plan's own @B0
    costs = AnalyticCosts("h100")
    plain = simulate_plan(_plan("gpipe", 2, 2), costs).step_time
    again = _plan("gpipe", 2, 2, (piper.recompute(),))
    shared = simulate_plan(again, costs).step_time
    alone = simulate_plan(again, AnalyticCosts("h100")).step_time
    assert shared == alone > plain
