"""Data parallelism: Piper `replicate(n)` against torch DDP, side by side.

    python bench/dp_bench.py                 # 2 and 4 processes
    python bench/dp_bench.py --nproc 2 --tiny --steps 2 --warmup 0

Both sides train the benchmark GPT (dim 256, 4 layers, 8 sequences of 64
tokens per replica, AdamW) on the same global batches, in the same torchrun
job on the same processes: PyTorch wraps the model in
`DistributedDataParallel` with every setting at DDP's default (gloo;
`bucket_cap_mb` 25, a first bucket of 1 MiB, `gradient_as_bucket_view=False`,
no static graph); Piper compiles `[place(pp=1), replicate(n, bucket_bytes=25 MiB)]`
(DDP's bucket cap; Piper packs each stage's gradients) and runs
`RankRuntime.step`. The DDP configuration each run actually used (read back
from DDP's logging data on rank 0, with its bucket sizes) and the remaining
differences between the two sides are written into the JSON
(`baseline_config`, `deviations`). Output: bench/results/dp.json and dp.png
(see bench/harness.py for what is measured).
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
    what = ("torch DistributedDataParallel, DDP's default settings (gloo, 25 MiB buckets, "
            "1 MiB first bucket, gradient_as_bucket_view=False) + AdamW")

    def __init__(self, settings: dict, full: dict, rank: int, world: int):
        self.settings, self.full, self.rank, self.world = settings, full, rank, world

    def build(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.kwargs = self.settings.get("ddp_kwargs", {})  # {}: DDP's defaults
        if self.kwargs:
            self.what = (f"torch DistributedDataParallel (gloo, "
                         f"{', '.join(f'{k}={v}' for k, v in self.kwargs.items())}) + AdamW")
        self.model = DistributedDataParallel(make_model(self.settings, self.full), **self.kwargs)
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

    def extra(self) -> dict:
        """DDP's configuration as DDP reports it after the run, with the
        bucket sizes it built and the settings passed (none by default)."""
        import torch.distributed as dist

        data = self.model._get_ddp_logging_data()
        return {"ddp_config": {
            "constructor_kwargs": dict(self.kwargs),  # {}: every setting at DDP's default
            "bucket_cap_bytes": data.get("bucket_cap_bytes"),
            "first_bucket_bytes": getattr(dist, "_DEFAULT_FIRST_BUCKET_BYTES", None),
            "bucket_sizes_bytes": [int(b) for b in str(data.get("bucket_sizes", "")).split(",")
                                   if b.strip()],
            "has_rebuilt_buckets": bool(data.get("has_rebuilt_buckets")),
            "gradient_as_bucket_view": bool(self.model.gradient_as_bucket_view),
            "static_graph": bool(self.model.static_graph),
            "find_unused_parameters": bool(data.get("find_unused_parameters")),
        }}


# What still differs between the two sides, written into the JSON beside the figures
DEVIATIONS = [
    "DDP runs with all its defaults, so gradient_as_bucket_view=False: DDP keeps each "
    "parameter's .grad and a copy of it in its flat bucket. Piper's replicate() copies a "
    "stage's gradients into its bucket (pack), frees the separate gradients after that "
    "copy, and its optimizer reads the reduced bucket through views (unpack), which is "
    "what DDP does with gradient_as_bucket_view=True (not used here: not DDP's default; "
    "`dp_bench.py --ddp-gradient-as-bucket-view` measures DDP with it, "
    "bench/results/dp_ddp_bucket_view.json).",
    "DDP's first bucket is 1 MiB (its default, so the first all-reduce starts early) and "
    "DDP rebuilds its buckets after the first iteration in the order gradients became "
    "ready; Piper's buckets are fixed in the compiled plan, at most 25 MiB each "
    "(bucket_bytes=25 MiB, no smaller first bucket).",
]


# DDP's default bucket cap (bucket_cap_mb=25), so both sides pack gradients alike
BUCKET_BYTES = 25 << 20


def strategy(n: int) -> list:
    import piper

    return [piper.place(pp=1), piper.replicate(n, bucket_bytes=BUCKET_BYTES)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap, steps=20)
    ap.add_argument("--nproc", default="2,4", help="process counts, comma-separated")
    ap.add_argument("--ddp-gradient-as-bucket-view", action="store_true",
                    help="a reference run, not the default baseline: DDP with "
                         "gradient_as_bucket_view=True (gradients as views of its buckets)")
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args.worker, DDPSide)
    ddp_kwargs = {"gradient_as_bucket_view": True} if args.ddp_gradient_as_bucket_view else {}

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
            settings = {**base_settings(args, cfg), "ddp_kwargs": ddp_kwargs}
            save_case(case_dir, plan, gpt_batches(cfg, cfg.batch * n, count), settings)
            ranks = launch(__file__, [case_dir], n, args.threads, args.timeout, repeats(args))[0]
            cases.append({"case": f"dp{n}", "nproc": n,
                          "piper_strategy": json.loads(to_json(directives)),
                          "baseline_config": ranks[0]["sides"]["torch"].get("ddp_config"),
                          **summarize(ranks)})
    doc = {
        "benchmark": "dp",
        "baseline": "torch DDP (default settings)" if not ddp_kwargs else
                    f"torch DDP ({', '.join(f'{k}={v}' for k, v in ddp_kwargs.items())})",
        "deviations": DEVIATIONS[1:] if ddp_kwargs else DEVIATIONS,
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
