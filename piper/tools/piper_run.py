"""piper-run: train with a compiled plan on local processes (torchrun).

    piper-run PLAN_DIR [--nproc-per-node N] [--steps K] [--data MODULE:FUNCTION]
              [--run-dir DIR] [--checkpoint-every K --checkpoint-dir DIR
               [--keep-checkpoints M] [--resume]] [--plot]
              [--timeout S] [--save-checkpoint DIR] [--load-checkpoint DIR]
              [--backend auto|gloo|nccl]
              [--nnodes M --node-rank I (--rdzv-endpoint HOST:PORT | --master-addr HOST
               --master-port PORT) [--rdzv-backend c10d] [--rdzv-id ID]]

PLAN_DIR holds plan.mlir (sched programs) and state.pt (initial state), as
`piper.Plan.save` writes them. The data is `--data MODULE:FUNCTION` (the
function returns any iterable of global batches: a generator, a
DataLoader) or the batches `plan.save(dir, batches)` wrote (data.pt); it
is streamed to the ranks step by step. Every file is checked before any
process starts (plan text decodable, parsed, verified; state loadable; a
checkpoint complete and of this model; the first batch of the plan's
shapes). Prints a progress line per step (step, loss, throughput, step
time, peak memory, ETA), writes RUN_DIR/metrics.jsonl (and with --plot
RUN_DIR/metrics.png), then the step time and peak live bytes of each rank
with the plan's estimate; a failure ends in one message per failing rank.

Multi-node: run piper-run once on every node with the same PLAN_DIR (a
shared filesystem), the node count, this node's rank and torchrun's
rendezvous flags; node 0 prints the result.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys

from piper.diagnostics import PiperError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="piper-run", description=__doc__.splitlines()[0])
    ap.add_argument("plan_dir")
    ap.add_argument("--nproc-per-node", type=int, default=0,
                    help="processes (default: one per program in the plan)")
    ap.add_argument("--steps", type=int, default=None,
                    help="steps to train (default: one per batch until the data ends)")
    ap.add_argument("--data", default="", metavar="MODULE:FUNCTION",
                    help="import MODULE and train on the iterable of global batches "
                         "FUNCTION() returns (default: PLAN_DIR/data.pt)")
    ap.add_argument("--run-dir", default="", help="where metrics.jsonl goes (default PLAN_DIR)")
    ap.add_argument("--checkpoint-every", type=int, default=0, metavar="K",
                    help="write a checkpoint every K steps (and at the end)")
    ap.add_argument("--checkpoint-dir", default="")
    ap.add_argument("--keep-checkpoints", type=int, default=2, metavar="M",
                    help="keep the newest M periodic checkpoints (0: all)")
    ap.add_argument("--resume", action="store_true",
                    help="continue from the newest complete checkpoint in --checkpoint-dir")
    ap.add_argument("--plot", action="store_true", help="write RUN_DIR/metrics.png at the end")
    ap.add_argument("--log-every", type=int, default=10,
                    help="progress line every K steps when the output is not a terminal")
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
        # lazy: `piper-run --help` answers without importing torch
        from piper.analysis.memory import program_peak_bytes  # lazy: as above
        from piper.analysis.plan_check import programs  # lazy: as above
        from piper.libraries import load  # lazy: as above
        from piper.runtime.launch import check_before_launch, run_plan  # lazy: as above

        load(args.load)
        if not os.path.isdir(args.plan_dir):
            raise PiperError(f"{args.plan_dir}: no such plan directory")
        if not 0 <= args.node_rank < args.nnodes:
            raise PiperError(f"--node-rank {args.node_rank} is not in 0..{args.nnodes - 1}")
        data = _data(args.data) if args.data else None
        progs = programs(check_before_launch(args.plan_dir, None))
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
        run_dir = args.run_dir or args.plan_dir
        res = run_plan(args.plan_dir, n, args.steps, args.timeout, tuple(extra),
                       torchrun_args=_rendezvous(args), nnodes=args.nnodes,
                       node_rank=args.node_rank, data=data, run_dir=run_dir,
                       checkpoint_every=args.checkpoint_every,
                       checkpoint_dir=args.checkpoint_dir,
                       keep_checkpoints=args.keep_checkpoints, resume=args.resume,
                       load_checkpoint=args.load_checkpoint,
                       save_checkpoint=args.save_checkpoint, log_every=args.log_every)
        if args.plot and args.node_rank == 0:
            from piper.tools.piper_plot import plot_metrics  # lazy: matplotlib only for --plot

            print(f"wrote {plot_metrics(res.metrics, os.path.join(run_dir, 'metrics.png'))}")
    except PiperError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("piper-run: interrupted; the job was stopped", file=sys.stderr)
        return 130
    if args.node_rank != 0:
        print(f"node {args.node_rank}: done (node 0 reports the result)")
        return 0
    first = res.first_step
    if len(res.losses) <= 50:
        for i, loss in enumerate(res.losses):
            print(f"step {first + i}: loss {loss:.6f}")
    elif res.losses:
        print(f"steps {first}..{first + len(res.losses) - 1}: loss {res.losses[0]:.6f} -> "
              f"{res.losses[-1]:.6f} ({res.metrics})")
    for r in sorted(res.seconds):
        print(f"rank {r}: step time {statistics.median(res.seconds[r]) * 1e3:.1f} ms (median), "
              f"peak live {max(res.peak_bytes[r])} B (plan: {program_peak_bytes(progs[r], 'all')} B)")
    return 0


def _data(spec: str):
    """FUNCTION() of MODULE, for --data MODULE:FUNCTION."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name.isidentifier():
        raise PiperError(f"--data {spec}: expected MODULE:FUNCTION (e.g. mydata:batches)")
    try:
        mod = importlib.import_module(module)
    except Exception as e:
        raise PiperError(f"--data {spec}: importing {module} failed: "
                         f"{type(e).__name__}: {e}") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise PiperError(f"--data {spec}: {module} has no function {name}")
    try:
        return fn()
    except Exception as e:
        raise PiperError(f"--data {spec}: {name}() raised {type(e).__name__}: {e}") from None


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
