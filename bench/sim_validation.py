"""Simulator validation: predicted against measured step time and peak memory.

For three strategies on the small GPT example (examples/gpt.py, the demo's
size), this script

1. compiles the plan with `piper.compile`;
2. predicts every rank's step time and peak memory with the profiled cost
   model (piper.analysis.profile: each stage function timed with the aten
   executor on this CPU, one thread; communication as latency +
   bytes / bandwidth of a link measured first by a probe between two gloo
   processes on this machine, `--comm probe`, or the `cpu` preset's link,
   `--comm preset`) and, for reference, the analytic `cpu` preset (a
   roofline from FLOPs and bytes, no measurement at all);
3. runs the plan for real on CPU gloo processes (`plan.run`, torchrun on
   127.0.0.1) and takes every rank's median step time (the first step is
   left out as warm-up) and its peak live bytes;
4. times one process training the plain model with eager PyTorch on the
   same global batch, as context for the measured times;
5. writes predicted, measured and relative error (predicted / measured - 1)
   per strategy and rank, and the machine description, to
   bench/results/sim_validation.json.

    python bench/sim_validation.py                       # about 3 minutes
    python bench/sim_validation.py --tiny --steps 2 --strategies pp2 --out /tmp/v.json

Everything but timing is deterministic: fixed seeds, model, batches and
strategies, so the predicted memory and the plans are the same on every
run; the times are what they are on the machine. The cost model's
constants are measured (stage functions, the link) or preset, never fitted
to the step times it predicts. docs/simulator.md discusses
the results and where the errors come from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import piper  # noqa: E402
from examples.gpt import GPTConfig, gpt_data, make_gpt  # noqa: E402
from piper.analysis.plan_check import programs  # noqa: E402
from piper.analysis.plan_sim import rank_step_times, simulate_plan  # noqa: E402
from piper.analysis.profile import ProfiledCosts  # noqa: E402
from piper.analysis.task_costs import AnalyticCosts  # noqa: E402
from piper.dialects import sched  # noqa: E402
from piper.directives.strategy import describe  # noqa: E402

LR = 1e-3
SIZES = {
    # the demo's model (examples/demo.py)
    "small": GPTConfig(vocab=64, seq=16, dim=32, heads=4, layers=2, batch=2, tied=False),
    # for the smoke test
    "tiny": GPTConfig(vocab=16, seq=4, dim=8, heads=2, layers=2, batch=1, tied=False),
}


def strategies() -> dict[str, tuple[list, int, int, str]]:
    """name -> (directives, microbatches, replicas, description)."""
    return {
        "dp2": ([piper.place(pp=1), piper.replicate(2)], 1, 2,
                "data parallel over 2 ranks, gradients all-reduced"),
        "pp2": ([piper.place(pp=2), piper.split(4), piper.order(schedule="1f1b")], 4, 1,
                "2 pipeline stages, 1F1B, 4 microbatches"),
        "pp2_dp2_zero1": ([piper.place(pp=2), piper.split(4), piper.replicate(2),
                           piper.shard(1), piper.order(schedule="1f1b")], 4, 2,
                          "2 stages x 2 replicas, ZeRO-1, 1F1B, 4 microbatches"),
    }


def machine(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads_per_process": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": "gloo on 127.0.0.1 (torchrun), one process per rank",
    }


def load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def batches_for(cfg: GPTConfig, mb: int, dp: int, steps: int) -> list[dict]:
    per_step = GPTConfig(vocab=cfg.vocab, seq=cfg.seq, batch=cfg.batch * mb * dp)
    out = []
    for s in range(steps):
        i, t = gpt_data(per_step, seed=100 + s)
        out.append({"input0": i, "input1": t})
    return out


def eager_step_seconds(cfg: GPTConfig, batches: list[dict], threads: int) -> float:
    """Median step of one process training the plain model (context)."""
    torch.manual_seed(0)
    model = make_gpt(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        for b in batches:
            t0 = time.perf_counter()
            opt.zero_grad()
            model(b["input0"], b["input1"]).backward()
            opt.step()
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    return statistics.median(times[1:] if len(times) > 1 else times)


def interpreter_overhead(cfg: GPTConfig, args) -> dict:
    """Where the runtime's time goes besides stage functions: one process
    runs a one-device plan of the same model (4 microbatches, no
    communication) with the runtime's interpreter (`RankRuntime`), timing
    its stage-function calls separately (through the runtime's
    `compile_fn` hook). Inside the calls, measured against profiled, shows
    how well a function timed alone predicts it inside a step; what is left
    over, per instruction, is the interpreter's own work (dispatch and
    bookkeeping), which the cost model does not charge."""
    from piper.backend.aten import CompiledFunction
    from piper.runtime.executor import RankRuntime
    from piper.runtime.worker import local_state

    torch.manual_seed(0)
    model = make_gpt(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    plan = piper.compile(model, gpt_data(cfg), optimizer=opt,
                         strategy=[piper.place(pp=1), piper.split(4)])
    inside = [0.0]
    cache: dict = {}

    def compile_fn(module, fn, device):
        """The runtime's own compilation of a stage function, timed."""
        try:
            from piper.backend.kernels import kernel_hook
            hook = kernel_hook(module, device)
        except ImportError:
            hook = None
        f = CompiledFunction(module, fn, device, cache, hook)

        def call(*a):
            t0 = time.perf_counter()
            out = f(*a)
            inside[0] += time.perf_counter() - t0
            return out
        return call

    rt = RankRuntime(plan.module, 0, 1, compile_fn=compile_fn)
    state = local_state(plan.module, 0, {k: v.detach().clone()
                                         for k, v in plan.captured.values.items()})
    batch = batches_for(cfg, 4, 1, 1)[0]
    before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        steps, calls, cpu = [], [], []
        for _ in range(args.steps):
            inside[0] = 0.0
            c0 = time.process_time()
            steps.append(rt.step(state, batch).seconds)
            cpu.append(time.process_time() - c0)
            calls.append(inside[0])
    finally:
        torch.set_num_threads(before)
    n = len(rt.ops)
    step, in_calls = steady(steps), steady(calls)
    costs = ProfiledCosts(comm_spec="cpu", repeat=args.repeat, warmup=1, threads=args.threads)
    sim = simulate_plan(plan.module, costs)
    predicted_calls = sum(sim.duration[i.id] for i in sim.instrs if i.meta.get("callee"))
    predicted = sim.step_time
    return {
        "plan": "place(pp=1), split(4): one process, no communication",
        "instructions": n,
        "step_s": step,
        "step_cpu_s": steady(cpu),
        "inside_stage_functions_s": in_calls,
        "predicted_stage_functions_s": predicted_calls,
        "predicted_step_s": predicted,
        "outside_per_instruction_s": (step - in_calls) / n,
    }


PROBE_BYTES = 4096
PROBE_SIZES = (4096, 1 << 20)  # two sizes: a latency and a bandwidth fit


def probe_worker(out_path: str) -> int:
    """One rank of the communication probe (torchrun, 2 processes): a
    ping-pong and an all-reduce of each probe size, 30 times each, medians
    to JSON."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    res = {}
    for size in PROBE_SIZES:
        x = torch.zeros(size // 4)
        pingpong, allreduce = [], []
        for _ in range(5):  # warm-up: connections, buffers
            dist.all_reduce(x)
        for _ in range(50):
            dist.barrier()
            t0 = time.perf_counter()
            if rank == 0:
                dist.send(x, 1)
                dist.recv(x, 1)
            else:
                dist.recv(x, 0)
                dist.send(x, 0)
            pingpong.append(time.perf_counter() - t0)
        for _ in range(50):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(x, async_op=True).wait()
            allreduce.append(time.perf_counter() - t0)
        res[str(size)] = {
            "p2p_one_way_s": statistics.median(pingpong) / 2,
            "all_reduce_s": statistics.median(allreduce),
            "all_reduce_p90_s": sorted(allreduce)[int(0.9 * len(allreduce))],
            # a step pays the sum over its messages: the means, tails included
            "p2p_one_way_mean_s": statistics.fmean(pingpong) / 2,
            "all_reduce_mean_s": statistics.fmean(allreduce),
        }
    if rank == 0:
        Path(out_path).write_text(json.dumps(res))
    dist.destroy_process_group()
    return 0


def comm_probe(timeout: float) -> dict:
    """What messages and all-reduces cost between two gloo processes on
    this machine now, the link (latency, bandwidth) fitted to the one-way
    times of the two sizes, and what the `cpu` preset charges."""
    import tempfile

    from bench.harness import local_job
    from piper.analysis import cost_model as C

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        local_job(__file__, ["--probe-worker", str(out)], 2, env, timeout,
                  Path(tmp) / "probe.log")
        measured = json.loads(out.read_text())
    (s1, s2) = PROBE_SIZES
    t1, t2 = (measured[str(s)]["p2p_one_way_mean_s"] for s in PROBE_SIZES)
    # one way = latency + bytes / bandwidth, through the mean times of the
    # two sizes (a step pays the sum over its messages, so the mean, with
    # the scheduling tail a shared machine adds, is what counts; a noisy
    # small size can come out slower than the large one: then the large
    # size's time is all bandwidth and the small size's all latency)
    bw = (s2 - s1) / (t2 - t1) if t2 > t1 else s2 / t2
    lat = max(t1 - s1 / bw, 1e-7)
    # an all-reduce of 2 is 2 ring steps of latency plus its bytes
    ar = measured[str(s1)]["all_reduce_mean_s"]
    step_lat = max((ar - s1 / bw) / 2, 1e-7)
    return {
        "bytes": list(PROBE_SIZES),
        "measured": measured,
        "link": {"latency_s": lat, "bandwidth_Bps": bw, "collective_step_latency_s": step_lat},
        "cpu_preset": {str(s): {"p2p_one_way_s": C.p2p_time(s, "cpu", (0, 1)),
                                "all_reduce_s": C.collective_time("all_reduce", s, (0, 1),
                                                                  "cpu")}
                       for s in PROBE_SIZES},
    }


def measured_link_spec(probe: dict):
    """The `cpu` preset with its intra-node link as the probe measured it."""
    import dataclasses

    from piper.analysis.cost_model import PRESETS

    link = probe["link"]
    return dataclasses.replace(PRESETS["cpu"], name="cpu-measured",
                               intra_latency=link["latency_s"], intra_bw=link["bandwidth_Bps"],
                               collective_step_latency=link["collective_step_latency_s"])


def steady(times: list[float]) -> float:
    """Median step time, leaving out the first (warm-up) step."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def rel(pred: float, meas: float) -> float | None:
    return None if not meas else round(pred / meas - 1.0, 4)


def one_strategy(name: str, cfg: GPTConfig, args, comm_spec="cpu") -> dict:
    directives, mb, dp, text = strategies()[name]
    torch.manual_seed(0)
    model = make_gpt(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    t0 = time.perf_counter()
    plan = piper.compile(model, gpt_data(cfg), optimizer=opt, strategy=directives)
    compile_s = time.perf_counter() - t0
    batches = batches_for(cfg, mb, dp, args.steps)
    progs = programs(plan.module)
    print(f"[{name}] {text}: {plan.num_devices} ranks, compiled in {compile_s:.1f} s",
          flush=True)

    costs = ProfiledCosts(comm_spec=comm_spec, repeat=args.repeat, warmup=1,
                          threads=args.threads)
    sim = simulate_plan(plan.module, costs, steps=args.steps)
    pred_steps = rank_step_times(sim)
    analytic = simulate_plan(plan.module, AnalyticCosts("cpu"), steps=args.steps)
    analytic_steps = rank_step_times(analytic)

    load_before = load()
    t0 = time.perf_counter()
    result = plan.run(batches, timeout=args.timeout)
    run_s = time.perf_counter() - t0
    load_after = load()
    eager = eager_step_seconds(cfg, batches, args.threads)

    ranks = {}
    for r in sorted(progs):
        p_step, m_step = steady(pred_steps[r]), steady(result.seconds[r])
        a_step = steady(analytic_steps[r])
        p_mem, m_mem = sim.peak_mem[r], max(result.peak_bytes[r])
        ops = list(progs[r].body.block.ops)
        ranks[str(r)] = {
            "instructions": len(ops),
            "messages": sum(isinstance(o, sched.SendOp | sched.RecvOp | sched.CollectiveOp)
                            for o in ops),
            "predicted": {"step_s": p_step, "peak_bytes": p_mem,
                          "peak_breakdown": dict(sorted(sim.peak_breakdown[r].items())),
                          "busy_s": sim.busy[r] / args.steps},
            "analytic_cpu_preset": {"step_s": a_step, "peak_bytes": analytic.peak_mem[r]},
            "measured": {"step_s": m_step, "peak_bytes": m_mem,
                         "steps_s": [round(x, 6) for x in result.seconds[r]]},
            "error": {"step": rel(p_step, m_step), "peak_bytes": rel(p_mem, m_mem),
                      "analytic_step": rel(a_step, m_step)},
        }
        print(f"  rank {r}: step predicted {p_step * 1e3:8.2f} ms  measured "
              f"{m_step * 1e3:8.2f} ms  error {100 * ranks[str(r)]['error']['step']:+6.1f}%"
              f" | peak predicted {p_mem} B measured {m_mem} B", flush=True)
    job_pred = max(steady(v) for v in pred_steps.values())
    job_meas = max(steady(v) for v in result.seconds.values())
    return {
        "description": text,
        "directives": [describe(d) for d in directives],
        "ranks_count": plan.num_devices,
        "microbatches": mb,
        "replicas": dp,
        "profiled_calls_s": {k: round(v, 7) for k, v in sorted(costs.calls.items())},
        "step": {"predicted_s": job_pred, "measured_s": job_meas,
                 "error": rel(job_pred, job_meas),
                 "eager_one_process_s": eager,
                 "measured_over_eager": round(job_meas / eager, 3) if eager else None},
        "ranks": ranks,
        "compile_s": round(compile_s, 2),
        "run_wall_s": round(run_s, 2),
        "load_average_before_after": [load_before, load_after],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny model (the smoke test)")
    ap.add_argument("--steps", type=int, default=8,
                    help="steps run and simulated per strategy (the first is warm-up)")
    ap.add_argument("--repeat", type=int, default=11,
                    help="timed calls per stage function when profiling")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads when profiling and for the eager reference "
                    "(the runtime's workers get OMP_NUM_THREADS, default 1)")
    ap.add_argument("--strategies", default="dp2,pp2,pp2_dp2_zero1",
                    help="comma-separated subset of: " + ", ".join(strategies()))
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--no-diagnostic", action="store_true",
                    help="skip the diagnostic of the interpreter's overhead in one process")
    ap.add_argument("--comm", choices=("probe", "preset"), default="probe",
                    help="communication costs: 'probe' measures gloo's latency and bandwidth "
                    "between two processes here first (default), 'preset' takes the cpu preset's")
    ap.add_argument("--probe-worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sim_validation.json"))
    args = ap.parse_args(argv)
    if args.probe_worker:
        return probe_worker(args.probe_worker)
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    unknown = [n for n in names if n not in strategies()]
    if unknown or not names:
        ap.error(f"unknown strategies {unknown}; choose from {', '.join(strategies())}")
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    size = "tiny" if args.tiny else "small"
    cfg = SIZES[size]
    out = {
        "benchmark": "sim_validation",
        "what": "simulator prediction (profiled cost model) vs a real CPU run, per rank",
        "machine": machine(args.threads),
        "model": {"name": "examples/gpt.py", "size": size, **cfg.__dict__},
        "optimizer": {"name": "AdamW", "lr": LR},
        "steps": args.steps,
        "profile_repeat": args.repeat,
        "error_definition": "predicted / measured - 1 (negative: the simulator is optimistic)",
        "measured_definition": {
            "step_s": "median over steps 2..N of the rank's wall time of one step (runtime)",
            "peak_bytes": "largest live bytes of the tensors the rank's program holds "
                          "between instructions (the runtime's own count)",
        },
        "strategies": {},
    }
    comm_spec = "cpu"
    if args.comm == "probe":
        out["comm_probe"] = c = comm_probe(args.timeout)
        comm_spec = measured_link_spec(c)
        small = str(PROBE_SIZES[0])
        m, p = c["measured"][small], c["cpu_preset"][small]
        print(f"[comm] 4 KiB between 2 gloo processes: one way {m['p2p_one_way_s'] * 1e6:.0f} us "
              f"(cpu preset {p['p2p_one_way_s'] * 1e6:.0f} us), all-reduce "
              f"{m['all_reduce_s'] * 1e6:.0f} us (preset {p['all_reduce_s'] * 1e6:.0f} us); "
              f"link fitted: {c['link']['latency_s'] * 1e6:.0f} us + bytes / "
              f"{c['link']['bandwidth_Bps'] / 1e9:.2f} GB/s, "
              f"{c['link']['collective_step_latency_s'] * 1e6:.0f} us per collective ring step",
              flush=True)
    out["comm_costs"] = ("the cpu preset, its intra-node link as the probe measured it"
                         if args.comm == "probe" else "the cpu preset")
    for name in names:
        out["strategies"][name] = one_strategy(name, cfg, args, comm_spec)
    if not args.no_diagnostic:
        out["interpreter_overhead"] = d = interpreter_overhead(cfg, args)
        print(f"[interpreter] one process, {d['instructions']} instructions: step "
              f"{d['step_s'] * 1e3:.2f} ms (CPU time {d['step_cpu_s'] * 1e3:.2f} ms), "
              f"inside stage functions "
              f"{d['inside_stage_functions_s'] * 1e3:.2f} ms (profiled "
              f"{d['predicted_stage_functions_s'] * 1e3:.2f} ms; predicted step "
              f"{d['predicted_step_s'] * 1e3:.2f} ms), "
              f"{d['outside_per_instruction_s'] * 1e6:.1f} us per instruction besides", flush=True)
    errs = [abs(r["error"]["step"]) for s in out["strategies"].values()
            for r in s["ranks"].values() if r["error"]["step"] is not None]
    mem_errs = [abs(r["error"]["peak_bytes"]) for s in out["strategies"].values()
                for r in s["ranks"].values() if r["error"]["peak_bytes"] is not None]
    out["summary"] = {
        "step_abs_error_median": round(statistics.median(errs), 4) if errs else None,
        "step_abs_error_max": round(max(errs), 4) if errs else None,
        "peak_bytes_abs_error_max": round(max(mem_errs), 6) if mem_errs else None,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
