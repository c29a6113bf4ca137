"""Event simulator, cost model, and schedule closed forms.

Bubble, everywhere below: a device's idle compute time divided by the step
time (the end of the last instruction), the same on every device for these
schedules. Communication is free unless a test says otherwise.
"""

import json

import pytest

from piper.analysis import cost_model as C
from piper.analysis.simulator import (SimInstr, plot_memory, plot_timeline, schedule_instrs,
                                      simulate, simulate_schedule, summary_table,
                                      to_chrome_trace)
from piper.diagnostics import PiperError
from piper.directives import schedules as S

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
