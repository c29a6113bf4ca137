"""Data parallelism: Piper `replicate(n)` against torch DDP, side by side.

    python bench/dp_bench.py                 # 2 and 4 processes
    python bench/dp_bench.py --nproc 2 --tiny --steps 2 --warmup 0

Both sides train the benchmark GPT (dim 256, 4 layers, 8 sequences of 64
tokens per replica, AdamW) on the same global batches, in the same torchrun
job on the same processes: PyTorch wraps the model in
`DistributedDataParallel` (gloo, default 25 MiB gradient buckets); Piper
compiles `[place(pp=1), replicate(n, bucket_bytes=25 MiB)]` (DDP's bucket
cap; Piper packs each stage's gradients) and runs `RankRuntime.step`. Output:
bench/results/dp.json and dp.png (see bench/harness.py for what is
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


class DDPSide(Side):
    what = "torch DistributedDataParallel (gloo, default 25 MiB buckets) + AdamW"

    def __init__(self, settings: dict, full: dict, rank: int, world: int):
        self.settings, self.full, self.rank, self.world = settings, full, rank, world

    def build(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.model = DistributedDataParallel(make_model(self.settings, self.full))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.settings["lr"])

    def step(self, batch):
        x, y = batch["input0"], batch["input1"]
        n = x.shape[0] // self.world
        part = slice(self.rank * n, (self.rank + 1) * n)
        loss = self.model(x[part], y[part])
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


# DDP's default bucket cap (bucket_cap_mb=25), so both sides pack gradients alike
BUCKET_BYTES = 25 << 20


def strategy(n: int) -> list:
    import piper

    return [piper.place(pp=1), piper.replicate(n, bucket_bytes=BUCKET_BYTES)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap, steps=20)
    ap.add_argument("--nproc", default="2,4", help="process counts, comma-separated")
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args.worker, DDPSide)

    import piper
    from examples.gpt import gpt_data, make_gpt
    from piper.directives.strategy import to_json

    cfg = gpt_config(args.tiny, layers=2 if args.tiny else 4)
    count = 2 + args.warmup + args.steps
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.nproc.split(",")):
            model = make_gpt(cfg)
            directives = strategy(n)
            plan = piper.compile(model, gpt_data(cfg), optimizer=torch.optim.AdamW(
                model.parameters(), lr=LR), strategy=directives)
            case_dir = Path(tmp) / f"dp{n}"
            settings = base_settings(args, cfg)
            save_case(case_dir, plan, gpt_batches(cfg, cfg.batch * n, count), settings)
            ranks = launch(__file__, [case_dir], n, args.threads, args.timeout, repeats(args))[0]
            cases.append({"case": f"dp{n}", "nproc": n,
                          "piper_strategy": json.loads(to_json(directives)), **summarize(ranks)})
    doc = {
        "benchmark": "dp",
        "baseline": "torch DDP",
        "machine": machine(max(c["nproc"] for c in cases), args.threads,
                           shared=not args.quiet_machine),
        "model": {"name": "examples.gpt", **asdict(cfg), "per_replica_batch": cfg.batch},
        "optimizer": f"AdamW(lr={LR})",
        "steps": args.steps, "warmup": args.warmup,
        "cases": cases,
    }
    path = write_results("dp", args.out, doc, plot=not args.no_plot)
    print(ratio_line(doc))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
