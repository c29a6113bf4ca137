"""Gloo on this machine: one all-reduce against a reduce-scatter plus an
all-gather of the same bytes, and one all-reduce of a bucket against one
per gradient.

The issue behind the strategy search (docs/search.md) measured plain data
parallelism at twice the step of ZeRO-1 and asked whether gloo's
all-reduce costs twice a reduce-scatter + all-gather. This script answers
with gloo alone (no Piper), on 2 and 4 processes, all ranks at once,
`--repeat` times each after a warm-up, medians:

- `all_reduce` vs `reduce_scatter + all_gather` of 4 KiB, 64 KiB, 1 MiB
  and 4 MiB buffers;
- 48 all-reduces of 1 KiB (a small GPT's gradients one by one, what
  `replicate` without `bucket_bytes` issues) vs one all-reduce of their
  48 KiB packed (a bucket; what ZeRO's packed reduce-scatter does too).

    python bench/gloo_collectives.py          # under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sim_validation import load, machine  # noqa: E402

SIZES = (4096, 65536, 1 << 20, 4 << 20)
GRADS, GRAD_BYTES = 48, 1024


def worker(out_path: str, repeat: int) -> int:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    n = dist.get_world_size()

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(repeat):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    res: dict = {}
    for size in SIZES:
        x = torch.rand(size // 4)
        part, full = torch.empty(size // 4 // n), torch.empty(size // 4)

        def rs_ag():
            dist.reduce_scatter_tensor(part, x, async_op=True).wait()
            dist.all_gather_into_tensor(full, part, async_op=True).wait()

        res[str(size)] = {
            "all_reduce_s": timed(lambda: dist.all_reduce(x, async_op=True).wait()),
            "reduce_scatter_all_gather_s": timed(rs_ag),
        }
    grads = [torch.rand(GRAD_BYTES // 4) for _ in range(GRADS)]
    bucket = torch.cat(grads)

    def one_by_one():
        works = [dist.all_reduce(g, async_op=True) for g in grads]
        for w in works:
            w.wait()

    res["gradients"] = {
        "count": GRADS, "bytes_each": GRAD_BYTES,
        "one_by_one_s": timed(one_by_one),
        "one_bucket_s": timed(lambda: dist.all_reduce(bucket, async_op=True).wait()),
    }
    if dist.get_rank() == 0:
        Path(out_path).write_text(json.dumps(res))
    dist.destroy_process_group()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=21)
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gloo_collectives.json"))
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.repeat)
    from piper.runtime.launch import free_port

    out = {"benchmark": "gloo_collectives", "machine": machine(1), "repeat": args.repeat,
           "load_average_start": load(), "processes": {}}
    for nproc in (2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "r.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                   str(nproc), "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                   str(Path(__file__).resolve()), "--worker", str(path),
                   "--repeat", str(args.repeat)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=600,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
            res = json.loads(path.read_text())
        out["processes"][str(nproc)] = res
        for size in SIZES:
            r = res[str(size)]
            print(f"{nproc} ranks, {size:>8} B: all_reduce {r['all_reduce_s'] * 1e6:8.0f} us, "
                  f"reduce_scatter + all_gather {r['reduce_scatter_all_gather_s'] * 1e6:8.0f} us")
        g = res["gradients"]
        print(f"{nproc} ranks, {GRADS} gradients of {GRAD_BYTES} B: one by one "
              f"{g['one_by_one_s'] * 1e6:.0f} us, one bucket {g['one_bucket_s'] * 1e6:.0f} us")
    out["load_average_end"] = load()
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
