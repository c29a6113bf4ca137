"""Mixed precision and optimizer offload: Piper against torch FSDP2, side by side.

    python bench/precision_bench.py                  # 2 processes
    python bench/precision_bench.py --tiny --steps 1 --warmup 0 --no-plot

Both sides train the benchmark GPT (dim 256, 4 layers, 8 sequences of 64
tokens per replica, AdamW) on the same global batches, in the same torchrun
job on the same processes (CPU, gloo). Two cases:

- `bf16`: bf16 compute, fp32 master weights and optimizer state, fp32
  gradient reduction. PyTorch: `fully_shard` on every block and the root
  with `MixedPrecisionPolicy(param_dtype=torch.bfloat16,
  reduce_dtype=torch.float32)`. Piper: `[precision(param="bf16",
  reduce="fp32", master="fp32"), place(pp=1), replicate(n), shard(3,
  prefetch=1)]`, the same ZeRO-3 layout.
- `offload`: fp32, optimizer state in host memory. PyTorch: `fully_shard`
  with `CPUOffloadPolicy(pin_memory=False)` (parameters, gradients and
  optimizer state on the host, the optimizer step there). Piper: `[place(pp=1),
  replicate(n), shard(3, prefetch=1), offload(optimizer=True)]` (the
  optimizer state and its update on the host; parameters and gradients on
  the device).

On a CPU the host is the device: offload moves no byte out of the memory
measured here, so the offload case's peak ratio compares the two
implementations' allocations, not device memory; the plan's own device and
host figures (resident state, `piper.analysis.memory`) are recorded beside
it (`piper_plan_memory`: without offload the host's resident bytes would be
on the device). Output: bench/results/precision.json and
precision.png (see bench/harness.py for what is measured).
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

CASES = ("bf16", "offload")


class FSDP2Side(Side):
    """torch FSDP2 with the case's policy (settings["case"])."""

    def __init__(self, settings: dict, full: dict, rank: int, world: int):
        from torch.distributed.device_mesh import init_device_mesh

        self.settings, self.full, self.rank, self.world = settings, full, rank, world
        self.case = settings["case"]
        self.mesh = init_device_mesh("cpu", (world,))
        self.what = ("torch FSDP2 fully_shard per block + root, MixedPrecisionPolicy(bf16 "
                     "params, fp32 reduce) + AdamW" if self.case == "bf16" else
                     "torch FSDP2 fully_shard per block + root, CPUOffloadPolicy(pin_memory="
                     "False) + AdamW")

    def build(self) -> None:
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        model = make_model(self.settings, self.full)
        if self.case == "bf16":
            kw = {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                                    reduce_dtype=torch.float32)}
        else:
            kw = {"offload_policy": CPUOffloadPolicy(pin_memory=False)}
        for block in model.blocks:
            fully_shard(block, mesh=self.mesh, **kw)
        fully_shard(model, mesh=self.mesh, **kw)
        self.model = model
        self.opt = torch.optim.AdamW(model.parameters(), lr=self.settings["lr"])

    def step(self, batch):
        x, y = batch["input0"], batch["input1"]
        n = x.shape[0] // self.world
        part = slice(self.rank * n, (self.rank + 1) * n)
        loss = self.model(x[part], y[part]).float()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


def strategy(case: str, n: int) -> list:
    import piper

    layout = [piper.place(pp=1), piper.replicate(n), piper.shard(3, prefetch=1)]
    if case == "bf16":
        return [piper.precision(param="bf16", reduce="fp32", master="fp32"), *layout]
    return [*layout, piper.offload(optimizer=True)]


def plan_memory(plan) -> dict:
    """Rank 0's device and host bytes as the plan states them: the
    training state resident between steps and the step's live peak."""
    from piper.analysis.memory import program_peak_bytes, resident_bytes
    from piper.analysis.plan_check import programs

    p = programs(plan.module)[0]
    return {space: {"resident_bytes": resident_bytes(p, space),
                    "peak_live_bytes": program_peak_bytes(p, space)}
            for space in ("device", "host")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap, steps=20)
    ap.add_argument("--nproc", type=int, default=2, help="processes (replicas)")
    ap.add_argument("--cases", default=",".join(CASES), help="cases to run, comma-separated")
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args.worker, FSDP2Side)

    import piper
    from examples.gpt import gpt_data, make_gpt
    from piper.directives.strategy import to_json

    cfg = gpt_config(args.tiny, layers=2 if args.tiny else 4)
    count = 2 + args.warmup + args.steps
    n = args.nproc
    cases, meta, dirs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            if case not in CASES:
                raise SystemExit(f"precision_bench: unknown case '{case}' (one of "
                                 f"{', '.join(CASES)})")
            model = make_gpt(cfg)
            directives = strategy(case, n)
            plan = piper.compile(model, gpt_data(cfg), optimizer=torch.optim.AdamW(
                model.parameters(), lr=LR), strategy=directives)
            case_dir = Path(tmp) / f"precision_{case}"
            save_case(case_dir, plan, gpt_batches(cfg, cfg.batch * n, count),
                      {**base_settings(args, cfg), "case": case})
            dirs.append(case_dir)
            meta.append((case, directives, {"piper_plan_memory": plan_memory(plan)}))
        for (case, directives, extra), ranks in zip(
                meta, launch(__file__, dirs, n, args.threads, args.timeout, repeats(args)),
                strict=True):
            cases.append({"case": case, "nproc": n,
                          "piper_strategy": json.loads(to_json(directives)),
                          **summarize(ranks), **extra})
    doc = {
        "benchmark": "precision",
        "baseline": "torch FSDP2 (MixedPrecisionPolicy / CPUOffloadPolicy)",
        "baseline_note": (
            "CPU/gloo: FSDP2's all-gathers run synchronously (no CUDA streams); bf16 "
            "matmuls on this CPU are not faster than fp32; the host is the device, so "
            "offload saves no measured memory here (piper_plan_memory states where the "
            "plan keeps each byte)."),
        "machine": machine(n, args.threads, shared=not args.quiet_machine),
        "model": {"name": "examples.gpt", **asdict(cfg), "per_replica_batch": cfg.batch},
        "optimizer": f"AdamW(lr={LR})",
        "steps": args.steps, "warmup": args.warmup,
        "cases": cases,
    }
    path = write_results("precision", args.out, doc, plot=not args.no_plot)
    print(ratio_line(doc))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
