"""Launching a plan on several processes with torchrun, and collecting it.

`save_plan` writes a plan directory (plan.mlir, state.pt, data.pt, and
plan.cache, the parsed plan that ranks load instead of parsing the text);
`run_plan` starts `torchrun --nproc-per-node N` on 127.0.0.1 with one
worker per program, waits, and assembles the result: per-step losses,
the final training state (shards concatenated back), step times and peak
live bytes per rank. Multi-node runs use torchrun's own rendezvous flags
through `torchrun_args`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field

import torch

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


def run_plan(plan_dir: str, nproc: int, steps: int = 1, timeout: float = 60.0,
             worker_args: tuple[str, ...] = (), torchrun_args: tuple[str, ...] | None = None,
             ) -> RunResult:
    if torchrun_args is None:
        torchrun_args = ("--master-addr", "127.0.0.1", "--master-port", str(free_port()))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
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
    return collect(plan_dir, nproc, log)


def collect(plan_dir: str, nproc: int, log: str = "") -> RunResult:
    from piper.analysis.plan_check import programs
    from piper.dialects import sched
    from piper.runtime.plan_cache import read_plan

    module = read_plan(plan_dir)
    progs = programs(module)
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
            if isinstance(op, sched.StoreOp) and op.tensor_name.data != "loss":
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
