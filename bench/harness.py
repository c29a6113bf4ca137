"""Shared harness of the Piper-versus-PyTorch benchmarks.

Every benchmark script is both a driver and a worker:

- driver (`python bench/dp_bench.py`): compiles Piper's plan of each case
  with `piper.compile`, saves it with the initial training state and the
  global batches (`plan.save`), writes the case's settings beside them and
  starts one process per rank on 127.0.0.1 (with the environment torchrun
  gives its workers, forked from a process that imported torch already)
  running the same script in worker mode;
  then it reads every rank's record, writes one JSON file and one plot
  under bench/results/.
- worker (`--worker CASE_DIR`, one process per rank): builds the PyTorch
  baseline (DDP, FSDP2, torch.distributed.pipelining) and Piper's
  `RankRuntime` in the *same process*, from the *same* initial state, with
  the same number of threads, and trains both on the *same* global batches.

What is measured, the same way for both sides:

- step time: wall time of one training step on one rank (forward,
  backward, gradient communication, optimizer), started after a barrier so
  all ranks start together. A step's time is the slowest rank's; the
  figure is the median over the timed steps. The two sides alternate step
  by step (even steps PyTorch first, odd steps Piper first) so that drift
  of a shared machine hits both alike.
- peak memory: bytes of CPU tensor memory the side's allocations hold at
  once, read from the CPU allocator through the PyTorch profiler's memory
  events. The window opens before the side builds its training state
  (parameters, optimizer state, buffers) and the peak is taken inside its
  training steps, so it counts persistent state, gradients, communication
  buffers, saved activations and temporaries, and nothing of the other
  side. Two profiled (untimed) steps per side; the second is steady state.
  Piper's own accounting (live bytes of the tensors its program holds,
  equal to the plan's estimate) is recorded beside it.
- losses: every step's loss on both sides, as a sanity check that both
  train the same model the same way.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
_STEP_MARK = "piper.bench.step"
_LOAD_AT_START = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def proc_loadavg() -> str | None:
    """/proc/loadavg as written (1, 5, 15-minute load, tasks, last pid)."""
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return None


_PROC_LOADAVG_AT_START = proc_loadavg()
SHARED_NOTE = ("shared {cores}-core machine: other jobs ran on the same cores, timings are "
               "noisy; rerun on a quiet machine before quoting")


# --------------------------------------------------------------------------
# driver side
# --------------------------------------------------------------------------


def machine(nproc: int, threads: int, shared: bool = True) -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    out = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "processes": nproc,
        "threads_per_process": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": "gloo on 127.0.0.1",
    }
    if shared:
        out["note"] = SHARED_NOTE.format(cores=os.cpu_count())
    if _LOAD_AT_START is not None:
        out["load_average_1min_at_start"] = _LOAD_AT_START
    if _PROC_LOADAVG_AT_START is not None:
        out["proc_loadavg_at_start"] = _PROC_LOADAVG_AT_START
    return out


def common_args(ap: argparse.ArgumentParser, steps: int = 10, warmup: int = 2) -> None:
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--tiny", action="store_true",
                    help="tiny model and few steps (the smoke test uses it)")
    ap.add_argument("--steps", type=int, default=steps, help="timed steps per side")
    ap.add_argument("--warmup", type=int, default=warmup,
                    help="untimed steps per side after the two profiled ones")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads per process (both sides)")
    ap.add_argument("--out", default="", help="JSON path (default bench/results/NAME.json)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--quiet-machine", action="store_true",
                    help="do not mark the results as measured on a shared machine")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--profile", default="",
                    help="cProfile 3 extra Piper steps per rank into this folder")
    ap.add_argument("--repeat", type=int, default=0,
                    help="run each job this many times and take the median over all their "
                         "steps (default 3, 1 with --tiny)")


def base_settings(args, cfg) -> dict:
    """What every worker reads: model, optimizer, steps, threads."""
    from dataclasses import asdict

    return {"model": asdict(cfg), "lr": LR, "steps": args.steps, "warmup": args.warmup,
            "threads": args.threads, "breakdown": True,
            "profile": str(Path(args.profile).resolve()) if args.profile else ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_case(case_dir: Path, plan, batches: list[dict], settings: dict) -> None:
    """A case directory: Piper's plan, state and data, and the settings
    the worker reads to build the baseline."""
    plan.save(str(case_dir), batches)
    (case_dir / "bench.json").write_text(json.dumps(settings, indent=1))


def launch(script: str, case_dirs: list[Path], nproc: int, threads: int,
           timeout: float, repeat: int = 1) -> list[list[dict]]:
    """Run the worker of `script` on `nproc` local processes over the given
    cases (one job, `repeat` times: on a shared machine one job's steps
    can all fall in a slow or a fast minute); return, per case, every
    rank's record, the timed steps of all jobs one after the other."""
    runs = [_launch_once(script, case_dirs, nproc, threads, timeout) for _ in range(repeat)]
    out = runs[0]
    for later in runs[1:]:
        for case, recs in zip(out, later, strict=True):
            for rec, more in zip(case, recs, strict=True):
                for side, data in rec["sides"].items():
                    data["seconds"] = data["seconds"] + more["sides"][side]["seconds"]
                    data["peak_alloc_bytes"] = max(data["peak_alloc_bytes"],
                                                   more["sides"][side]["peak_alloc_bytes"])
    for case in out:
        for rec in case:
            rec["repeats"] = repeat
    return out


def local_job(script: str, args: list[str], nproc: int, env: dict, timeout: float,
              log_path: Path) -> None:
    """`python SCRIPT ARGS` on `nproc` local ranks, as torchrun would start
    them (RANK, WORLD_SIZE, MASTER_ADDR, ...), forked from a process that
    has imported torch already (piper/runtime/launch.py LocalRanks;
    PIPER_FORKSERVER=0: fresh interpreters); SystemExit with the log's end
    if the job fails or outlives `timeout`."""
    from piper.runtime.launch import LocalRanks, _stop  # lazy: the workers never launch

    cmd = [sys.executable, str(Path(script).resolve()), *args]
    with open(log_path, "w") as log_file:
        ranks = LocalRanks(cmd, nproc, env, log_file)
        try:
            code = ranks.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop(ranks)
            raise SystemExit(f"{Path(script).name}: the job did not finish "
                             f"within {timeout:.0f} s") from None
    if code != 0:
        log = log_path.read_text()[-4000:]
        raise SystemExit(f"{Path(script).name}: the job failed (exit {code}):\n{log}")


def _launch_once(script: str, case_dirs: list[Path], nproc: int, threads: int,
                 timeout: float) -> list[list[dict]]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    local_job(script, ["--worker", ",".join(str(c) for c in case_dirs)], nproc, env, timeout,
              case_dirs[0] / "job.log")
    out = []
    for case in case_dirs:
        out.append([json.loads((case / "out" / f"rank{r}.json").read_text())
                    for r in range(nproc)])
    return out


def summarize(ranks: list[dict], sides: tuple[str, str] = ("torch", "piper")) -> dict:
    """Per side: step time (slowest rank per step, median), peak bytes per
    rank, losses per step; then the Piper / PyTorch ratios."""
    out: dict = {}
    for side in sides:
        recs = [r["sides"][side] for r in ranks]
        n = len(recs[0]["seconds"])
        per_step = [max(rec["seconds"][i] for rec in recs) for i in range(n)]
        losses = []
        for i in range(len(recs[0]["losses"])):
            vals = [rec["losses"][i] for rec in recs if rec["losses"][i] is not None]
            losses.append(sum(vals) / len(vals) if vals else None)
        out[side] = {
            "what": recs[0]["what"],
            "median_step_s": statistics.median(per_step),
            "step_s": per_step,
            "median_step_s_per_rank": [statistics.median(rec["seconds"]) for rec in recs],
            "peak_bytes_per_rank": [rec["peak_alloc_bytes"] for rec in recs],
            "losses": losses,
        }
        for extra in ("runtime_peak_live_bytes", "plan_peak_bytes"):
            if extra in recs[0]:
                out[side][f"{extra}_per_rank"] = [rec[extra] for rec in recs]
        if "breakdown_s" in recs[0]:
            out[side]["breakdown_s_rank0"] = recs[0]["breakdown_s"]
    a, b = (out[s] for s in sides)
    out["ratio_step_time"] = b["median_step_s"] / a["median_step_s"]
    out["ratio_peak_bytes"] = max(b["peak_bytes_per_rank"]) / max(a["peak_bytes_per_rank"])
    diffs = [abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a["losses"], b["losses"], strict=True)
             if x is not None and y is not None]
    out["loss_max_rel_diff"] = max(diffs) if diffs else None
    out["worker_phases_s"] = ranks[0].get("phases_s", {})  # rank 0's clock, from its start
    out["repeats"] = ranks[0].get("repeats", 1)
    return out


def repeats(args) -> int:
    """How many times each benchmark job runs (--repeat; default 3, 1 with --tiny)."""
    if args.repeat:
        return args.repeat
    return 1 if args.tiny else 3


def write_results(name: str, out_path: str, doc: dict, plot: bool = True) -> Path:
    if hasattr(os, "getloadavg"):
        doc["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    if (end := proc_loadavg()) is not None:
        doc["machine"]["proc_loadavg_at_end"] = end
    path = Path(out_path) if out_path else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    if plot:
        plot_cases(doc, path.with_suffix(".png"))
    return path


def plot_cases(doc: dict, png: Path) -> None:
    """Two panels: median step time per case, peak bytes per rank per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = doc["cases"]
    names = [c["case"] for c in cases]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 2.2 * len(cases), 4))
    x = range(len(cases))
    w = 0.38
    t = [c["torch"]["median_step_s"] * 1e3 for c in cases]
    p = [c["piper"]["median_step_s"] * 1e3 for c in cases]
    ax1.bar([i - w / 2 for i in x], t, w, label="PyTorch")
    ax1.bar([i + w / 2 for i in x], p, w, label="Piper")
    for i, c in enumerate(cases):
        ax1.text(i + w / 2, p[i], f"{c['ratio_step_time']:.2f}x", ha="center", va="bottom",
                 fontsize=8)
    ax1.set_xticks(list(x), names, rotation=20)
    ax1.set_ylabel("median step time (ms)")
    ax1.legend(loc="lower right", framealpha=0.9)
    mt = [max(c["torch"]["peak_bytes_per_rank"]) / 2**20 for c in cases]
    mp = [max(c["piper"]["peak_bytes_per_rank"]) / 2**20 for c in cases]
    ax2.bar([i - w / 2 for i in x], mt, w, label="PyTorch")
    ax2.bar([i + w / 2 for i in x], mp, w, label="Piper")
    for i, c in enumerate(cases):
        ax2.text(i + w / 2, mp[i], f"{c['ratio_peak_bytes']:.2f}x", ha="center", va="bottom",
                 fontsize=8)
    ax2.set_xticks(list(x), names, rotation=20)
    ax2.set_ylabel("peak tensor memory, largest rank (MiB)")
    ax2.legend(loc="lower right", framealpha=0.9)
    fig.suptitle(f"{doc['benchmark']}: Piper vs {doc['baseline']} "
                 f"({doc['machine']['cpu']}, {doc['machine']['cores']} cores)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def ratio_line(doc: dict) -> str:
    parts = [f"{c['case']}: step time x{c['ratio_step_time']:.3f}, "
             f"peak memory x{c['ratio_peak_bytes']:.3f}, "
             f"loss rel. diff {c['loss_max_rel_diff']:.1e}"
             for c in doc["cases"]]
    return "\n".join(parts)


# --------------------------------------------------------------------------
# worker side
# --------------------------------------------------------------------------


class Side:
    """One way of training: `build()` allocates its training state (inside
    the memory window), `step(batch)` trains one step on the global batch
    and returns this rank's view of the loss (None if it has none)."""

    what = ""

    def build(self) -> None:
        raise NotImplementedError

    def step(self, batch: dict[str, torch.Tensor]) -> float | None:
        raise NotImplementedError

    def extra(self) -> dict:
        return {}


class PiperSide(Side):
    """Piper's runtime over the case's plan: `RankRuntime.step`."""

    def __init__(self, case_dir: Path, rank: int, world: int, breakdown: int = 0):
        """`breakdown`: time the stage functions and report the median of
        the last `breakdown` steps (0: do not)."""
        from piper.analysis.memory import program_peak_bytes
        from piper.analysis.plan_check import programs
        from piper.runtime.executor import RankRuntime
        from piper.runtime.plan_cache import read_plan

        self.module = read_plan(str(case_dir))
        self.full = torch.load(case_dir / "state.pt")
        self.rank = rank
        self.rt = RankRuntime(self.module, rank, world)
        self.plan_peak = program_peak_bytes(programs(self.module)[rank])
        self.runtime_peak = 0
        self.what = "Piper RankRuntime.step over the compiled plan"
        self.per_step: list[dict[str, float]] = []
        self._acc: dict[str, float] | None = None
        self.breakdown = breakdown
        if breakdown:
            self._time_calls()

    def _time_calls(self) -> None:
        """Time the stage functions by kind (F, B, I, W, OPT, pack, ...)."""
        for name, fn in list(self.rt.fns.items()):
            self.rt.fns[name] = _TimedCall(fn, name.rstrip("0123456789"), self)
        self.rt._decode()  # the decoded program holds the functions it calls
        self._acc = {}

    def build(self) -> None:
        from piper.runtime.worker import local_state

        self.state = local_state(self.module, self.rank, self.full)

    def step(self, batch):
        if self._acc is not None:
            self._acc = {}
        stats = self.rt.step(self.state, batch)
        if self._acc is not None:
            self.per_step.append(self._acc)
        self.runtime_peak = max(self.runtime_peak, stats.peak_bytes)
        return sum(stats.losses) / len(stats.losses) if stats.losses else None

    def extra(self) -> dict:
        out = {"runtime_peak_live_bytes": self.runtime_peak, "plan_peak_bytes": self.plan_peak}
        if self.per_step:
            out["breakdown_s"] = median_breakdown(self.per_step, self.breakdown)
        return out


class _TimedCall:
    """A stage function whose calls add their seconds to `side._acc[kind]`;
    it keeps the function's hand-over calling convention (`call_owned`), so
    timing does not keep arguments alive longer."""

    def __init__(self, fn, kind: str, side: PiperSide):
        self.fn, self.kind, self.side = fn, kind, side

    def call_owned(self, args: list):
        t0 = time.perf_counter()
        out = self.fn.call_owned(args)
        acc = self.side._acc
        acc[self.kind] = acc.get(self.kind, 0.0) + time.perf_counter() - t0
        return out


def median_breakdown(per_step: list[dict[str, float]], last: int = 0) -> dict[str, float]:
    """Median seconds per part over the steps (the last `last` ones if given)."""
    steps = per_step[-last:] if last else per_step
    keys = sorted({k for s in steps for k in s})
    return {k: statistics.median(s.get(k, 0.0) for s in steps) for k in keys}


def model_params(full: dict[str, torch.Tensor], module: torch.nn.Module) -> dict:
    """The entries of a saved training state that are this module's."""
    return {k: full[k] for k in module.state_dict()}


def _allocations(prof) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    from torch._C._profiler import _EventType

    allocs: list[tuple[int, int, int]] = []
    steps: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.typed[0] == _EventType.Allocation:
            f = e.typed[1]
            if f.device.type == "cpu":
                allocs.append((e.start_time_ns, f.alloc_size, f.total_allocated))
        elif e.name == _STEP_MARK:
            steps.append((e.start_time_ns, e.end_time_ns))
        stack.extend(e.children)
    allocs.sort()
    return allocs, steps


def measure_peak(side: Side, batches: list[dict], barrier: Callable[[], None]) -> tuple[int, list]:
    """Build `side` and run one step per batch under the profiler; return
    the peak allocator bytes inside the steps above the level before the
    build, and the losses."""
    from torch.profiler import ProfilerActivity, profile, record_function

    gc.collect()
    barrier()
    losses = []
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        side.build()
        for b in batches:
            barrier()
            with record_function(_STEP_MARK):
                losses.append(side.step(b))
    allocs, steps = _allocations(prof)
    if not allocs:
        return 0, losses
    start = allocs[0][2] - allocs[0][1]
    inside = [tot for t, _, tot in allocs if any(s <= t <= e for s, e in steps)]
    return (max(inside) - start if inside else 0), losses


def run_worker(case_dirs: str, make_baseline: Callable[[dict, dict, int, int], Side]) -> int:
    """The per-rank part of every benchmark; writes out/rank{r}.json per case."""
    import torch.distributed as dist

    t_start = time.perf_counter()
    torch.manual_seed(0)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=600))
    rank, world = dist.get_rank(), dist.get_world_size()
    for case in case_dirs.split(","):
        phases = {"start": time.perf_counter() - t_start}
        case_dir = Path(case)
        settings = json.loads((case_dir / "bench.json").read_text())
        torch.set_num_threads(settings["threads"])
        batches = torch.load(case_dir / "data.pt")
        # Piper creates its groups first, in the same order on every rank
        piper_side = PiperSide(case_dir, rank, world,
                               settings["steps"] if settings.get("breakdown") else 0)
        base = make_baseline(settings, piper_side.full, rank, world)
        phases["setup"] = time.perf_counter() - t_start
        sides = {"torch": base, "piper": piper_side}
        rec = {s: {"what": side.what, "seconds": [], "losses": []} for s, side in sides.items()}
        mem_steps = 2
        for name, side in sides.items():
            peak, losses = measure_peak(side, batches[:mem_steps], dist.barrier)
            rec[name]["peak_alloc_bytes"] = peak
            rec[name]["losses"].extend(losses)
            phases[f"memory_{name}"] = time.perf_counter() - t_start
        total = settings["warmup"] + settings["steps"]
        for i in range(total):
            order = ("torch", "piper") if i % 2 == 0 else ("piper", "torch")
            batch = batches[(mem_steps + i) % len(batches)]
            for name in order:
                dist.barrier()
                t0 = time.perf_counter()
                loss = sides[name].step(batch)
                dt = time.perf_counter() - t0
                rec[name]["losses"].append(loss)
                if i >= settings["warmup"]:
                    rec[name]["seconds"].append(dt)
        phases["timed"] = time.perf_counter() - t_start
        for name, side in sides.items():
            rec[name].update(side.extra())
        if settings.get("profile"):
            _profile_piper(piper_side, batches, Path(settings["profile"]) /
                           f"{case_dir.name}_rank{rank}.prof", dist.barrier)
        (case_dir / "out").mkdir(exist_ok=True)
        (case_dir / "out" / f"rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "sides": rec, "phases_s": phases}))
        del sides, base, piper_side
        gc.collect()
        dist.barrier()
    dist.destroy_process_group()
    return 0


def _profile_piper(side: PiperSide, batches, path: Path, barrier) -> None:
    """cProfile three more Piper steps into `path` (pstats format)."""
    import cProfile

    prof = cProfile.Profile()
    for i in range(3):
        barrier()
        prof.enable()
        side.step(batches[i % len(batches)])
        prof.disable()
    path.parent.mkdir(parents=True, exist_ok=True)
    prof.dump_stats(str(path))


# --------------------------------------------------------------------------
# the model every benchmark trains
# --------------------------------------------------------------------------

LR = 1e-3


def gpt_config(tiny: bool, layers: int = 4, batch: int = 8):
    """The benchmark GPT: dim 256, 4 heads, 64 tokens, vocabulary 256
    (--tiny: dim 16, 8 tokens, the smoke test's size)."""
    from examples.gpt import GPTConfig

    if tiny:
        return GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=layers, batch=2, tied=False)
    return GPTConfig(vocab=256, seq=64, dim=256, heads=4, layers=layers, batch=batch, tied=False)


def gpt_batches(cfg, per_step: int, count: int) -> list[dict[str, torch.Tensor]]:
    """`count` global batches of `per_step` sequences (distinct seeds)."""
    from dataclasses import replace

    from examples.gpt import gpt_data

    out = []
    for s in range(count):
        idx, tgt = gpt_data(replace(cfg, batch=per_step), seed=100 + s)
        out.append({"input0": idx, "input1": tgt})
    return out


def make_model(settings: dict, full: dict[str, torch.Tensor]):
    """The benchmark GPT with the case's initial weights."""
    from examples.gpt import GPTConfig, make_gpt

    model = make_gpt(GPTConfig(**settings["model"]))
    model.load_state_dict(model_params(full, model))
    return model
