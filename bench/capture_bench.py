"""Capture time of unmodified transformers models, against torch.export.

    python bench/capture_bench.py                      # every model (a few minutes)
    python bench/capture_bench.py --layers 4 --models llama --out /tmp/c.json

Each case builds a transformers model from a tiny random config (vocab 97,
hidden 48, seq 19, batch 2), annotates its decoder layers from outside
(`piper.annotate("PP", layers)`), and times in the same process:

- `piper`: `piper.capture` of the whole training step (forward, loss,
  backward, AdamW update) into graph IR;
- `export`: `torch.export.export(..., strict=False)` of the same forward
  and loss only (no backward, no optimizer): the PyTorch baseline.

`ratio` is piper / export. Each time is the median of --repeat runs, after
one warm-up capture of the same model (imports and caches excluded). The op
count is the number of graph.aten ops over @forward, @backward and
@optimizer. The layer sweep (Llama 4..32 layers) checks that capture time
grows linearly in layers. Output: bench/results/capture.json, with the
machine's load average before and after and the library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import piper  # noqa: E402

VOCAB, SEQ, BATCH = 97, 19, 2


def make(name: str, layers: int):
    import transformers as T

    tiny = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=64,
                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                use_cache=False)
    if name == "llama":
        model = T.LlamaForCausalLM(T.LlamaConfig(**tiny))
    elif name == "qwen3":
        model = T.Qwen3ForCausalLM(T.Qwen3Config(head_dim=12, **tiny))
    elif name == "mistral":
        model = T.MistralForCausalLM(T.MistralConfig(**tiny))
    elif name == "gpt2":
        model = T.GPT2LMHeadModel(T.GPT2Config(
            vocab_size=VOCAB, n_embd=48, n_layer=layers, n_head=4, n_positions=32,
            use_cache=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    else:
        raise SystemExit(f"unknown model {name}")
    return model.train()


class _Loss(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels):
        return self.model(input_ids=input_ids, labels=labels).loss


def ops(step) -> int:
    from piper.dialects.graph import AtenOp

    return sum(isinstance(o, AtenOp) for f in step.module.body.block.ops
               for o in f.body.block.ops)


def measure(name: str, layers: int, repeat: int) -> dict:
    model = make(name, layers)
    layer_list = model.transformer.h if name == "gpt2" else model.model.layers
    piper.clear_annotations(model)
    piper.annotate("PP", layer_list)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    example = {"input_ids": ids, "labels": ids}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def capture():
        return piper.capture(model, example, optimizer=opt)

    def export():
        return torch.export.export(_Loss(model), (ids, ids), strict=False)

    step = capture()  # warm-up
    export()
    piper_s, export_s = [], []
    for _ in range(repeat):  # interleaved, so load shifts hit both alike
        t = time.perf_counter()
        capture()
        piper_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        export()
        export_s.append(time.perf_counter() - t)
    p, e = statistics.median(piper_s), statistics.median(export_s)
    row = {"model": name, "layers": layers, "ops": ops(step), "piper_s": round(p, 3),
           "export_s": round(e, 3), "ratio": round(p / e, 2)}
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama,qwen3,mistral,gpt2")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--sweep", default="4,8,16,32", help="Llama layer counts ('' for none)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "capture.json"))
    args = ap.parse_args(argv)
    import transformers

    load_before = os.getloadavg()
    models = [measure(m, args.layers, args.repeat) for m in args.models.split(",") if m]
    sweep = [measure("llama", n, args.repeat) for n in
             (int(x) for x in args.sweep.split(",") if x)]
    slope = None
    if len(sweep) >= 2:  # seconds per layer between the smallest and largest case
        a, b = sweep[0], sweep[-1]
        slope = (b["piper_s"] - a["piper_s"]) / (b["layers"] - a["layers"])
    out = {
        "what": "capture of the whole training step (piper) vs torch.export of forward+loss",
        "models": models,
        "llama_layers": sweep,
        "seconds_per_layer": None if slope is None else round(slope, 3),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_before": load_before, "load_after": os.getloadavg()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
