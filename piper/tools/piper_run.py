"""piper-run: train with a compiled plan on local processes (torchrun).

    piper-run PLAN_DIR --nproc-per-node N [--steps K] [--timeout S]
              [--save-checkpoint DIR] [--load-checkpoint DIR]
              [--backend auto|gloo|nccl]
              [--nnodes M --node-rank I (--rdzv-endpoint HOST:PORT | --master-addr HOST
               --master-port PORT) [--rdzv-backend c10d] [--rdzv-id ID]]

PLAN_DIR holds plan.mlir (sched programs), state.pt (initial state) and
data.pt (one global batch per step), as `piper.Plan.save` writes them.
The plan is parsed and checked (whole-program checks, one program per
process, batches of its shape) before any process starts. Prints the loss
of every step, the step time, the peak live bytes of each rank and the
plan's estimate; a failure ends in one message naming the rank and
instruction.

Multi-node: run piper-run once on every node with the same PLAN_DIR (a
shared filesystem), the node count, this node's rank and torchrun's
rendezvous flags; node 0 prints the result.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from piper.diagnostics import PiperError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="piper-run", description=__doc__.splitlines()[0])
    ap.add_argument("plan_dir")
    ap.add_argument("--nproc-per-node", type=int, default=0,
                    help="processes (default: one per program in the plan)")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds before a silent or failed rank ends the job")
    ap.add_argument("--save-checkpoint", default="")
    ap.add_argument("--load-checkpoint", default="")
    ap.add_argument("--backend", default="auto", choices=("auto", "gloo", "nccl"),
                    help="process group backend: auto (NCCL with one GPU per rank when "
                         "CUDA is available, gloo on the CPU otherwise), gloo or nccl")
    ap.add_argument("--load", action="append", default=[], metavar="MODULE",
                    help="import MODULE before reading the plan: it registers custom "
                         "operators the plan calls (libraries.json in PLAN_DIR lists "
                         "the ones capture found)")
    nodes = ap.add_argument_group("multi-node (torchrun's rendezvous)")
    nodes.add_argument("--nnodes", type=int, default=1)
    nodes.add_argument("--node-rank", type=int, default=0)
    nodes.add_argument("--rdzv-backend", default="")
    nodes.add_argument("--rdzv-endpoint", default="")
    nodes.add_argument("--rdzv-id", default="")
    nodes.add_argument("--master-addr", default="")
    nodes.add_argument("--master-port", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        import os

        from piper.analysis.memory import program_peak_bytes
        from piper.analysis.plan_check import programs
        from piper.ir import parse_module
        from piper.runtime.launch import run_plan

        from piper.libraries import load, load_plan_libraries

        load(args.load)
        load_plan_libraries(args.plan_dir)
        path = os.path.join(args.plan_dir, "plan.mlir")
        if not os.path.exists(path):
            raise PiperError(f"{path}: no such file")
        with open(path) as f:
            module = parse_module(f.read(), path)  # a malformed plan stops here
        progs = programs(module)
        if not 0 <= args.node_rank < args.nnodes:
            raise PiperError(f"--node-rank {args.node_rank} is not in 0..{args.nnodes - 1}")
        if args.nproc_per_node:
            n = args.nproc_per_node
        elif len(progs) % args.nnodes:
            raise PiperError(f"the plan's {len(progs)} programs do not divide over "
                             f"{args.nnodes} nodes; give --nproc-per-node")
        else:
            n = len(progs) // args.nnodes
        extra = ["--backend", args.backend]
        for m in args.load:
            extra += ["--load", m]
        if args.save_checkpoint:
            extra += ["--save-checkpoint", os.path.abspath(args.save_checkpoint)]
        if args.load_checkpoint:
            extra += ["--load-checkpoint", os.path.abspath(args.load_checkpoint)]
        res = run_plan(args.plan_dir, n, args.steps, args.timeout, tuple(extra),
                       torchrun_args=_rendezvous(args), nnodes=args.nnodes,
                       node_rank=args.node_rank)
    except PiperError as e:
        print(e.render(), file=sys.stderr)
        return 1
    if args.node_rank != 0:
        print(f"node {args.node_rank}: done (node 0 reports the result)")
        return 0
    for i, loss in enumerate(res.losses):
        print(f"step {i}: loss {loss:.6f}")
    for r in sorted(res.seconds):
        print(f"rank {r}: step time {statistics.median(res.seconds[r]) * 1e3:.1f} ms (median), "
              f"peak live {max(res.peak_bytes[r])} B (plan: {program_peak_bytes(progs[r])} B)")
    return 0


def _rendezvous(args) -> tuple[str, ...] | None:
    """torchrun's rendezvous flags from ours; None: a fresh local port."""
    flags = []
    for name in ("rdzv_backend", "rdzv_endpoint", "rdzv_id", "master_addr"):
        if getattr(args, name):
            flags += ["--" + name.replace("_", "-"), getattr(args, name)]
    if args.master_port:
        flags += ["--master-port", str(args.master_port)]
    if args.nnodes > 1 and not flags:
        raise PiperError("--nnodes > 1 needs a rendezvous: --rdzv-endpoint HOST:PORT "
                         "(with --rdzv-backend c10d) or --master-addr and --master-port")
    return tuple(flags) or None


if __name__ == "__main__":
    sys.exit(main())
