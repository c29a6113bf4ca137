"""Compile time: capture, every pass, lowering and verification of plans
that are compiled, not run.

    python bench/compile_bench.py                 # every sweep (minutes)
    python bench/compile_bench.py --tiny --no-plot --out /tmp/c.json   # the smoke test
    python bench/compile_bench.py --sweeps headline

The model is the GPT example (examples/gpt.py) at a tiny width (dim 8,
4 tokens, vocab 16), so capture stays cheap and what grows is the plan:
its layers are grouped into as many `piper.annotate("PP")` regions as the
schedule needs stages (96 layers on 64 stages: 32 regions of two blocks,
32 of one). Each case compiles one strategy with
`compile_strategy(..., clock=Clock())`, which times every pass and every
IR verification on the way, and records the plan's size: compute tasks
(over all devices), sched instructions, devices. Sweeps:

- `scale`: layers 8..96 with pp = stages up to 64 and microbatches up to
  256, 1F1B (the headline case, 96 layers x pp 64 x 256 microbatches, is
  its last point);
- `mb`: 32 layers on pp 16, 1F1B, microbatches 16..256;
- `schedules`: interleaved (2 stages per device) and zb-h1 (split
  backward) at growing sizes;
- `dp`: 8 layers on pp 2, 4 microbatches, dp 1..1024 replicas (up to 2048
  devices, one program each), with and without gradient buckets.

Cases run from small to large; a sweep stops once one of its cases took
more than --budget seconds. Output: bench/results/compile.json and
compile.png (seconds against tasks, log-log, with a linear reference).
Timings are wall seconds of one run in one process; the machine, its load
average before and after, and the library versions are recorded beside
them.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import piper  # noqa: E402
from examples.gpt import GPT, GPTConfig, gpt_data  # noqa: E402
from piper.analysis.plan_check import programs  # noqa: E402
from piper.directives.strategy import Clock, compile_strategy  # noqa: E402
from piper.dialects import sched  # noqa: E402
from piper.ir import gc_paused  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_S = 60.0
HEADLINE = "scale L96 pp64 mb256 1f1b"


# --------------------------------------------------------------------------
# the model


class StagedGPT(GPT):
    """The example GPT with its blocks grouped into `regions` PP regions
    (consecutive blocks, the first regions one block larger when they do
    not divide), so a plan can have fewer stages than layers."""

    def __init__(self, cfg: GPTConfig, regions: int):
        super().__init__(cfg)
        if not 1 <= regions <= cfg.layers:
            raise ValueError(f"regions must be 1..{cfg.layers}, got {regions}")
        base, extra = divmod(cfg.layers, regions)
        sizes = [base + (1 if r < extra else 0) for r in range(regions)]
        self.bounds = [sum(sizes[:r]) for r in range(regions + 1)]

    def forward(self, idx, targets=None):
        x = idx
        last = len(self.bounds) - 2
        for r in range(len(self.bounds) - 1):
            with piper.annotate("PP"):
                if r == 0:
                    x = self.embed(idx)
                for block in self.blocks[self.bounds[r]:self.bounds[r + 1]]:
                    x = block(x)
                if r == last:
                    return self.head(x, targets)


def config(layers: int) -> GPTConfig:
    return GPTConfig(vocab=16, seq=4, dim=8, heads=2, layers=layers, batch=1, tied=False)


_CAPTURED: dict[tuple[int, int], tuple[object, float]] = {}


def captured(layers: int, regions: int):
    """(CapturedStep, capture seconds), captured once per model."""
    key = (layers, regions)
    if key not in _CAPTURED:
        cfg = config(layers)
        torch.manual_seed(0)
        model = StagedGPT(cfg, regions)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        idx, targets = gpt_data(cfg)
        t0 = time.perf_counter()
        with gc_paused():  # as piper.compile captures
            step = piper.capture(model, (idx, targets), optimizer=opt)
        _CAPTURED.clear()  # keep one model's IR alive at a time
        _CAPTURED[key] = (step, time.perf_counter() - t0)
    return _CAPTURED[key]


# --------------------------------------------------------------------------
# cases


def case(sweep: str, layers: int, pp: int, mb: int, schedule: str = "1f1b", dp: int = 1,
         bucket_bytes: int = 0) -> dict:
    chunks = 2 if schedule == "interleaved" else 1
    name = f"{sweep} L{layers} pp{pp} mb{mb} {schedule}"
    if dp > 1:
        name += f" dp{dp}" + (" bucketed" if bucket_bytes else "")
    return {"name": name, "sweep": sweep, "layers": layers, "stages": pp * chunks, "pp": pp,
            "microbatches": mb, "schedule": schedule, "dp": dp, "bucket_bytes": bucket_bytes}


def sweeps(tiny: bool) -> dict[str, list[dict]]:
    if tiny:
        return {
            "scale": [case("scale", 2, 2, 2), case("scale", 4, 4, 4)],
            "schedules": [case("schedules", 4, 2, 4, "interleaved"), case("schedules", 2, 2, 4, "zb-h1")],
            "dp": [case("dp", 2, 2, 2, dp=2), case("dp", 2, 2, 2, dp=4, bucket_bytes=1 << 30)],
        }
    return {
        "scale": [case("scale", layers, pp, mb) for layers, pp, mb in
                  [(8, 8, 32), (16, 16, 64), (32, 32, 128), (64, 64, 256), (96, 64, 256)]],
        "mb": [case("mb", 32, 16, mb) for mb in (16, 32, 64, 128, 256)],
        "schedules": [case("schedules", layers, pp, mb, s) for s, layers, pp, mb in
                      [("interleaved", 16, 4, 16), ("interleaved", 32, 8, 64),
                       ("interleaved", 64, 16, 128), ("interleaved", 96, 32, 256),
                       ("zb-h1", 8, 4, 16), ("zb-h1", 16, 8, 64), ("zb-h1", 32, 16, 128),
                       ("zb-h1", 64, 32, 256)]],
        "dp": [case("dp", 8, 2, 4, dp=dp) for dp in (1, 4, 16, 64, 256, 1024)]
        + [case("dp", 8, 2, 4, dp=dp, bucket_bytes=1 << 30) for dp in (16, 256, 1024)],
    }


def strategy(c: dict) -> list:
    s = []
    if c["schedule"] == "zb-h1":
        s.append(piper.split_backward())
    s += [piper.place(pp=c["pp"]), piper.split(c["microbatches"])]
    if c["dp"] > 1:
        s.append(piper.replicate(c["dp"], bucket_bytes=c["bucket_bytes"]))
    s.append(piper.order(schedule=c["schedule"]))
    return s


def plan_size(module) -> dict:
    progs = programs(module)
    tasks = instructions = 0
    for p in progs.values():
        for op in p.body.block.ops:
            instructions += 1
            if isinstance(op, sched.CallOp) and op.task.data not in ("pack", "unpack"):
                tasks += 1
    return {"tasks": tasks, "instructions": instructions, "devices": len(progs)}


# Clock steps grouped into the parts the JSON reports.
def parts(steps: list[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for what, s in steps:
        if what.startswith("verify "):
            out["ir_verify"] += s
        elif what in ("pipeline-split", "split_backward", "recompute"):
            out["graph_passes"] += s
        elif what == "lower-dist-to-sched":
            out["lowering"] += s
        elif what == "verify-plan":
            out["verify_plan"] += s
        elif what == "expand":
            out["expand"] += s
        else:
            out["dist_passes"] += s
    return dict(out)


def run_case(c: dict) -> dict:
    load_before = load_average()
    step, capture_s = captured(c["layers"], c["stages"])
    module = step.module.clone()
    clock = Clock()
    gc.collect()
    t0 = time.perf_counter()
    compile_strategy(module, strategy(c), clock=clock)
    compile_s = time.perf_counter() - t0
    size = plan_size(module)
    by_part = parts(clock.steps)
    per_pass: dict[str, float] = defaultdict(float)
    for what, s in clock.steps:
        per_pass[what] += s
    out = dict(c)
    out.update(size)
    out.update({
        "capture_s": round(capture_s, 3),
        "compile_s": round(compile_s, 3),
        "total_s": round(capture_s + compile_s, 3),
        "parts_s": {k: round(v, 3) for k, v in by_part.items()},
        "passes_s": {k: round(v, 3) for k, v in per_pass.items()},
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    })
    del module
    gc.collect()
    return out


# --------------------------------------------------------------------------
# results


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib.metadata import version

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "xdsl": version("xdsl"), "platform": platform.platform()}


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def exponent(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(seconds) against log(tasks)."""
    pts = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / den, 3) if den else None


def summary(cases: list[dict]) -> dict:
    out: dict = {}
    for sweep in sorted({c["sweep"] for c in cases}):
        done = [c for c in cases if c["sweep"] == sweep and "compile_s" in c]
        out[sweep] = {
            "compile_exponent": exponent([(c["tasks"], c["compile_s"]) for c in done]),
            "seconds_per_1000_tasks": [round(1000 * c["compile_s"] / c["tasks"], 3)
                                       for c in done if c["tasks"]],
        }
    single = [c for c in cases if "compile_s" in c and c["dp"] == 1]
    out["all_dp1"] = {"compile_exponent": exponent([(c["tasks"], c["compile_s"]) for c in single])}
    head = next((c for c in cases if c["name"] == HEADLINE and "compile_s" in c), None)
    if head is not None:
        out["headline"] = {"case": HEADLINE, "total_s": head["total_s"],
                           "capture_s": head["capture_s"], "compile_s": head["compile_s"],
                           "tasks": head["tasks"], "instructions": head["instructions"],
                           "goal_s": GOAL_S, "meets_goal": head["total_s"] < GOAL_S}
    return out


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    markers = {"scale": "o", "mb": "s", "schedules": "^", "dp": "D"}
    done = [c for c in doc["cases"] if "compile_s" in c and c["tasks"]]
    for sweep in sorted({c["sweep"] for c in done}):
        pts = sorted((c["tasks"], c["compile_s"], c["total_s"]) for c in done if c["sweep"] == sweep)
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], marker=markers.get(sweep, "o"), linestyle="-",
                label=f"{sweep}: passes + lowering + verification")
        ax.plot(xs, [p[2] for p in pts], marker=markers.get(sweep, "o"), linestyle=":",
                markerfacecolor="none", color=ax.lines[-1].get_color(),
                label=f"{sweep}: with capture")
    if done:
        ref = max(done, key=lambda c: c["tasks"])
        lo = min(c["tasks"] for c in done)
        xs = [lo, ref["tasks"]]
        ax.plot(xs, [ref["compile_s"] * x / ref["tasks"] for x in xs], color="grey",
                linestyle="--", label="linear in tasks")
    ax.axhline(GOAL_S, color="red", linewidth=0.8, label=f"goal: {GOAL_S:.0f} s (headline case)")
    head = doc["summary"].get("headline")
    if head:
        ax.annotate(f"96 layers x pp 64 x 256 mb\n{head['total_s']:.0f} s", (head["tasks"], head["total_s"]),
                    textcoords="offset points", xytext=(-120, 10), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute tasks in the plan (all devices)")
    ax.set_ylabel("seconds")
    m = doc["machine"]
    ax.set_title(f"Piper compile time ({m['cores']}-core {m['cpu'][:40]})", fontsize=10)
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the smoke test)")
    ap.add_argument("--out", default="", help="JSON path (default bench/results/compile.json)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--sweeps", default="",
                    help="comma-separated sweeps to run (scale, mb, schedules, dp; "
                         "'headline' for its case alone); default all")
    ap.add_argument("--budget", type=float, default=300.0,
                    help="stop a sweep after a case that took longer than this (seconds)")
    ap.add_argument("--update", action="store_true",
                    help="measure the chosen cases again into the existing JSON at --out "
                         "(each case keeps its own load averages)")
    args = ap.parse_args(argv)

    all_sweeps = sweeps(args.tiny)
    if args.sweeps == "headline":
        chosen = {"scale": [c for c in all_sweeps["scale"] if c["name"] == HEADLINE]}
    elif args.sweeps:
        names = args.sweeps.split(",")
        bad = [n for n in names if n not in all_sweeps]
        if bad:
            ap.error(f"unknown sweep {bad[0]} (one of {', '.join(all_sweeps)}, headline)")
        chosen = {n: all_sweeps[n] for n in names}
    else:
        chosen = all_sweeps
    out = Path(args.out) if args.out else RESULTS / "compile.json"
    doc = {"benchmark": "compile", "tiny": args.tiny, "machine": machine(),
           "load_average_at_start": load_average(),
           "note": "wall seconds of one run; the machine may be shared with other jobs "
                   "(see the load averages); capture is measured once per model",
           "cases": []}
    for sweep, cases in chosen.items():
        stopped = False
        for c in cases:
            if stopped:
                doc["cases"].append({**c, "skipped": f"an earlier {sweep} case took over "
                                                     f"{args.budget:.0f} s"})
                continue
            r = run_case(c)
            doc["cases"].append(r)
            print(f"{r['name']:<44} tasks {r['tasks']:>7} instr {r['instructions']:>8} "
                  f"dev {r['devices']:>5}  capture {r['capture_s']:7.2f}s  compile "
                  f"{r['compile_s']:7.2f}s  " + " ".join(f"{k} {v:.2f}" for k, v in r["parts_s"].items()),
                  flush=True)
            stopped = r["compile_s"] > args.budget
    doc["load_average_at_end"] = load_average()
    if args.update and out.exists():
        old = json.loads(out.read_text())
        fresh = {c["name"]: c for c in doc["cases"]}
        doc["remeasured"] = old.get("remeasured", []) + [{
            "cases": sorted(fresh), "load_average_at_start": doc["load_average_at_start"],
            "load_average_at_end": doc["load_average_at_end"]}]
        for key in ("load_average_at_start", "load_average_at_end"):
            doc[key] = old.get(key)  # of the run that measured the rest
        doc["cases"] = [fresh.pop(c["name"], c) for c in old["cases"]] + list(fresh.values())
    doc["summary"] = summary(doc["cases"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["summary"], indent=1))
    if not args.no_plot:
        plot(doc, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
