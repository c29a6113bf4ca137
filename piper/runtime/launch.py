"""Launching a plan on several processes with torchrun, and collecting it.

`save_plan` writes a plan directory (plan.mlir, state.pt, data.pt, and
plan.cache, the parsed plan that ranks load instead of parsing the text);
`run_plan` starts `torchrun --nproc-per-node N` on 127.0.0.1 with one
worker per program, waits, and assembles the result: per-step losses,
the final training state (shards concatenated back), step times and peak
live bytes per rank. Before any process starts, `check_before_launch`
rejects a plan that fails the whole-program checks, needs another number
of processes, or does not fit its batches. Multi-node runs start one
launcher per node (`nnodes`, `node_rank`) with torchrun's own rendezvous
flags through `torchrun_args`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import torch

from piper.backend.kernels import cpu_kernels, runs_triton_groups, triton_enabled
from piper.diagnostics import PiperError


@dataclass
class RunResult:
    losses: list[float]
    state: dict[str, torch.Tensor]
    seconds: dict[int, list[float]] = field(default_factory=dict)
    peak_bytes: dict[int, list[int]] = field(default_factory=dict)
    log: str = ""


def save_plan(plan_dir: str, module, state: dict[str, torch.Tensor], batches: list[dict]) -> None:
    from piper.ir import print_module
    from piper.runtime.plan_cache import write_cache

    os.makedirs(plan_dir, exist_ok=True)
    text = print_module(module)
    with open(os.path.join(plan_dir, "plan.mlir"), "w") as f:
        f.write(text)
    write_cache(plan_dir, text, module)  # ranks load it instead of parsing the text
    torch.save({k: v.detach().clone() for k, v in state.items()}, os.path.join(plan_dir, "state.pt"))
    torch.save(batches, os.path.join(plan_dir, "data.pt"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_batches(module, batches: list[dict], names: dict[str, str] | None = None) -> None:
    """Every batch holds every input the programs read, with the rows they
    slice: replicas x microbatches chunks of the captured shape. `names`:
    the user's name of each input, for messages."""
    names = names or {}
    from piper.analysis.plan_check import programs
    from piper.dialects import sched
    from piper.runtime.executor import batch_layout

    shapes: dict[str, list[int]] = {}
    for prog in programs(module).values():
        for op in prog.body.block.ops:
            if isinstance(op, sched.InputOp):
                shapes.setdefault(op.input_name.data, list(op.result.type.get_shape()))
    reps, mbs = batch_layout(module)
    if shapes and not batches:
        raise PiperError("no batches: the plan reads inputs " + ", ".join(sorted(shapes)))
    for i, batch in enumerate(batches):
        if not isinstance(batch, dict):
            raise PiperError(f"batches[{i}] is a {type(batch).__name__}, not a dict of "
                             f"tensors keyed {', '.join(sorted(shapes))}")
        for name, shape in sorted(shapes.items()):
            user = names.get(name, name)
            if name not in batch:
                raise PiperError(f"batches[{i}] has no input '{user}' (it has "
                                 f"{', '.join(map(repr, sorted(batch))) or 'none'})")
            if not isinstance(batch[name], torch.Tensor):
                raise PiperError(f"batches[{i}]['{user}'] is a {type(batch[name]).__name__}, "
                                 f"not a tensor")
            got = list(batch[name].shape)
            want = [shape[0] * reps * mbs, *shape[1:]] if shape else []
            if got != want:
                raise PiperError(
                    f"batches[{i}]['{user}'] has shape {got}; the plan takes {reps} "
                    f"replicas x {mbs} microbatches of shape {shape}, a batch of shape {want}")


def check_before_launch(plan_dir: str, world: int, steps: int | None = None):
    """What can be known wrong before any process starts: the plan's
    whole-program checks (producers, message matching, collective order,
    progress), one program per process, batches of the plan's shape.
    Returns the plan module."""
    from piper.analysis.plan_check import check_plan, programs
    from piper.runtime.plan_cache import read_plan

    from piper.libraries import load_plan_libraries

    load_plan_libraries(plan_dir)
    module = read_plan(plan_dir)
    n = len(programs(module))
    if n != world:
        raise PiperError(f"the plan has {n} device programs; the job would start {world} "
                         f"processes (one per program)")
    check_plan(module)
    batches = torch.load(os.path.join(plan_dir, "data.pt"))
    check_batches(module, batches)
    if steps is not None and steps > len(batches):
        raise PiperError(f"{steps} steps asked for, but {plan_dir} holds {len(batches)} "
                         f"batches (one global batch per step)")
    return module


def run_plan(plan_dir: str, nproc: int, steps: int = 1, timeout: float = 60.0,
             worker_args: tuple[str, ...] = (), torchrun_args: tuple[str, ...] | None = None,
             nnodes: int = 1, node_rank: int = 0) -> RunResult:
    """Run the plan in `plan_dir` with torchrun: `nproc` processes on this
    node. Multi-node: `nnodes` launchers, one per node, each given its
    `node_rank` and torchrun's rendezvous flags in `torchrun_args`
    (--rdzv-backend/--rdzv-endpoint, or --master-addr/--master-port); the
    plan directory must be shared, and node 0 collects the result (other
    nodes return an empty one)."""
    if steps < 1:
        raise PiperError(f"steps must be at least 1, got {steps}")
    module = check_before_launch(plan_dir, nproc * nnodes, steps)
    if not torch.cuda.is_available() and triton_enabled() and runs_triton_groups(module):
        cpu_kernels()  # decided (and said) once here; the ranks inherit the environment
    if torchrun_args is None:
        torchrun_args = ("--master-addr", "127.0.0.1", "--master-port", str(free_port()))
    nodes = ("--nnodes", str(nnodes), "--node-rank", str(node_rank)) if nnodes > 1 else ()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *nodes,
           "--max-restarts", "0", *torchrun_args,
           "-m", "piper.runtime.worker", plan_dir, "--steps", str(steps),
           "--timeout", str(timeout), *worker_args]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONWARNINGS="ignore")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=timeout * 3 + 120)
    except subprocess.TimeoutExpired as e:
        raise PiperError(f"piper-run: the job did not finish within {e.timeout:.0f} s") from None
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        lines = [ln for ln in log.splitlines() if ln.startswith("piper:")]
        detail = "\n".join(lines) if lines else log[-3000:]
        raise PiperError(f"piper-run: the job failed (exit {proc.returncode})", context=detail)
    if node_rank != 0:
        return RunResult([], {}, log=log)
    return collect(plan_dir, log)


def collect(plan_dir: str, log: str = "") -> RunResult:
    """The job's result from every rank's out/rank{r}.pt."""
    from piper.analysis.plan_check import programs
    from piper.dialects import sched
    from piper.runtime.plan_cache import read_plan

    module = read_plan(plan_dir)
    progs = programs(module)
    nproc = len(progs)
    parts: dict[str, dict[int, torch.Tensor]] = {}
    full: dict[str, torch.Tensor] = {}
    init = torch.load(os.path.join(plan_dir, "state.pt"))
    losses: list[float] = []
    res = RunResult([], {}, log=log)
    for r in range(nproc):
        out = torch.load(os.path.join(plan_dir, "out", f"rank{r}.pt"))
        res.seconds[r] = out["seconds"]
        res.peak_bytes[r] = out["peak_bytes"]
        if not losses and any(out["losses"]):
            losses = [sum(step) / len(step) if step else float("nan") for step in out["losses"]]
        for op in progs[r].body.block.ops:
            if isinstance(op, sched.StoreOp) and not op.is_loss:
                name = op.tensor_name.data
                if op.shard is not None:
                    k, n = (a.data for a in op.shard.data)
                    parts.setdefault(name, {})[k] = out["state"][name]
                else:
                    full.setdefault(name, out["state"][name])
    for name, shards in parts.items():
        flat = torch.cat([shards[k].reshape(-1) for k in sorted(shards)])
        full[name] = flat.reshape(init[name].shape)
    res.losses = losses
    res.state = full
    return res
