"""Train an unmodified transformers Llama with Piper: pp=2 x dp=2, ZeRO-1, 1F1B.

    python -m examples.own_model                 # 4 CPU processes, 30 steps
    python -m examples.own_model --steps 100 --out llama-trained

The model is `transformers.LlamaForCausalLM` from a small random config
(byte-level vocabulary, 4 layers); nothing in it is edited. Its decoder
layers are annotated from outside, each its own region, and `place(pp=2)`
with 1F1B spreads them two to a pipeline stage; the embedding,
rotary tables and masks join the first stage and the final norm, the head
and the loss the last, by themselves. The text is Python's own standard
library sources (they ship with every Python), read as bytes: a held-out
file gives the validation loss. At the end the trained weights go back
into the model and, with `--out`, out through `save_pretrained`.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import piper

SEQ = 64
MICROBATCH = 4  # rows of one microbatch on one replica: what capture traces


def stdlib_bytes(limit: int = 4 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out bytes from the standard library's .py files."""
    root = os.path.dirname(os.__file__)
    files = sorted(f for f in os.listdir(root) if f.endswith(".py"))
    held_out = "textwrap.py"
    train, total = [], 0
    for f in files:
        if f == held_out:
            continue
        with open(os.path.join(root, f), "rb") as fh:
            data = fh.read()
        train.append(data)
        total += len(data)
        if total >= limit:
            break
    with open(os.path.join(root, held_out), "rb") as fh:
        valid = fh.read()
    as_tensor = lambda b: torch.frombuffer(bytearray(b), dtype=torch.uint8).long()  # noqa: E731
    return as_tensor(b"".join(train)), as_tensor(valid)


def windows(data: torch.Tensor, rows: int, gen: torch.Generator) -> torch.Tensor:
    start = torch.randint(0, data.numel() - SEQ, (rows,), generator=gen)
    return torch.stack([data[s:s + SEQ] for s in start.tolist()])


def make_model():
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=172, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ,
        use_cache=False)
    return transformers.LlamaForCausalLM(cfg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", default="", help="save_pretrained the trained model here")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    model = make_model().train()
    piper.annotate("PP", model.model.layers)  # 4 regions; 1F1B on pp=2 puts 2 in a stage

    train, valid = stdlib_bytes()
    gen = torch.Generator().manual_seed(0)
    example = windows(train, MICROBATCH, gen)
    t0 = time.perf_counter()
    plan = piper.compile(
        model, {"input_ids": example, "labels": example},
        optimizer=torch.optim.AdamW(model.parameters(), lr=args.lr),
        strategy=[piper.place(pp=2), piper.split(2), piper.replicate(2), piper.shard(1),
                  piper.order("1f1b")])
    print(f"compiled in {time.perf_counter() - t0:.1f} s for {plan.num_devices} devices")
    print(plan.summary())

    rows = MICROBATCH * 2 * 2  # microbatches x replicas
    batches = [(x, x) for x in (windows(train, rows, gen) for _ in range(args.steps))]
    held_out = windows(valid, 32, torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=held_out, labels=held_out).loss.item()
    t0 = time.perf_counter()
    result = plan.run(batches, timeout=120)
    seconds = time.perf_counter() - t0
    model.load_state_dict(plan.state_dict())
    with torch.no_grad():
        after = model(input_ids=held_out, labels=held_out).loss.item()
    first, last = result.losses[0], result.losses[-1]
    print(f"trained {args.steps} steps in {seconds:.1f} s: loss {first:.3f} -> {last:.3f}; "
          f"held-out loss {before:.3f} -> {after:.3f}")
    if args.out:
        model.save_pretrained(args.out)
        print(f"saved to {args.out}")
    return 0 if after < before else 1


if __name__ == "__main__":
    raise SystemExit(main())
