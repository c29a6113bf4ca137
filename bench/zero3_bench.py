"""ZeRO-3: Piper `shard(3)` against torch FSDP2 (`fully_shard`), side by side.

    python bench/zero3_bench.py              # 2 and 4 processes
    python bench/zero3_bench.py --nproc 2 --tiny --steps 2 --warmup 0

Both sides train the benchmark GPT (dim 256, 4 layers, 8 sequences of 64
tokens per replica, AdamW) on the same global batches, in the same torchrun
job on the same processes. PyTorch: `fully_shard` on every transformer
block and on the root module over a 1-D CPU device mesh (gloo; defaults:
parameters resharded after forward, gradients reduce-scattered, optimizer
on the shards). Piper: `[place(pp=1), replicate(n), shard(3, prefetch=k, pack=p)]`,
parameters, gradients and optimizer state sharded over the replicas, each
stage's parameters all-gathered for its forward and its backward: with
prefetch=1 one task ahead (at most two stages' parameters gathered at a
time, as FSDP2 does), with -1 all at the start of the step (faster, the
memory of unsharded parameters); with pack (the default here) a task's
parameter shards move in one all_gather and each microbatch's gradients
in one reduce_scatter, as FSDP2 moves a block's (`--pack 0,1` runs both).
On this CPU/gloo setup FSDP2's unshard (the all-gather of a block's
parameters) runs synchronously: FSDP2 issues it with `async_op=False` and
relies on separate CUDA streams to overlap it with compute, and on the CPU
there are no streams, so each all-gather blocks the step until it is done;
Piper's prefetched all_gathers are asynchronous gloo work that overlaps its
compute. The JSON says so (`baseline_note`), and the step-time ratio
should be read with it.
Output:
bench/results/zero3.json and zero3.png (see bench/harness.py for what is
measured).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    LR,
    Side,
    base_settings,
    common_args,
    gpt_batches,
    gpt_config,
    launch,
    machine,
    make_model,
    ratio_line,
    repeats,
    run_worker,
    save_case,
    summarize,
    write_results,
)


class FSDP2Side(Side):
    what = "torch FSDP2 fully_shard per block + root (CPU mesh, gloo) + AdamW"

    def __init__(self, settings: dict, full: dict, rank: int, world: int):
        from torch.distributed.device_mesh import init_device_mesh

        self.settings, self.full, self.rank, self.world = settings, full, rank, world
        self.mesh = init_device_mesh("cpu", (world,))

    def build(self) -> None:
        from torch.distributed.fsdp import fully_shard

        model = make_model(self.settings, self.full)
        for block in model.blocks:
            fully_shard(block, mesh=self.mesh)
        fully_shard(model, mesh=self.mesh)
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=self.settings["lr"])

    def step(self, batch):
        x, y = batch["input0"], batch["input1"]
        n = x.shape[0] // self.world
        part = slice(self.rank * n, (self.rank + 1) * n)
        loss = self.model(x[part], y[part])
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


BASELINE_NOTE = (
    "FSDP2's unshard runs synchronously on the CPU/gloo backend: its pre-forward and "
    "pre-backward all-gathers are issued with async_op=False and overlap compute only "
    "through separate CUDA streams, which the CPU does not have, so every block's "
    "all-gather blocks the step until it completes. Piper's all_gathers (prefetch=1 or "
    "-1) are asynchronous gloo work that overlaps its compute. The step-time ratio "
    "therefore compares Piper's overlapped gathers against FSDP2 without overlap; on a "
    "GPU (NCCL, streams) FSDP2 overlaps its all-gathers and this ratio does not carry over.")


def strategy(n: int, prefetch: int, pack: bool = True) -> list:
    import piper

    return [piper.place(pp=1), piper.replicate(n), piper.shard(3, prefetch=prefetch, pack=pack)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap, steps=20)
    ap.add_argument("--nproc", default="2,4", help="process counts, comma-separated")
    ap.add_argument("--prefetch", default="1,-1",
                    help="Piper's shard(3, prefetch=k) settings to run, comma-separated: k "
                         "tasks ahead (1: the next stage's parameters, as FSDP2 gathers), "
                         "-1: every gather at the start of the step")
    ap.add_argument("--pack", default="1",
                    help="Piper's shard(3, pack=...) settings to run, comma-separated: 1 packs "
                         "each task's parameter shards into one all_gather and each "
                         "microbatch's gradients into one reduce_scatter, 0 moves every "
                         "tensor in a collective of its own")
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args.worker, FSDP2Side)

    import piper
    from examples.gpt import gpt_data, make_gpt
    from piper.directives.strategy import to_json

    cfg = gpt_config(args.tiny, layers=2 if args.tiny else 4)
    count = 2 + args.warmup + args.steps
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.nproc.split(",")):
            dirs, meta = [], []
            for pack in (bool(int(v)) for v in args.pack.split(",")):
                for k in (int(v) for v in args.prefetch.split(",")):
                    model = make_gpt(cfg)
                    directives = strategy(n, k, pack)
                    plan = piper.compile(model, gpt_data(cfg), optimizer=torch.optim.AdamW(
                        model.parameters(), lr=LR), strategy=directives)
                    name = f"dp{n} prefetch {k}" if k >= 0 else f"dp{n} gather all"
                    name += " packed" if pack else ""
                    case_dir = Path(tmp) / f"zero3_dp{n}_{k}_{int(pack)}"
                    save_case(case_dir, plan, gpt_batches(cfg, cfg.batch * n, count),
                              base_settings(args, cfg))
                    dirs.append(case_dir)
                    meta.append((name, k, pack, directives))
            for (name, k, pack, directives), ranks in zip(
                    meta, launch(__file__, dirs, n, args.threads, args.timeout, repeats(args)),
                    strict=True):
                cases.append({"case": name, "nproc": n, "piper_prefetch": k, "piper_pack": pack,
                              "piper_strategy": json.loads(to_json(directives)),
                              **summarize(ranks)})
    doc = {
        "benchmark": "zero3",
        "baseline": "torch FSDP2",
        "baseline_note": BASELINE_NOTE,
        "machine": machine(max(c["nproc"] for c in cases), args.threads,
                           shared=not args.quiet_machine),
        "model": {"name": "examples.gpt", **asdict(cfg), "per_replica_batch": cfg.batch},
        "optimizer": f"AdamW(lr={LR})",
        "steps": args.steps, "warmup": args.warmup,
        "cases": cases,
    }
    path = write_results("zero3", args.out, doc, plot=not args.no_plot)
    print(ratio_line(doc))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
