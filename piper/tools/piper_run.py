"""piper-run: train with a compiled plan on local processes (torchrun).

    piper-run PLAN_DIR --nproc-per-node N [--steps K] [--timeout S]
              [--save-checkpoint DIR] [--load-checkpoint DIR]
              [--backend auto|gloo|nccl]

PLAN_DIR holds plan.mlir (sched programs), state.pt (initial state) and
data.pt (one global batch per step), as `piper.Plan.save` writes them.
Prints the loss of every step, the step time and the peak live bytes of
each rank; a failure ends in one message naming the rank and instruction.
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
    args = ap.parse_args(argv)
    try:
        from piper.analysis.plan_check import programs
        from piper.ir import parse_module
        from piper.runtime.launch import run_plan
        import os

        path = os.path.join(args.plan_dir, "plan.mlir")
        if not os.path.exists(path):
            raise PiperError(f"{path}: no such file")
        with open(path) as f:
            module = parse_module(f.read(), path)  # a malformed plan stops here
        n = args.nproc_per_node or len(programs(module))
        extra = ["--backend", args.backend]
        if args.save_checkpoint:
            extra += ["--save-checkpoint", os.path.abspath(args.save_checkpoint)]
        if args.load_checkpoint:
            extra += ["--load-checkpoint", os.path.abspath(args.load_checkpoint)]
        res = run_plan(args.plan_dir, n, args.steps, args.timeout, tuple(extra))
    except PiperError as e:
        print(e.render(), file=sys.stderr)
        return 1
    for i, loss in enumerate(res.losses):
        print(f"step {i}: loss {loss:.6f}")
    for r in sorted(res.seconds):
        print(f"rank {r}: step time {statistics.median(res.seconds[r]) * 1e3:.1f} ms (median), "
              f"peak live {max(res.peak_bytes[r])} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
