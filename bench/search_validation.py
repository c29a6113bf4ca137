"""Search validation: does the simulator rank strategies as they run?

For a dozen strategies of the GPT example (examples/gpt.py) on 4 CPU gloo
processes of this machine (dp, pp, ZeRO stages 1/2/3, microbatch counts,
the gpipe, 1f1b and zb-h1 schedules; every one trains the same global
batch), this script

1. compiles every strategy (the directive lists `piper.search` builds,
   `piper.strategy_search.candidates`) and profiles its stage functions
   on this CPU (one thread, by the thread's CPU time, which the machine's
   other jobs do not inflate);
2. each of `--rounds` rounds, probes what the cost model needs between 4
   gloo processes here, all busy at once as in a step (`comm_probe`: the
   core share, how much slower compute runs with 4 ranks on this
   machine's cores than alone; how much of an all-reduce their compute
   hides; point-to-point messages in pairs;
   all-reduce, reduce-scatter and all-gather over 2 and 4 ranks, of 4 KiB
   and 1 MiB, fitted as fixed time + bytes / bandwidth), then runs every
   plan for real (`plan.run`, torchrun on 127.0.0.1), round robin, so that
   the machine's load drifts over all of them alike; a run's step time is
   the slowest rank's median step (the first left out as warm-up), a
   strategy's the median over its rounds;
3. predicts every strategy's step time with the simulator: the profiled
   stage functions, stretched by the core share (`host_cores`), and the
   probe's link, collectives and overlap (`collectives`, `comm_overlap`,
   piper.analysis.cost_model), each constant the median over the rounds;
4. writes to bench/results/search.json the per-strategy table, Kendall's
   tau between the predicted and the measured order (`kendall_tau`), the
   measured step of the predicted best over the measured best (`regret`),
   the probes, the machine and its load average around every run.

    python bench/search_validation.py            # about 13 minutes on the shared 2 cores
    python bench/search_validation.py --quick --out /tmp/s.json   # smoke test

The cost model's constants are measured by the probe and the profiler,
never fitted to the step times predicted here. docs/search.md discusses
the results.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import piper  # noqa: E402
from bench.sim_validation import load, machine, steady  # noqa: E402
from examples.gpt import GPTConfig, gpt_data, make_gpt  # noqa: E402
from piper.analysis import cost_model as C  # noqa: E402
from piper.analysis.plan_sim import rank_step_times, simulate_plan  # noqa: E402
from piper.analysis.profile import ProfiledCosts  # noqa: E402
from piper.strategy_search import candidates  # noqa: E402

LR = 1e-3
DEVICES = 4
ROWS = 16  # rows of the global batch every strategy trains on a step
SIZES = {
    "small": GPTConfig(vocab=64, seq=16, dim=32, heads=4, layers=4, tied=False),
    "tiny": GPTConfig(vocab=16, seq=4, dim=8, heads=2, layers=2, tied=False),
}
# (pp, microbatches, zero, schedule); dp = DEVICES / pp; "pp1 dp4 mb1
# unbucketed" is the first without gradient buckets (replicate's default)
STRATEGIES = [
    (1, 1, 0, None), (1, 1, 0, "unbucketed"), (1, 2, 0, None), (1, 1, 1, None),
    (1, 1, 2, None), (1, 1, 3, None),
    (2, 2, 0, "1f1b"), (2, 4, 0, "1f1b"), (2, 4, 0, "gpipe"), (2, 4, 0, "zb-h1"),
    (2, 2, 1, "1f1b"), (2, 4, 3, "gpipe"), (2, 2, 2, "zb-h1"),
    (4, 4, 0, "1f1b"), (4, 8, 0, "gpipe"), (4, 4, 0, "zb-h1"),
]
QUICK = [(1, 1, 0, None), (2, 2, 1, "1f1b")]


def pipelined(schedule: str | None) -> bool:
    return schedule not in (None, "unbucketed")

PROBE_SIZES = (4096, 1 << 20)
PROBE_KINDS = ("all_reduce", "reduce_scatter", "all_gather")


# -- the communication probe ----------------------------------------------

def probe_worker(out_path: str, repeat: int) -> int:
    """One of 4 ranks: every measurement runs on all ranks at once (pairs
    {0,1} and {2,3} together, or the group of 4), as in a step."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    pairs = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    pair = pairs[rank // 2]
    peer = rank ^ 1
    res: dict = {}

    def timed(fn) -> list[float]:
        fn()  # warm-up: connections, buffers
        out = []
        for _ in range(repeat):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    # the core share: every rank multiplies small matrices for ~50 ms of CPU
    # at once; wall / CPU time is how much slower compute runs than alone
    torch.set_num_threads(1)
    a = torch.rand(64, 64)
    shares = []
    for _ in range(max(3, repeat // 3)):
        dist.barrier()
        w0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(5000):
            a @ a
        shares.append((time.perf_counter() - w0) / (time.thread_time() - c0))
    res["core_share"] = shares
    # overlap: a 4 KiB all-reduce of the 4 ranks started before ~5 ms of
    # that compute (a tenth of the loop above) and waited for after it,
    # against the two one after the other
    small = torch.rand(1024)

    def compute():
        for _ in range(500):
            a @ a

    def started_before():
        work = dist.all_reduce(small, async_op=True)
        compute()
        work.wait()

    res["overlap/all_reduce"] = timed(lambda: dist.all_reduce(small, async_op=True).wait())
    res["overlap/compute"] = timed(compute)
    res["overlap/both"] = timed(started_before)
    for size in PROBE_SIZES:
        x = torch.rand(size // 4)

        def pingpong():
            if rank % 2 == 0:
                dist.send(x, peer)
                dist.recv(x, peer)
            else:
                dist.recv(x, peer)
                dist.send(x, peer)

        res[f"p2p/{size}"] = [t / 2 for t in timed(pingpong)]
        for n, group in ((2, pair), (world, None)):
            for kind in PROBE_KINDS:
                def coll(kind=kind, n=n, group=group):
                    if kind == "all_reduce":
                        dist.all_reduce(x, group=group, async_op=True).wait()
                    elif kind == "reduce_scatter":
                        out = torch.empty(x.numel() // n)
                        dist.reduce_scatter_tensor(out, x, group=group, async_op=True).wait()
                    else:
                        out = torch.empty(x.numel())
                        dist.all_gather_into_tensor(out, x[: x.numel() // n], group=group,
                                                    async_op=True).wait()
                res[f"{kind}/{n}/{size}"] = timed(coll)
    if rank == 0:
        Path(out_path).write_text(json.dumps(res))
    dist.destroy_process_group()
    return 0


def _fit(t1: float, t2: float) -> tuple[float, float]:
    """(fixed s, bytes/s) of a time = fixed + bytes / bw through the two sizes."""
    (s1, s2) = PROBE_SIZES
    bw = (s2 - s1) / (t2 - t1) if t2 > t1 else s2 / t2
    return max(t1 - s1 / bw, 1e-7), bw


def comm_probe(repeat: int, timeout: float) -> dict:
    """Run the probe on 4 processes; the mean times (a step pays the sum
    over its messages, tails included) and the constants fitted through
    the two sizes: per kind and group size, time = fixed + bytes / bw."""
    from bench.harness import local_job

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        env = dict(os.environ, OMP_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        local_job(__file__, ["--probe-worker", str(out), "--repeat", str(repeat)], DEVICES, env,
                  timeout, Path(tmp) / "probe.log")
        raw = json.loads(out.read_text())
    share = statistics.median(raw.pop("core_share"))
    ar, comp, both = (statistics.median(raw.pop(f"overlap/{k}"))
                      for k in ("all_reduce", "compute", "both"))
    # the share of the all-reduce that the compute hid, in [0, 1]
    overlap = min(1.0, max(0.0, (ar + comp - both) / min(ar, comp)))
    mean = {k: statistics.fmean(v) for k, v in raw.items()}
    median = {k: statistics.median(v) for k, v in raw.items()}
    fits = {}
    for key in ["p2p"] + [f"{k}/{n}" for k in PROBE_KINDS for n in (2, DEVICES)]:
        fixed, bw = _fit(*(mean[f"{key}/{s}"] for s in PROBE_SIZES))
        fits[key] = {"fixed_s": fixed, "bandwidth_Bps": bw}
    return {"bytes": list(PROBE_SIZES), "repeat": repeat, "mean_s": mean, "median_s": median,
            "fits": fits, "core_share": share, "comm_overlap": overlap,
            "overlap_probe_s": {"all_reduce": ar, "compute": comp, "both": both},
            "load": load()}


def median_probe(probes: list[dict]) -> dict:
    """The probes of every round as one: each constant's median."""
    fits = {k: {f: statistics.median(p["fits"][k][f] for p in probes)
                for f in ("fixed_s", "bandwidth_Bps")} for k in probes[0]["fits"]}
    return {"fits": fits, "core_share": statistics.median(p["core_share"] for p in probes),
            "comm_overlap": statistics.median(p["comm_overlap"] for p in probes)}


def measured_spec(probe: dict) -> C.DeviceSpec:
    """The `cpu` preset with what the probe measured: the link (one way of a
    message), the collectives (piper.analysis.cost_model.measured_collectives)
    the cores the ranks had (DEVICES / the measured core share) and how much
    of a collective their compute hid."""
    import dataclasses

    f = probe["fits"]
    return dataclasses.replace(
        C.PRESETS["cpu"], name="cpu-measured",
        intra_latency=f["p2p"]["fixed_s"], intra_bw=f["p2p"]["bandwidth_Bps"],
        collectives=C.measured_collectives(
            {tuple(k.split("/")): (v["fixed_s"], v["bandwidth_Bps"]) for k, v in f.items()
             if k != "p2p"}),
        host_cores=DEVICES / max(1.0, probe["core_share"]),
        comm_overlap=probe["comm_overlap"])


# -- strategies -------------------------------------------------------------

def strategy_name(pp: int, mb: int, zero: int, schedule: str | None) -> str:
    parts = [f"pp{pp}", f"dp{DEVICES // pp}", f"mb{mb}"]
    if zero:
        parts.append(f"zero{zero}")
    if schedule:
        parts.append(schedule)
    return " ".join(parts)


def build(cfg: GPTConfig, pp: int, mb: int, zero: int, schedule: str | None):
    """The plan of one strategy: the directive list piper.search makes for
    it, on microbatches of ROWS / (dp * mb) rows ("unbucketed": pp=1 with
    the gradients all-reduced one by one, replicate's default)."""
    import dataclasses

    from piper.directives.strategy import Replicate

    dp = DEVICES // pp
    rows = ROWS // (dp * mb)
    mcfg = GPTConfig(**{**cfg.__dict__, "batch": rows})
    torch.manual_seed(0)
    model = make_gpt(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    space = {"pp": [pp], "zero": [zero],
             "schedule": [schedule if pipelined(schedule) else "1f1b"]}
    (cand,) = candidates(DEVICES, dp * mb, cfg.layers, space)
    strategy = cand.strategy
    if schedule == "unbucketed":
        strategy = [dataclasses.replace(d, bucket_bytes=0) if isinstance(d, Replicate) else d
                    for d in strategy]
    plan = piper.compile(model, gpt_data(mcfg), optimizer=opt, strategy=strategy)
    return plan, strategy


def batches(cfg: GPTConfig, steps: int) -> list[dict]:
    per_step = GPTConfig(vocab=cfg.vocab, seq=cfg.seq, batch=ROWS)
    out = []
    for s in range(steps):
        i, t = gpt_data(per_step, seed=100 + s)
        out.append({"input0": i, "input1": t})
    return out


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b between two orders of the same items."""
    conc = disc = ta = tb = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        x, y = a[i] - a[j], b[i] - b[j]
        if x == 0 and y == 0:
            continue
        if x == 0:
            ta += 1
        elif y == 0:
            tb += 1
        elif (x > 0) == (y > 0):
            conc += 1
        else:
            disc += 1
    den = ((conc + disc + ta) * (conc + disc + tb)) ** 0.5
    return (conc - disc) / den if den else 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny model, 2 strategies, 1 round, 2 steps (the smoke test)")
    ap.add_argument("--rounds", type=int, default=4, help="runs per strategy, round robin")
    ap.add_argument("--steps", type=int, default=6,
                    help="steps a run (the first is warm-up)")
    ap.add_argument("--repeat", type=int, default=11,
                    help="timed calls per stage function when profiling, and per probe case")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--probe-worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "search.json"))
    args = ap.parse_args(argv)
    if args.probe_worker:
        return probe_worker(args.probe_worker, args.repeat)
    if args.quick:
        args.rounds, args.steps, args.repeat = 1, 2, 2
    if args.rounds < 1 or args.steps < 1:
        ap.error("--rounds and --steps must be at least 1")
    size = "tiny" if args.quick else "small"
    cfg = SIZES[size]
    chosen = QUICK if args.quick else STRATEGIES
    out: dict = {
        "benchmark": "search_validation",
        "what": "the simulator's order of strategies (profiled costs, measured link, "
                "shared cores) against their measured order on 4 CPU gloo processes",
        "machine": {**machine(1), "processes": DEVICES},
        "model": {"name": "examples/gpt.py", "size": size, **cfg.__dict__,
                  "batch": None, "global_batch_rows": ROWS},
        "optimizer": {"name": "AdamW", "lr": LR},
        "rounds": args.rounds, "steps": args.steps, "profile_repeat": args.repeat,
        "load_average_start": load(),
    }
    rows, plans, profiles = [], [], []
    for pp, mb, zero, schedule in chosen:
        name = strategy_name(pp, mb, zero, schedule)
        t0 = time.perf_counter()
        plan, strategy = build(cfg, pp, mb, zero, schedule)
        compile_s = time.perf_counter() - t0
        # stage functions timed once, by the CPU time of this thread (what
        # other jobs on the machine do not inflate); the communication
        # costs come later, from the probes
        costs = ProfiledCosts(comm_spec="cpu", repeat=args.repeat, warmup=1, threads=1,
                              clock="cpu")
        simulate_plan(plan.module, costs)
        print(f"[{name}] compiled in {compile_s:.1f} s, stage functions profiled", flush=True)
        rows.append({"name": name, "pp": pp, "dp": DEVICES // pp, "microbatches": mb,
                     "zero": zero, "schedule": schedule,
                     "strategy": [d.to_dict() for d in strategy],
                     "profiled_calls_s": {k: round(v, 7) for k, v in sorted(costs.calls.items())},
                     "runs_s": [], "loads": []})
        plans.append(plan)
        profiles.append(costs)

    data = batches(cfg, args.steps)
    probes = []
    for rnd in range(args.rounds):
        # the probe runs each round, like the strategies, so that its
        # constants see the machine as the runs do
        probes.append(comm_probe(args.repeat * 3, args.timeout))
        p = probes[-1]
        print(f"round {rnd + 1}: probe core share {p['core_share']:.2f}, 4 KiB all-reduce of 4 "
              f"{p['mean_s']['all_reduce/4/4096'] * 1e6:.0f} us, one way "
              f"{p['mean_s']['p2p/4096'] * 1e6:.0f} us (load {p['load']})", flush=True)
        for row, plan in zip(rows, plans, strict=True):
            before = load()
            res = plan.run(data, timeout=args.timeout, progress=False)
            step = max(steady(v) for v in res.seconds.values())
            row["runs_s"].append(step)
            row["loads"].append([before, load()])
            print(f"  round {rnd + 1} {row['name']:28s} {step * 1e3:8.2f} ms "
                  f"(load {before})", flush=True)

    probe = median_probe(probes)
    spec = measured_spec(probe)
    out["comm_probe"] = {"bytes": list(PROBE_SIZES), "repeat": args.repeat * 3,
                         "rounds": probes, "median": probe}
    out["cost_model"] = {"spec": spec.name, "core_share": probe["core_share"],
                         "comm_overlap": spec.comm_overlap,
                         "host_cores": spec.host_cores, "link_latency_s": spec.intra_latency,
                         "link_bw_Bps": spec.intra_bw,
                         "collectives": [list(c) for c in spec.collectives],
                         "profile_clock": "cpu"}
    for k, v in probe["fits"].items():
        print(f"  {k:20s} {v['fixed_s'] * 1e6:8.0f} us + bytes / "
              f"{v['bandwidth_Bps'] / 1e9:.2f} GB/s", flush=True)
    print(f"  core share {probe['core_share']:.2f}, comm overlap {probe['comm_overlap']:.2f}",
          flush=True)
    for row, plan, costs in zip(rows, plans, profiles, strict=True):
        costs.spec = spec
        sim = simulate_plan(plan.module, costs, steps=max(2, args.steps))
        row["predicted_s"] = max(steady(v) for v in rank_step_times(sim).values())
        row["measured_s"] = statistics.median(row["runs_s"])
        row["error"] = round(row["predicted_s"] / row["measured_s"] - 1, 4)
        print(f"{row['name']:28s} predicted {row['predicted_s'] * 1e3:8.2f} ms, measured "
              f"{row['measured_s'] * 1e3:8.2f} ms", flush=True)

    pred = [r["predicted_s"] for r in rows]
    meas = [r["measured_s"] for r in rows]
    best_pred = min(range(len(rows)), key=lambda i: pred[i])
    out["kendall_tau"] = round(kendall_tau(pred, meas), 4)
    out["regret"] = round(meas[best_pred] / min(meas), 4)
    out["predicted_best"] = rows[best_pred]["name"]
    out["measured_best"] = rows[min(range(len(rows)), key=lambda i: meas[i])]["name"]
    # for reference, the order of each strategy's fastest run (the least
    # disturbed by the machine's other jobs)
    fastest = [min(r["runs_s"]) for r in rows]
    out["kendall_tau_fastest_runs"] = round(kendall_tau(pred, fastest), 4)
    out["regret_fastest_runs"] = round(fastest[best_pred] / min(fastest), 4)
    out["goals"] = {"kendall_tau": ">= 0.7", "regret": "<= 1.10"}
    out["load_average_end"] = load()
    out["strategies"] = rows
    print(f"kendall tau {out['kendall_tau']}, regret {out['regret']} "
          f"(predicted best {out['predicted_best']}, measured best {out['measured_best']})")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
