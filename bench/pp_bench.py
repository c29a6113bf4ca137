"""Pipeline parallelism on 4 processes: Piper's schedules against
torch.distributed.pipelining's matching ones, side by side.

    python bench/pp_bench.py                       # all four schedules
    python bench/pp_bench.py --schedules 1f1b --tiny --steps 2 --warmup 0

| case        | Piper                                                    | PyTorch                                   | model    |
|-------------|----------------------------------------------------------|-------------------------------------------|----------|
| 1f1b        | place(pp=4), split(8), order("1f1b")                     | Schedule1F1B, 1 stage per rank            | 4 layers |
| interleaved | place(pp=4), split(8), order("interleaved")              | ScheduleInterleaved1F1B, 2 stages per rank (s, s+4) | 8 layers |
| zb-h1       | split_backward(), place(pp=4), split(8), order("zb-h1")  | ScheduleInterleavedZeroBubble, 1 stage per rank | 4 layers |
| dualpipe-v  | split_backward(), place(pp=4, "v"), split(8), order("dualpipe-v") | ScheduleDualPipeV, stages (r, 7-r) | 8 layers |

Every case trains the benchmark GPT (dim 256, microbatches of 4 sequences
of 64 tokens, AdamW) with one transformer block per stage (the embedding in
the first stage, final norm, head and loss in the last), on the same global
batches, in one torchrun job on the same 4 processes. PyTorch's per-rank
optimizer steps over that rank's stage modules after `schedule.step`.
Output: bench/results/pp.json and pp.png (see bench/harness.py for what is
measured).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn as nn

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

PP = 4
MICROBATCHES = 8

# case -> (layers, split backward, placement, Piper schedule, torch schedule class)
CASES = {
    "1f1b": (PP, False, "loop", "1f1b", "Schedule1F1B"),
    "interleaved": (2 * PP, False, "loop", "interleaved", "ScheduleInterleaved1F1B"),
    "zb-h1": (PP, True, "loop", "zb-h1", "ScheduleInterleavedZeroBubble"),
    "dualpipe-v": (2 * PP, True, "v", "dualpipe-v", "ScheduleDualPipeV"),
}


class StageModule(nn.Module):
    """Stage s of the GPT: block s, with the embedding in front of the
    first and the final norm and head after the last (logits out; the
    schedule's loss_fn computes the loss on the same rank)."""

    def __init__(self, model, s: int):
        super().__init__()
        last = len(model.blocks) - 1
        self.embed = model.embed if s == 0 else None
        self.block = model.blocks[s]
        self.head = model.head if s == last else None

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x)
        x = self.block(x)
        if self.head is not None:
            x = self.head(x)
        return x


def stages_of_rank(rank: int, num_stages: int, placement: str) -> list[int]:
    if placement == "v":
        return [rank, num_stages - 1 - rank]
    return list(range(rank, num_stages, PP))


class PipeliningSide(Side):
    def __init__(self, settings: dict, full: dict, rank: int, world: int):
        self.settings, self.full, self.rank = settings, full, rank
        self.what = (f"torch.distributed.pipelining {settings['torch_schedule']} "
                     f"({settings['microbatches']} microbatches, gloo) + AdamW per rank")

    def build(self) -> None:
        from torch.distributed.pipelining import PipelineStage
        from torch.distributed.pipelining import schedules

        from examples.gpt import loss

        s = self.settings
        model = make_model(s, self.full)
        n = len(model.blocks)
        ids = stages_of_rank(self.rank, n, s["placement"])
        mods = [StageModule(model, i) for i in ids]
        del model  # the other ranks' layers are freed here
        self.stages = [PipelineStage(m, i, n, torch.device("cpu")) for m, i in zip(mods, ids,
                                                                                  strict=True)]
        cls = getattr(schedules, s["torch_schedule"])
        if issubclass(cls, schedules.PipelineScheduleMulti):
            self.schedule = cls(self.stages, s["microbatches"], loss_fn=loss)
        else:
            self.schedule = cls(self.stages[0], s["microbatches"], loss_fn=loss)
        self.first = any(st.is_first for st in self.stages)
        self.last = any(st.is_last for st in self.stages)
        self.opt = torch.optim.AdamW([p for m in mods for p in m.parameters()], lr=s["lr"])

    def step(self, batch):
        losses: list = []
        self.schedule.step(batch["input0"] if self.first else None,
                           target=batch["input1"] if self.last else None, losses=losses)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return sum(float(v) for v in losses) / len(losses) if self.last else None


def strategy(case: str) -> list:
    import piper

    _, split_bw, placement, sched, _ = CASES[case]
    out = [piper.split_backward()] if split_bw else []
    return out + [piper.place(pp=PP, placement=placement), piper.split(MICROBATCHES),
                  piper.order(schedule=sched)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap)
    ap.add_argument("--schedules", default=",".join(CASES),
                    help=f"comma-separated, of {', '.join(CASES)}")
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args.worker, PipeliningSide)

    import piper
    from examples.gpt import gpt_data, make_gpt
    from piper.directives.strategy import to_json

    names = [c for c in args.schedules.split(",") if c]
    for c in names:
        if c not in CASES:
            ap.error(f"unknown schedule '{c}' (one of {', '.join(CASES)})")
    base = gpt_config(args.tiny, batch=2 if args.tiny else 4)
    count = 2 + args.warmup + args.steps
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs, meta = [], []
        for name in names:
            layers, _, placement, _, torch_sched = CASES[name]
            cfg = replace(base, layers=layers)
            model = make_gpt(cfg)
            directives = strategy(name)
            plan = piper.compile(model, gpt_data(cfg), optimizer=torch.optim.AdamW(
                model.parameters(), lr=LR), strategy=directives)
            case_dir = Path(tmp) / name
            settings = {**base_settings(args, cfg), "placement": placement,
                        "torch_schedule": torch_sched, "microbatches": MICROBATCHES}
            save_case(case_dir, plan, gpt_batches(cfg, cfg.batch * MICROBATCHES, count), settings)
            dirs.append(case_dir)
            meta.append((name, cfg, directives, torch_sched))
        results = launch(__file__, dirs, PP, args.threads, args.timeout, repeats(args))
        for (name, cfg, directives, torch_sched), ranks in zip(meta, results, strict=True):
            cases.append({"case": name, "nproc": PP, "layers": cfg.layers,
                          "microbatches": MICROBATCHES, "torch_schedule": torch_sched,
                          "piper_strategy": json.loads(to_json(directives)),
                          **summarize(ranks)})
    doc = {
        "benchmark": "pp",
        "baseline": "torch.distributed.pipelining",
        "machine": machine(PP, args.threads, shared=not args.quiet_machine),
        "model": {"name": "examples.gpt", **asdict(base), "layers": "per case",
                  "microbatch": base.batch},
        "optimizer": f"AdamW(lr={LR})",
        "steps": args.steps, "warmup": args.warmup,
        "cases": cases,
    }
    path = write_results("pp", args.out, doc, plot=not args.no_plot)
    print(ratio_line(doc))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
