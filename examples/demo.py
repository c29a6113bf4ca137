"""Piper demo: train a small GPT on 4 CPU processes with a composed strategy.

    python -m examples.demo            # pp=2 x dp=2, ZeRO-1, 1F1B, 4 microbatches

Compiles the training step (capture -> pipeline split -> global DAG ->
microbatches, replicas, ZeRO sharding, 1F1B order -> one program per
device), prints the plan, trains a few steps with torchrun on gloo, and
checks every loss and the final parameters against one process training
the plain model with torch.optim.AdamW on the same global batches.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import piper
from examples.gpt import GPTConfig, gpt_data, make_gpt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pp", type=int, default=2)
    ap.add_argument("--dp", type=int, default=2)
    ap.add_argument("--microbatches", type=int, default=4)
    ap.add_argument("--zero", type=int, default=1)
    ap.add_argument("--schedule", default="1f1b")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)

    cfg = GPTConfig(vocab=64, seq=16, dim=32, heads=4, layers=args.pp, batch=2, tied=False)
    model = make_gpt(cfg)
    reference = make_gpt(cfg)
    reference.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    strategy = [piper.place(pp=args.pp), piper.split(args.microbatches),
                piper.replicate(args.dp)]
    if args.zero:
        strategy.append(piper.shard(args.zero))
    strategy.append(piper.order(schedule=args.schedule))

    t0 = time.perf_counter()
    idx, targets = gpt_data(cfg)  # one microbatch: capture traces this shape
    plan = piper.compile(model, (idx, targets), optimizer=opt, strategy=strategy)
    print(f"compiled in {time.perf_counter() - t0:.1f} s for {plan.num_devices} devices")
    print(plan.summary())

    per_step = cfg.batch * args.microbatches * args.dp
    batches = []
    for s in range(args.steps):
        i, t = gpt_data(GPTConfig(vocab=cfg.vocab, seq=cfg.seq, batch=per_step), seed=100 + s)
        batches.append({"input0": i, "input1": t})
    result = plan.run(batches)

    ref_opt = torch.optim.AdamW(reference.parameters(), lr=3e-3)
    ok = True
    for s, b in enumerate(batches):
        ref_opt.zero_grad()
        ref = reference(b["input0"], b["input1"])  # the model computes its mean loss
        ref.backward()
        ref_opt.step()
        same = abs(result.losses[s] - ref.item()) <= 1e-5 * abs(ref.item()) + 1e-6
        ok &= same
        print(f"step {s}: loss {result.losses[s]:.6f}   (one process, eager: {ref.item():.6f})")
    worst = max((result.state[n] - p.detach()).abs().max().item()
                for n, p in reference.named_parameters())
    ok &= worst <= 1e-4
    times = [statistics.median(v) for v in result.seconds.values()]
    print(f"step time: {max(times) * 1e3:.1f} ms (median, slowest rank); "
          f"largest parameter difference vs eager: {worst:.2e}")
    from piper.analysis.memory import program_peak_bytes
    from piper.analysis.plan_check import programs

    progs = programs(plan.module)
    for r in sorted(result.peak_bytes):
        print(f"rank {r}: peak live bytes measured {max(result.peak_bytes[r])}, "
              f"plan estimate {program_peak_bytes(progs[r])}")
    print("parity with single-process eager training:", "OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
