"""One rank of a Piper run (started by torchrun through `piper-run`).

Reads a plan directory (plan.mlir: sched programs and stage functions,
loaded from plan.cache when that was made from this very text;
state.pt: the full initial training state), takes each step's batch chunks
from the launcher's feed (piper/runtime/feed.py), runs the steps with this
rank's program, reports each step as it ends (progress/rank{r}.jsonl),
writes periodic checkpoints when asked, and at the end writes what it
stored (its part of the final state, per-step losses, step times and peak
live bytes) to out/rank{r}.pt.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import sys
import time

import torch
import torch.distributed as dist

from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.dialects import sched
from piper.libraries import load, load_plan_libraries
from piper.runtime import executor
from piper.runtime.checkpoint import (
    commit,
    partial_dir,
    save_checkpoint,
    step_dir,
    take_shard,
)
from piper.runtime.executor import RankRuntime, Watchdog
from piper.runtime.feed import read_step
from piper.runtime.plan_cache import read_plan
from piper.runtime.progress import PROGRESS, RankLog


def local_state(module, rank: int, full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This rank's training state: what its program loads, sliced to shards."""
    state = {}
    for op in programs(module)[rank].body.block.ops:
        if isinstance(op, sched.LoadOp):
            name = op.tensor_name.data
            if name not in full:
                raise PiperError(f"initial state has no tensor '{name}'")
            t = full[name]
            if op.shard is not None:  # flat (ZeRO) or a block along a dim (tensor parallel)
                t = take_shard(t, [a.data for a in op.shard.data])
                t = t.reshape(op.result.type.get_shape())
            state[name] = t.clone()
    return state


def choose_backend(name: str) -> tuple[str, torch.device]:
    """The process group backend and this rank's device.

    `auto` takes NCCL with one GPU per local rank when there are as many
    GPUs as local ranks, gloo on the CPU otherwise; `nccl` without a GPU
    per local rank is an error, raised before any communication starts
    (NCCL cannot put two ranks of a group on one GPU).
    """
    if name not in ("auto", "gloo", "nccl"):
        raise PiperError(f"unknown backend '{name}' (auto, gloo or nccl)")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if name == "nccl" and gpus == 0:
        raise PiperError("backend nccl needs CUDA GPUs; this machine has none (use gloo)")
    if name == "nccl" and gpus < local_ranks:
        raise PiperError(f"backend nccl needs one GPU per local rank: {local_ranks} ranks, "
                         f"{gpus} GPUs on this machine (use gloo, or fewer ranks per node)")
    if name == "gloo" or gpus < local_ranks:
        return "gloo", torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return "nccl", torch.device("cuda", local)


def to_device(tree, device: torch.device):
    """Tensors of a state dict or batch list, moved to the rank's device."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(to_device(v, device) for v in tree)
    return tree


def checkpoint(plan_dir: str, module, rank: int, world: int, state, step: int, final: str,
               keep: int = 0) -> None:
    """Every rank writes its files into the partial directory; once all
    have, rank 0 completes it (manifest, rename) and drops all but the
    newest `keep` (0: keeps all)."""
    tmp = partial_dir(final)
    save_checkpoint(tmp, module, rank, world, {k: v.cpu() for k, v in state.items()})
    dist.barrier()
    if rank == 0:
        commit(tmp, final, world, step, plan_dir, keep)
    dist.barrier()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="piper-worker")
    ap.add_argument("plan_dir")
    ap.add_argument("--steps", type=int, default=1, help="the step to stop before "
                    "(-1: when the data ends)")
    ap.add_argument("--start-step", type=int, default=0)
    ap.add_argument("--checkpoint-every", type=int, default=0)
    ap.add_argument("--checkpoint-dir", default="")
    ap.add_argument("--keep-checkpoints", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--save-checkpoint", default="")
    ap.add_argument("--load-checkpoint", default="")
    ap.add_argument("--backend", default="auto",
                    help="auto (NCCL on GPUs when present, else gloo), gloo or nccl")
    ap.add_argument("--load", action="append", default=[], metavar="MODULE",
                    help="import MODULE first (it registers custom operators)")
    ap.add_argument("--trace", default="", metavar="DIR",
                    help="write each rank's trace of its instructions to DIR/rank{r}.json")
    ap.add_argument("--fail-rank", type=int, default=-1, help=argparse.SUPPRESS)
    ap.add_argument("--fail-at", type=int, default=-1, help=argparse.SUPPRESS)
    ap.add_argument("--fail-mode", default="raise", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    os.makedirs(os.path.join(args.plan_dir, PROGRESS), exist_ok=True)
    executor.FAILURE_FILE = os.path.join(args.plan_dir, PROGRESS, f"rank{rank}.failed")
    torch.manual_seed(0)
    # Termination signals go to the watchdog's signal thread, even while the
    # main thread is blocked in a communication.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        backend, device = choose_backend(args.backend)
    except PiperError as e:
        _report(args.plan_dir, rank, f"piper: rank {rank} failed at start-up: {e.render()}")
        return 1
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=args.timeout))
    rt = watchdog = None
    try:
        load(args.load)
        load_plan_libraries(args.plan_dir)
        module = read_plan(args.plan_dir)
        full = torch.load(os.path.join(args.plan_dir, "state.pt"), weights_only=True)
        state = to_device(local_state(module, rank, full), device)
        del full
        rt = RankRuntime(module, rank, world, device=device)
        rt.publish_position(os.path.join(args.plan_dir, ".positions"))
        if args.fail_rank == rank:
            rt.fault = (args.fail_at, args.fail_mode)
        if args.trace:
            rt.trace = []
        store = dist.distributed_c10d._get_default_store()
        watchdog = Watchdog(rt, store, args.timeout)
        watchdog.start()
        watchdog.watch_signals()
        if args.load_checkpoint:
            from piper.runtime.checkpoint import load_checkpoint

            state = to_device(load_checkpoint(args.load_checkpoint, module, rank, world), device)
        log = RankLog(args.plan_dir, rank)

        def periodic(step: int) -> None:
            checkpoint(args.plan_dir, module, rank, world, state, step,
                       step_dir(args.checkpoint_dir, step), args.keep_checkpoints)

        dist.barrier()
        stats = []
        step, saved = args.start_step, args.start_step
        while args.steps < 0 or step < args.steps:
            chunks = read_step(args.plan_dir, step, rank, args.timeout)
            if chunks is None:  # the data ended: every rank stops here
                break
            stats.append(rt.step(state, to_device(chunks, device)))
            log.step(step, stats[-1])
            step += 1
            if args.checkpoint_every and step % args.checkpoint_every == 0:
                periodic(step)
                saved = step
        log.close()
        if args.trace:
            from piper.runtime.trace import write_trace  # lazy: only when tracing

            write_trace(args.trace, rank, rt.code, rt.ops, rt.trace)
        dist.barrier()
        if args.checkpoint_dir and saved != step:
            periodic(step)
        if args.save_checkpoint:
            checkpoint(args.plan_dir, module, rank, world, state, step, args.save_checkpoint)
        out = {
            "state": {k: v.cpu() for k, v in state.items()},
            "losses": [s.losses for s in stats],
            "seconds": [s.seconds for s in stats],
            "peak_bytes": [s.peak_bytes for s in stats],
        }
        os.makedirs(os.path.join(args.plan_dir, "out"), exist_ok=True)
        torch.save(out, os.path.join(args.plan_dir, "out", f"rank{rank}.pt"))
        dist.barrier()  # every rank's output is written before any node's launcher returns
        watchdog.close()
        dist.destroy_process_group()
        return 0
    except BaseException as e:  # report where this rank failed, then leave
        where = rt.where() if rt is not None else "start-up"
        if watchdog is not None and _lost_peer(e):
            # a consequence of another rank's death, not a failure of ours
            dead = watchdog.dead_rank()
            if dead is not None:
                _report(args.plan_dir, rank, f"piper: rank {rank} stops at {where}: {dead}")
                os._exit(1)
        if watchdog is not None:
            watchdog.report_failure(e)
        else:
            try:
                dist.distributed_c10d._get_default_store().set(
                    "piper/failed", f"{rank}|{where}|{type(e).__name__}: {e}")
            except Exception:
                pass
        msg = e.render() if isinstance(e, PiperError) else f"{type(e).__name__}: {e}"
        _report(args.plan_dir, rank, f"piper: rank {rank} failed at {where}: {msg}")
        time.sleep(1.5)  # let the other ranks' watchdogs read the failure first
        os._exit(1)


def _report(plan_dir: str, rank: int, msg: str) -> None:
    os.makedirs(os.path.join(plan_dir, PROGRESS), exist_ok=True)
    executor.FAILURE_FILE = os.path.join(plan_dir, PROGRESS, f"rank{rank}.failed")
    executor.report(msg)


def _lost_peer(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, RuntimeError) and any(
        k in text for k in ("Connection reset", "Connection closed", "Broken pipe", "EOF")
    )


if __name__ == "__main__":
    sys.exit(main())
