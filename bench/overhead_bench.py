"""Runtime overhead: Piper's runtime against plain PyTorch on one process.

    python bench/overhead_bench.py
    python bench/overhead_bench.py --tiny --steps 2 --warmup 0

No communication, no strategy: Piper compiles `[place(pp=1)]` (every stage
on the one device) and runs `RankRuntime.step`; PyTorch runs the plain
training loop (`loss = model(x, y); loss.backward(); opt.step();
opt.zero_grad()`), in the same process, on the same batches. What remains
is the cost of the runtime itself (interpreting the program, calling aten
op by op, the live-bytes accounting) and of the captured graph against
eager autograd. Two sizes: the benchmark GPT (dim 256), where compute
dominates, and a small one (dim 64, 32 tokens), where per-op costs show.
Each case also records where the time goes: forward / backward / optimizer
for PyTorch, the stage functions by kind (F, B, OPT) for Piper.
Output: bench/results/overhead.json and overhead.png (see
bench/harness.py for what is measured).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
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
    median_breakdown,
    ratio_line,
    repeats,
    run_worker,
    save_case,
    summarize,
    write_results,
)


class EagerSide(Side):
    what = "plain PyTorch training loop (eager autograd) + AdamW"

    def __init__(self, settings: dict, full: dict, rank: int, world: int):
        self.settings, self.full = settings, full
        self.per_step: list[dict[str, float]] = []

    def build(self) -> None:
        self.model = make_model(self.settings, self.full)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.settings["lr"])

    def step(self, batch):
        t0 = time.perf_counter()
        loss = self.model(batch["input0"], batch["input1"])
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        self.per_step.append({"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2})
        return loss.item()

    def extra(self) -> dict:
        return {"breakdown_s": median_breakdown(self.per_step, self.settings["steps"])}


def ops_per_step(plan) -> int:
    """aten calls one Piper step makes (ops of every called function)."""
    from piper.analysis.plan_check import programs
    from piper.backend.aten import find_function
    from piper.dialects import sched
    from piper.dialects.graph import AtenOp

    sizes: dict[str, int] = {}
    total = 0
    for op in programs(plan.module)[0].body.block.ops:
        if isinstance(op, sched.CallOp):
            name = op.callee.root_reference.data
            if name not in sizes:
                fn = find_function(plan.module, name)
                sizes[name] = sum(1 for o in fn.body.block.ops if isinstance(o, AtenOp))
            total += sizes[name]
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap, steps=20)
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args.worker, EagerSide)

    import piper
    from examples.gpt import gpt_data, make_gpt

    big = gpt_config(args.tiny, layers=2 if args.tiny else 4)
    sizes = {"gpt d256": big} if not args.tiny else {"gpt tiny": big}
    if not args.tiny:
        sizes["gpt d64"] = replace(big, dim=64, seq=32, vocab=128)
    count = 2 + args.warmup + args.steps
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs, meta = [], []
        for i, (name, cfg) in enumerate(sizes.items()):
            model = make_gpt(cfg)
            directives = [piper.place(pp=1)]
            plan = piper.compile(model, gpt_data(cfg), optimizer=torch.optim.AdamW(
                model.parameters(), lr=LR), strategy=directives)
            case_dir = Path(tmp) / f"case{i}"
            save_case(case_dir, plan, gpt_batches(cfg, cfg.batch, count),
                      {**base_settings(args, cfg), "breakdown": True})
            dirs.append(case_dir)
            meta.append((name, cfg, ops_per_step(plan)))
        results = launch(__file__, dirs, 1, args.threads, args.timeout, repeats(args))
        for (name, cfg, nops), ranks in zip(meta, results, strict=True):
            s = summarize(ranks)
            extra = (s["piper"]["median_step_s"] - s["torch"]["median_step_s"]) / nops
            cases.append({"case": name, "nproc": 1, "model": asdict(cfg),
                          "piper_aten_calls_per_step": nops,
                          "extra_seconds_per_aten_call": extra,
                          "piper_strategy": [{"directive": "place", "pp": 1}], **s})
    doc = {
        "benchmark": "overhead",
        "baseline": "plain PyTorch",
        "machine": machine(1, args.threads, shared=not args.quiet_machine),
        "optimizer": f"AdamW(lr={LR})",
        "steps": args.steps, "warmup": args.warmup,
        "cases": cases,
    }
    path = write_results("overhead", args.out, doc, plot=not args.no_plot)
    print(ratio_line(doc))
    for c in cases:
        parts = {side: ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in
                                 c[side].get("breakdown_s_rank0", {}).items())
                 for side in ("torch", "piper")}
        print(f"{c['case']}: PyTorch {parts['torch']} | Piper {parts['piper']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
