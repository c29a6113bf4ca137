"""Train a byte-level GPT on Python's own standard library: pp=2 x dp=2, streamed data.

    python -m examples.train_lm                      # 4 CPU processes, 300 steps
    python -m examples.train_lm --steps 600 --out runs/lm
    python -m examples.train_lm --out runs/lm --resume   # after a kill: go on

The text is the standard library's `.py` sources (they ship with every
Python), read as bytes; one file is held out for validation. Batches are
made as the run reads them (a generator: nothing is materialised up
front), four sequences per microbatch, 2 microbatches on each of 2
replicas of a 2-stage pipeline (1F1B). Every `--eval-every` steps the
run writes a checkpoint; this process loads it into a plain copy of the
model (`piper.load_checkpoint`) and reports the held-out loss, which goes
into `metrics.jsonl` beside the training loss. At the end
`OUT/metrics.png` shows both curves.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import piper
from examples.gpt import GPTConfig, make_gpt
from examples.own_model import stdlib_bytes

CFG = GPTConfig(vocab=256, seq=64, dim=64, heads=4, layers=4, batch=4, tied=False)
MICROBATCHES, REPLICAS = 2, 2


def windows(text: torch.Tensor, rows: int, gen: torch.Generator):
    """`rows` random windows: inputs and the next bytes as targets."""
    start = torch.randint(0, text.numel() - CFG.seq - 1, (rows,), generator=gen).tolist()
    x = torch.stack([text[s:s + CFG.seq] for s in start])
    y = torch.stack([text[s + 1:s + CFG.seq + 1] for s in start])
    return x, y


def batches(text: torch.Tensor, seed: int = 0):
    """Global batches, made one at a time as the run reads them."""
    gen = torch.Generator().manual_seed(seed)
    rows = CFG.batch * MICROBATCHES * REPLICAS
    while True:
        yield windows(text, rows, gen)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--out", default="runs/train_lm",
                    help="metrics.jsonl, metrics.png and checkpoints/ go here")
    ap.add_argument("--resume", action="store_true",
                    help="go on from the newest complete checkpoint in OUT/checkpoints")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    model = make_gpt(CFG)
    train, valid = stdlib_bytes()
    t0 = time.perf_counter()
    plan = piper.compile(model, windows(train, CFG.batch, torch.Generator().manual_seed(9)),
                         optimizer=torch.optim.AdamW(model.parameters(), lr=args.lr),
                         strategy=[piper.place(pp=2), piper.split(MICROBATCHES),
                                   piper.replicate(REPLICAS), piper.order("1f1b")])
    print(f"compiled for {plan.num_devices} devices in {time.perf_counter() - t0:.1f} s")

    held_out = windows(valid, 64, torch.Generator().manual_seed(1))
    evaluator = make_gpt(CFG)

    def validate(step: int, path: str) -> dict:
        piper.load_checkpoint(evaluator, path)
        with torch.no_grad():
            return {"val_loss": evaluator(*held_out).item()}

    with torch.no_grad():
        first_val = model(*held_out).item()
    print(f"held-out loss before training: {first_val:.3f}")
    t0 = time.perf_counter()
    result = plan.run(batches(train), steps=args.steps, run_dir=args.out, timeout=120,
                      checkpoint_every=args.eval_every,
                      checkpoint_dir=os.path.join(args.out, "checkpoints"),
                      resume=args.resume, on_checkpoint=validate)
    seconds = time.perf_counter() - t0
    model.load_state_dict(plan.state_dict())
    with torch.no_grad():
        last_val = model(*held_out).item()
    from piper.tools.piper_plot import plot_metrics

    picture = plot_metrics(os.path.join(args.out, "metrics.jsonl"))
    tokens = CFG.batch * MICROBATCHES * REPLICAS * CFG.seq * len(result.losses)
    print(f"trained {len(result.losses)} steps in {seconds:.1f} s ({tokens / seconds:.0f} "
          f"tokens/s): loss {result.losses[0]:.3f} -> {result.losses[-1]:.3f}; held-out "
          f"loss {first_val:.3f} -> {last_val:.3f}; curves in {picture}")
    return 0 if last_val < first_val else 1


if __name__ == "__main__":
    raise SystemExit(main())
