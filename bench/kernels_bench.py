"""Benchmark Piper's fused Triton kernels.

Two parts, written as one JSON file (default bench/results/kernels_<device>.json):

- step: one training step of a small GPT-style model (LayerNorm, causal
  attention, GELU MLP, cross-entropy, AdamW), timed as eager PyTorch,
  torch.compile (GPU only), Piper's aten executor and Piper with fused
  kernels; the fused loss is checked against the aten executor's.
- kernels: single fused groups (an elementwise chain, softmax, LayerNorm)
  at large sizes, timed against eager torch, with the memory bandwidth each
  achieves (bytes read + written / time).

On a machine without a GPU it runs Triton in its interpreter; use --tiny
there (the interpreter is slow), which is what the smoke test does:

    python bench/kernels_bench.py --tiny --steps 1
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import piper  # noqa: E402
from piper.backend.kernels import KernelStep, fuse  # noqa: E402
from piper.backend.triton_codegen import TritonGroup, interpreting  # noqa: E402
from piper.dialects.kernel import FusedOp  # noqa: E402
from piper.ir import parse_module  # noqa: E402

# --------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)

    def forward(self, x, mask):
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q = q.reshape(b, t, h, d // h).transpose(1, 2)
        k = k.reshape(b, t, h, d // h).transpose(1, 2)
        v = v.reshape(b, t, h, d // h).transpose(1, 2)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)
        s = s.masked_fill(mask, float("-inf"))
        a = torch.softmax(s, dim=-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int, d: int, heads: int, layers: int, seq: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(seq, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1))

    def forward(self, idx):
        x = self.tok(idx) + self.pos
        for blk in self.blocks:
            x = blk(x, self.mask)
        return self.head(self.ln(x))


def loss_fn(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------


def sync():
    if HAS_GPU:
        torch.cuda.synchronize()


def timed(fn, steps: int, warmup: int = 1) -> float:
    """Mean milliseconds per call."""
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) * 1000 / steps


def bench_step(cfg: dict, steps: int, warmup: int, device: str) -> dict:
    torch.manual_seed(0)
    model = GPT(cfg["vocab"], cfg["d"], cfg["heads"], cfg["layers"], cfg["seq"])
    emodel = copy.deepcopy(model).to(device)
    idx = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"]))
    tgt = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = piper.capture(model, [idx], loss_fn, [tgt], opt)
    step.values = {k: v.to(device) for k, v in step.values.items()}
    fused = KernelStep(step, device=device)
    idx_d, tgt_d = idx.to(device), tgt.to(device)

    # the same first step through eager torch and both Piper paths
    eager_loss = loss_fn(emodel(idx_d), tgt_d)
    ref_loss = step.run(idx_d, tgt_d, device=device)
    fused_loss = fused.run(idx_d, tgt_d)
    out = {
        "config": cfg,
        "groups": {k: sum(1 for op in fused.module.walk()
                          if isinstance(op, FusedOp) and op.kind_name == k)
                   for k in ("elementwise", "reduction", "matmul")},
        "fallback_groups": len(fused.kernel_report.aten),
        "loss": float(eager_loss),
        "aten_vs_eager_loss_diff": abs(float(ref_loss) - float(eager_loss)),
        "fused_vs_eager_loss_diff": abs(float(fused_loss) - float(eager_loss)),
    }
    out["piper_aten_ms"] = timed(lambda: step.run(idx_d, tgt_d, device=device), steps, warmup)
    out["piper_fused_ms"] = timed(lambda: fused.run(idx_d, tgt_d), steps, warmup)

    eopt = torch.optim.AdamW(emodel.parameters(), lr=1e-3)

    def eager_step(m=emodel, o=eopt):
        o.zero_grad(set_to_none=True)
        loss_fn(m(idx_d), tgt_d).backward()
        o.step()

    out["eager_ms"] = timed(eager_step, steps, warmup)
    if HAS_GPU:
        cmodel = torch.compile(emodel)
        out["torch_compile_ms"] = timed(lambda: eager_step(cmodel), steps, max(warmup, 2))
    else:
        out["torch_compile_ms"] = None
        out["torch_compile_skipped"] = "no GPU: torch.compile is timed on GPUs only"
    return out


# --------------------------------------------------------------------------
# single kernels: achieved bandwidth
# --------------------------------------------------------------------------


def kernel_cases(tiny: bool):
    n = 4096 if tiny else 1 << 26
    rows, cols = (8, 64) if tiny else (16384, 4096)
    t = f"tensor<{rows}x{cols}xf32>"
    v = f"tensor<{cols}xf32>"
    r1 = f"tensor<{rows}x1xf32>"
    return [
        ("gelu(x * a + b)", f"""
func.func @f(%x: tensor<{n}xf32>, %a: tensor<{n}xf32>, %b: tensor<{n}xf32>) -> tensor<{n}xf32> {{
  %m = graph.aten "aten.mul.Tensor"(%x, %a) : (tensor<{n}xf32>, tensor<{n}xf32>) -> tensor<{n}xf32>
  %s = graph.aten "aten.add.Tensor"(%m, %b) : (tensor<{n}xf32>, tensor<{n}xf32>) -> tensor<{n}xf32>
  %g = graph.aten "aten.gelu.default"(%s) : (tensor<{n}xf32>) -> tensor<{n}xf32>
  func.return %g : tensor<{n}xf32>
}}""", [(n,), (n,), (n,)], lambda x, a, b: F.gelu(x * a + b)),
        ("softmax(x / 8)", f"""
func.func @f(%x: {t}) -> {t} {{
  %d = graph.aten "aten.div.Tensor"(%x, 8.0) : ({t}) -> {t}
  %s = graph.aten "aten._softmax.default"(%d, -1, false) : ({t}) -> {t}
  func.return %s : {t}
}}""", [(rows, cols)], lambda x: torch.softmax(x / 8.0, dim=-1)),
        ("layer_norm(x)", f"""
func.func @f(%x: {t}, %w: {v}, %b: {v}) -> {t} {{
  %y, %m, %r = graph.aten "aten.native_layer_norm.default"(%x, [{cols}], %w, %b, 1.0e-05) : ({t}, {v}, {v}) -> ({t}, {r1}, {r1})
  func.return %y : {t}
}}""", [(rows, cols), (cols,), (cols,)],
         lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)),
    ]


def bench_kernels(tiny: bool, steps: int, warmup: int, device: str) -> list[dict]:
    results = []
    for name, text, shapes, eager in kernel_cases(tiny):
        module = fuse(parse_module(text), ["fuse-reductions", "fuse-elementwise"])
        (op,) = [o for o in module.walk() if isinstance(o, FusedOp)]
        group = TritonGroup(op)
        gen = torch.Generator().manual_seed(0)
        args = [torch.randn(s, generator=gen).to(device) for s in shapes]
        got = group(*args)[0]
        want = eager(*args)
        nbytes = sum(a.numel() * a.element_size() for a in args) + got.numel() * got.element_size()
        fused_ms = timed(lambda g=group, a=args: g(*a), steps, warmup)
        eager_ms = timed(lambda e=eager, a=args: e(*a), steps, warmup)
        results.append({
            "name": name,
            "kind": op.kind_name,
            "domain": op.domain_shape,
            "bytes": nbytes,
            "fused_ms": fused_ms,
            "eager_ms": eager_ms,
            "fused_GBps": nbytes / fused_ms / 1e6,
            "eager_GBps": nbytes / eager_ms / 1e6,
            "max_abs_err": float((got - want).abs().max()),
        })
    return results


TINY = {"vocab": 32, "d": 16, "heads": 2, "layers": 1, "seq": 8, "batch": 2}
FULL = {"vocab": 8192, "d": 512, "heads": 8, "layers": 4, "seq": 256, "batch": 8}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny sizes (CPU / interpreter)")
    p.add_argument("--steps", type=int, default=None, help="timed repetitions")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first")
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = p.parse_args(argv)
    device = "cuda" if HAS_GPU else "cpu"
    tiny = args.tiny or not HAS_GPU
    steps = args.steps or (2 if tiny else 20)
    out = args.out or ROOT / "bench" / "results" / f"kernels_{device}.json"
    result = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if HAS_GPU else platform.processor() or "cpu",
        "interpreted": interpreting(),
        "tiny": tiny,
        "torch": torch.__version__,
        "step": bench_step(TINY if tiny else FULL, steps, args.warmup, device),
        "kernels": bench_kernels(tiny, steps, args.warmup, device),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    s = result["step"]
    print(f"step ({device}): eager {s['eager_ms']:.2f} ms, piper aten {s['piper_aten_ms']:.2f} ms, "
          f"piper fused {s['piper_fused_ms']:.2f} ms"
          + (f", torch.compile {s['torch_compile_ms']:.2f} ms" if s["torch_compile_ms"] else ""))
    for k in result["kernels"]:
        print(f"{k['name']:>18}: fused {k['fused_ms']:.3f} ms ({k['fused_GBps']:.1f} GB/s), "
              f"eager {k['eager_ms']:.3f} ms ({k['eager_GBps']:.1f} GB/s)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
