"""Launching a plan on several processes with torchrun, feeding it, collecting it.

`save_plan` writes a plan directory (plan.mlir, state.pt, optionally
data.pt, and plan.cache, the parsed plan that ranks load instead of
parsing the text); `run_plan` starts `torchrun --nproc-per-node N` on
127.0.0.1 with one worker per program, streams the data to the ranks step
by step (feed.py), prints a progress line per step and writes
metrics.jsonl (progress.py), hands periodic checkpoints to a callback, and
assembles the result: per-step losses, the final training state (shards
concatenated back), step times and peak live bytes per rank. Before any
process starts, `check_before_launch` rejects a plan whose files are
unreadable or that fails the whole-program checks, needs another number of
processes, or a checkpoint that is incomplete, damaged or from another
model; the first batch is checked against the plan too. Multi-node runs
start one launcher per node (`nnodes`, `node_rank`) with torchrun's own
rendezvous flags through `torchrun_args`.
"""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.distributed

from piper.backend.kernels import cpu_kernels, runs_triton_groups, triton_enabled
from piper.analysis.plan_check import check_plan, programs
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.dialects.graph import torch_dtype
from piper.ir import print_module
from piper.libraries import load_plan_libraries
from piper.runtime import forkserver
from piper.runtime.checkpoint import check_matches, join_shards, latest, verify
from piper.runtime.plan_cache import read_plan, write_cache
from piper.runtime.feed import Feeder, InputSpec, input_spec, read_input_names
from piper.runtime.progress import (PROGRESS, MetricsLog, ProgressLine, StepCollector,
                                    step_metrics)


@dataclass
class RunResult:
    losses: list[float]
    state: dict[str, torch.Tensor]
    seconds: dict[int, list[float]] = field(default_factory=dict)
    peak_bytes: dict[int, list[int]] = field(default_factory=dict)
    log: str = ""
    first_step: int = 0  # a resumed run's first step
    metrics: str = ""  # the path of metrics.jsonl


def save_plan(plan_dir: str, module, state: dict[str, torch.Tensor],
              batches: list[dict] | None = None) -> None:
    """plan.mlir, plan.cache and state.pt; data.pt when `batches` are given
    (a run can also take its data as an iterable: `run_plan(data=...)`)."""
    os.makedirs(plan_dir, exist_ok=True)
    text = print_module(module)
    with open(os.path.join(plan_dir, "plan.mlir"), "w") as f:
        f.write(text)
    write_cache(plan_dir, text, module)  # ranks load it instead of parsing the text
    torch.save({k: v.detach().clone() for k, v in state.items()}, os.path.join(plan_dir, "state.pt"))
    if batches is not None:
        torch.save(batches, os.path.join(plan_dir, "data.pt"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plan_inputs(plan_dir: str, module) -> InputSpec:
    """The plan's inputs, with the user's names when the directory has them."""
    order, names = read_input_names(plan_dir)
    return input_spec(module, order, names)


def saved_batches(plan_dir: str) -> list:
    """data.pt: the batches `plan.save` wrote, loaded without running code."""
    path = os.path.join(plan_dir, "data.pt")
    if not os.path.exists(path):
        raise PiperError(f"{path}: no such file, and no data given (plan.run(data), "
                         f"piper-run --data MODULE:FUNCTION, or plan.save(dir, batches))")
    try:
        batches = torch.load(path, weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holding code
        raise PiperError(f"{path}: cannot be read as saved batches ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(batches, list):
        raise PiperError(f"{path}: holds a {type(batches).__name__}, not a list of batches")
    return batches


def read_state(plan_dir: str) -> tuple[dict[str, list[int]], dict[str, torch.dtype]]:
    """state.pt checked loadable (tensors only): each tensor's shape and dtype."""
    path = os.path.join(plan_dir, "state.pt")
    if not os.path.exists(path):
        raise PiperError(f"{path}: no such file (the plan's initial state)")
    try:
        state = torch.load(path, weights_only=True, mmap=True)
    except Exception as e:
        raise PiperError(f"{path}: cannot be read as the plan's initial state "
                         f"({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PiperError(f"{path}: not a dict of tensors")
    return {k: list(v.shape) for k, v in state.items()}, {k: v.dtype for k, v in state.items()}


def _loaded_shape(full: list[int], op) -> int:
    """Elements a load of `full` gives: all, or its shard's chunk (as
    worker.local_state cuts it: `reshape(-1).chunk(n)[k]`)."""
    total = math.prod(full)
    if op.shard is None:
        return total
    k, n = (a.data for a in op.shard.data[:2])
    size = -(-total // n)
    return max(0, min(size, total - k * size))


def check_before_launch(plan_dir: str, world: int | None, load_checkpoint: str = ""):
    """What can be known wrong before any process starts: the plan text
    (decodable, parsed, verified; whole-program checks: producers, message
    matching, collective order, progress), one program per process, the
    initial state (loadable, every tensor the programs load, of its shape),
    the checkpoint to load (complete, checksums, the plan's tensors).
    Returns the plan module."""
    load_plan_libraries(plan_dir)
    path = os.path.join(plan_dir, "plan.mlir")
    if not os.path.exists(path):
        raise PiperError(f"{path}: no such file")
    try:
        module = read_plan(plan_dir)
    except UnicodeDecodeError as e:
        raise PiperError(f"{path}: byte {e.start} is not UTF-8 text") from None
    n = len(programs(module))
    if world is not None and n != world:
        raise PiperError(f"the plan has {n} device programs; the job would start {world} "
                         f"processes (one per program)")
    check_plan(module)
    shapes, dtypes = read_state(plan_dir)
    where = os.path.join(plan_dir, "state.pt")
    for prog in programs(module).values():
        for op in prog.body.block.ops:
            if not isinstance(op, sched.LoadOp):
                continue
            name = op.tensor_name.data
            if name not in shapes:
                raise PiperError(f"{where}: no tensor '{name}', which the plan loads")
            want = list(op.result.type.get_shape())
            fits = (shapes[name] == want if op.shard is None
                    else _loaded_shape(shapes[name], op) == math.prod(want))
            if not fits:
                raise PiperError(f"{where}: tensor '{name}' has shape {shapes[name]}; the plan "
                                 f"loads {want}" + (f" (shard {op.shard.data[0].data} of "
                                 f"{op.shard.data[1].data})" if op.shard is not None else ""))
            dt = torch_dtype(op.result.type.element_type)
            if dtypes[name] != dt:
                raise PiperError(f"{where}: tensor '{name}' is {dtypes[name]}; the plan loads "
                                 f"{dt}")
    if load_checkpoint:
        verify(load_checkpoint)
        check_matches(load_checkpoint, module, shapes)
    return module


def run_plan(plan_dir: str, nproc: int, steps: int | None = None, timeout: float = 60.0,
             worker_args: tuple[str, ...] = (), torchrun_args: tuple[str, ...] | None = None,
             nnodes: int = 1, node_rank: int = 0, *, data: Iterable | None = None,
             run_dir: str | None = None, checkpoint_every: int = 0, checkpoint_dir: str = "",
             keep_checkpoints: int = 2, resume: bool = False, load_checkpoint: str = "",
             save_checkpoint: str = "", progress=None, log_every: int = 10,
             on_checkpoint: Callable[[int, str], dict | None] | None = None) -> RunResult:
    """Run the plan in `plan_dir` with torchrun: `nproc` processes on this
    node, `steps` steps (None: one per batch until the data ends) over
    `data` (any iterable of global batches; default: the plan directory's
    data.pt), streamed to the ranks a few steps ahead (piper/runtime/feed.py).

    While it runs, one progress line per step goes to `progress` (a stream;
    None: stdout; False: silent) and `run_dir/metrics.jsonl` (default: the
    plan directory) gets every step's metrics. `checkpoint_every=K` writes a
    checkpoint every K steps (and at the end) into `checkpoint_dir`, keeping
    the newest `keep_checkpoints`; `resume=True` continues from the newest
    complete one there, skipping the batches it had consumed.
    `on_checkpoint(step, path)` runs in this process for each new periodic
    checkpoint; a dict it returns goes into metrics.jsonl at that step.

    Multi-node: `nnodes` launchers, one per node, each given its
    `node_rank` and torchrun's rendezvous flags in `torchrun_args`
    (--rdzv-backend/--rdzv-endpoint, or --master-addr/--master-port); the
    plan directory must be shared; each launcher feeds its node's ranks and
    node 0 collects the result (other nodes return an empty one)."""
    if steps is not None and steps < 1:
        raise PiperError(f"steps must be at least 1, got {steps}")
    if checkpoint_every < 0 or keep_checkpoints < 0:
        raise PiperError("checkpoint_every and keep_checkpoints must be >= 0")
    if (checkpoint_every or resume) and not checkpoint_dir:
        raise PiperError("periodic checkpoints and resume need a checkpoint directory "
                         "(--checkpoint-dir / checkpoint_dir=)")
    start = 0
    if resume:
        found = latest(checkpoint_dir)
        if found is not None:
            load_checkpoint, manifest = found[0], found[1]
            start = int(manifest["data_position"])
            if steps is not None and start >= steps:
                raise PiperError(f"{load_checkpoint} is at step {start}: nothing left of the "
                                 f"{steps} steps asked for")
    module = check_before_launch(plan_dir, nproc * nnodes, load_checkpoint)
    spec = plan_inputs(plan_dir, module)
    data = saved_batches(plan_dir) if data is None else data
    if steps is not None and hasattr(data, "__len__") and len(data) < steps:
        raise PiperError(f"{steps} steps asked for, but the data holds {len(data)} batches "
                         f"(one global batch per step)")
    feeder = Feeder(plan_dir, spec, data, range(node_rank * nproc, (node_rank + 1) * nproc),
                    start, steps)
    if node_rank != 0:
        progress = False  # node 0 reports
    feeder.pump(most=1)  # a bad first batch stops the run before any process starts
    if spec.order and feeder.ended and feeder.next == start:
        raise PiperError("no batches: the plan reads inputs "
                         + ", ".join(spec.names[n] for n in spec.order))
    for d in ("out", PROGRESS):
        shutil.rmtree(os.path.join(plan_dir, d), ignore_errors=True)
    if not torch.cuda.is_available() and triton_enabled() and runs_triton_groups(module):
        cpu_kernels()  # decided (and said) once here; the ranks inherit the environment
    direct = torchrun_args is None and nnodes == 1  # one node: the ranks, without torchrun
    nodes = ("--nnodes", str(nnodes), "--node-rank", str(node_rank)) if nnodes > 1 else ()
    extra = ["--start-step", str(start)]
    if load_checkpoint:
        extra += ["--load-checkpoint", os.path.abspath(load_checkpoint)]
    if save_checkpoint:
        extra += ["--save-checkpoint", os.path.abspath(save_checkpoint)]
    if checkpoint_dir:
        extra += ["--checkpoint-dir", os.path.abspath(checkpoint_dir), "--checkpoint-every",
                  str(checkpoint_every), "--keep-checkpoints", str(keep_checkpoints)]
    worker = ["-m", "piper.runtime.worker", plan_dir, "--steps",
              str(-1 if steps is None else steps), "--timeout", str(timeout), *extra, *worker_args]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *nodes,
           "--max-restarts", "0", *(torchrun_args or ()), *worker]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONWARNINGS="ignore")
    run_dir = run_dir or plan_dir
    metrics = MetricsLog(run_dir if node_rank == 0 else os.path.join(plan_dir, f"node{node_rank}"),
                         append=start > 0)
    tokens, unit = spec.throughput_unit()
    line = ProgressLine(steps, tokens, progress, log_every, unit) if progress is not False else None
    local = range(node_rank * nproc, (node_rank + 1) * nproc)
    collector = StepCollector(plan_dir, list(range(nproc * nnodes)) if node_rank == 0 else list(local))
    seen_ckpts = set(os.listdir(checkpoint_dir)) if os.path.isdir(checkpoint_dir or "\0") else set()
    losses: list[float] = []
    log_path = os.path.join(plan_dir, "run.log")
    silence = timeout * 3 + 120  # seconds without a finished step before the launcher gives up
    with open(log_path, "w") as log_file:
        proc = (LocalRanks([sys.executable, *worker], nproc, env, log_file) if direct else
                subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True, preexec_fn=_die_with_parent))
        try:
            while True:
                exited = proc.poll() is not None
                if not exited:
                    feeder.pump()
                for rec in collector.poll():
                    losses.append(rec.loss if rec.loss is not None else float("nan"))
                    metrics.write(rec.step, step_metrics(rec, tokens, unit))
                    if line:
                        line.update(rec)
                if checkpoint_dir and os.path.isdir(checkpoint_dir):
                    for d in sorted(set(os.listdir(checkpoint_dir)) - seen_ckpts):
                        if d.startswith("step-"):
                            seen_ckpts.add(d)
                            step = int(d.removeprefix("step-"))
                            path = os.path.join(checkpoint_dir, d)
                            extra_metrics = on_checkpoint(step, path) if on_checkpoint else None
                            if extra_metrics:
                                metrics.write(step - 1, extra_metrics)
                                if line:
                                    line.note(f"step {step}: " + ", ".join(
                                        f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in extra_metrics.items()))
                if exited:
                    break
                if time.monotonic() - collector.last_seen > silence:
                    raise PiperError(f"piper-run: no step finished within {silence:.0f} s")
                time.sleep(0.02)  # the feed runs steps ahead: no need to spin
        except BaseException:
            _stop(proc)
            raise
        finally:
            metrics.close()
            if line:
                line.finish()
    with open(log_path) as f:
        log = f.read()
    if proc.returncode != 0:
        lines = failure_lines(plan_dir) or [ln for ln in log.splitlines()
                                            if ln.startswith("piper:")]
        detail = "\n".join(lines) if lines else log[-3000:]
        raise PiperError(f"piper-run: the job failed (exit {proc.returncode})", context=detail)
    if feeder.short:
        saved = f" (checkpoint in {checkpoint_dir})" if checkpoint_dir else ""
        raise PiperError(feeder.short + saved)
    if node_rank != 0:
        return RunResult([], {}, log=log)
    res = collect(plan_dir, log)
    res.first_step = start
    res.metrics = metrics.path
    return res


def failure_lines(plan_dir: str) -> list[str]:
    """One line per failing rank, in rank order, from their report files."""
    d = os.path.join(plan_dir, PROGRESS)
    if not os.path.isdir(d):
        return []
    out = []
    for f in sorted((f for f in os.listdir(d) if f.endswith(".failed")),
                    key=lambda f: int(f.removeprefix("rank").removesuffix(".failed"))):
        with open(os.path.join(d, f)) as fh:
            out.append(fh.read().strip())
    return out


class LocalRanks:
    """The ranks of a one-node job, started directly with the environment
    torchrun gives its workers (RANK, WORLD_SIZE, MASTER_ADDR, ...): no
    agent process importing torch per job. All in one process group (for
    `_stop`), each ended by the kernel when the launcher dies. As under
    torchrun, the job ends when every rank has; when one fails, the others
    get SIGTERM (their watchdogs name the failed rank from the store) and
    `grace` seconds to leave before they are killed."""

    def __init__(self, cmd: list[str], nproc: int, env: dict, log_file, grace: float = 10.0):
        # The store lives here, as torchrun's agent keeps it: it outlives any
        # rank, so the others still read who failed when rank 0 is gone.
        self.store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True,
                                                wait_for_workers=False)
        port = str(self.store.port)
        env = dict(env, TORCHELASTIC_USE_AGENT_STORE="True")
        self.procs: list[subprocess.Popen] = []
        self.grace, self.failed_at = grace, None
        self.returncode: int | None = None
        # The worker's ranks (or a script's: `python SCRIPT ARGS`) fork from a
        # process that has imported torch and the worker already
        # (piper/runtime/forkserver.py): no torch import per rank.
        worker = cmd[:3] == [sys.executable, "-m", forkserver.WORKER]
        script = cmd[1] if len(cmd) > 1 and cmd[0] == sys.executable and cmd[1].endswith(".py") \
            else None
        server = (forkserver.server_for(env) if forkserver.enabled() and (worker or script)
                  else None)
        for r in range(nproc):
            rank_env = dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(nproc),
                            LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK="0", ROLE_RANK=str(r),
                            MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
            group = 0 if r == 0 else self.pid  # a group of their own
            if server is not None:
                self.procs.append(server.spawn(cmd[3:], rank_env, log_file, group) if worker
                                  else server.spawn(cmd[2:], rank_env, log_file, group, script))
                continue
            self.procs.append(subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                               env=rank_env, preexec_fn=_die_with_parent,
                                               process_group=group))

    @property
    def pid(self) -> int:  # the process group's id
        return self.procs[0].pid

    def poll(self) -> int | None:
        codes = [p.poll() for p in self.procs]
        if self.failed_at is None and any(c not in (None, 0) for c in codes):
            # as torchrun does: the others are told to stop (SIGTERM); each
            # names the rank that failed, from the store, as it leaves
            self.failed_at = time.monotonic()
            for p, c in zip(self.procs, codes, strict=True):
                if c is None:
                    p.send_signal(signal.SIGTERM)
        if None in codes and not (self.failed_at is not None
                                  and time.monotonic() - self.failed_at > self.grace):
            return None
        if None in codes:  # the grace is over
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
            for p in self.procs:
                p.wait()
            codes = [p.poll() for p in self.procs]
        self.returncode = next((c for c in codes if c not in (None, 0)), 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        for p in self.procs:
            p.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.poll() or 0


def _die_with_parent() -> None:
    """In torchrun's process, before it starts: SIGTERM when the launcher
    dies (Linux), so ranks never outlive a killed launcher for long."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: S110 - elsewhere ranks stop when the feed dries up
        pass


def _stop(proc) -> None:
    """End the job (torchrun and its ranks, or LocalRanks: their own
    process group): SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def collect(plan_dir: str, log: str = "") -> RunResult:
    """The job's result from every rank's out/rank{r}.pt."""
    module = read_plan(plan_dir)
    progs = programs(module)
    nproc = len(progs)
    parts: dict[str, dict[int, torch.Tensor]] = {}
    layouts: dict[str, list[int]] = {}
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
                    shard = [a.data for a in op.shard.data]
                    layouts[name] = shard
                    parts.setdefault(name, {})[shard[0]] = out["state"][name]
                else:
                    full.setdefault(name, out["state"][name])
    for name, shards in parts.items():
        full[name] = join_shards(shards, layouts[name], init[name].shape)
    res.losses = losses
    res.state = full
    return res
