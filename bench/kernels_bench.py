"""Benchmark Piper's fused Triton kernels against eager PyTorch and torch.compile.

One command on a GPU machine:

    python bench/kernels_bench.py

writes bench/results/kernels_<device>.json (the device's name is in the file
name and in the JSON) and prints a summary. Two parts:

- step: one training step (forward, backward, AdamW) of the example GPT
  (examples/gpt.py), timed as eager PyTorch, torch.compile (inductor; GPU
  only), Piper's aten executor (unfused) and Piper with its fused kernels
  (`KernelStep`: fuse-matmul-epilogue, fuse-reductions, fuse-elementwise).
  The first step's loss of every path is compared with eager's.
- kernels: single fused groups at large sizes, forward and backward (a
  pointwise chain, softmax, LayerNorm, their backwards, cross-entropy's
  backward), timed against the same computation in eager torch and
  torch.compile. Each gets its memory traffic (bytes its inputs and outputs
  occupy: what a fused kernel must move at least) over its time, as a
  fraction of the device's memory bandwidth: the nominal peak of a known
  GPU (`peak_GBps`) and a device-to-device copy measured in the same run
  (`copy_GBps`). The target is >= 80% of the peak at these sizes.

Without a GPU, Triton runs in its interpreter (TRITON_INTERPRET=1) and the
sizes are tiny (`--tiny`, the default there): a smoke test of the same
code paths, whose timings mean nothing.

    python bench/kernels_bench.py --tiny --steps 1 --warmup 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import piper  # noqa: E402
from examples.gpt import GPTConfig, gpt_data, make_gpt  # noqa: E402
from piper.fused_step import KernelStep, fuse  # noqa: E402
from piper.backend.triton_codegen import TritonGroup, interpreting  # noqa: E402
from piper.dialects.kernel import FusedOp  # noqa: E402
from piper.ir import parse_module  # noqa: E402

TARGET = 0.8  # fraction of the memory bandwidth fused memory-bound kernels must reach

# Nominal memory bandwidth (bytes/s) of GPUs, from the vendors' data sheets;
# the first pattern found in the device name wins.
PEAK_BANDWIDTH = [
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),  # SXM5, HBM3
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),  # 40 GB
    ("L40S", 0.864e12),
    ("A10G", 0.6e12),
]

TINY_GPT = GPTConfig(vocab=32, seq=8, dim=16, heads=2, layers=1, batch=2, tied=False)
FULL_GPT = GPTConfig(vocab=8192, seq=256, dim=512, heads=8, layers=4, batch=8, tied=False)


def device_name() -> str:
    if HAS_GPU:
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine() or "cpu"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cpu"


def peak_bandwidth(name: str) -> float | None:
    for pattern, bw in PEAK_BANDWIDTH:
        if pattern.lower() in name.lower():
            return bw
    return None


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------


def sync():
    if HAS_GPU:
        torch.cuda.synchronize()


def timed(fn, steps: int, warmup: int = 1) -> float:
    """Median milliseconds per call (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        if HAS_GPU:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def copy_bandwidth(nbytes: int, steps: int) -> float | None:
    """Bytes/s of a device-to-device copy (read + write), GPU only."""
    if not HAS_GPU:
        return None
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), steps, 3)
    return 2 * src.numel() * 4 / (ms / 1000)


# --------------------------------------------------------------------------
# the GPT example's training step
# --------------------------------------------------------------------------


def bench_step(cfg: GPTConfig, steps: int, warmup: int, device: str) -> dict:
    model = make_gpt(cfg)
    eager_model = make_gpt(cfg).to(device)
    eager_model.load_state_dict(model.state_dict())
    idx, tgt = gpt_data(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = piper.capture(model, (idx, tgt), optimizer=opt)
    step.values = {k: v.to(device) for k, v in step.values.items()}
    fused = KernelStep(step, device=device)
    unfused = KernelStep(step, device=device, passes=())
    idx_d, tgt_d = idx.to(device), tgt.to(device)

    # the first step through every path, from the same weights
    with torch.no_grad():
        eager_loss = eager_model(idx_d, tgt_d).item()
    fused_loss = fused.run(idx_d, tgt_d).item()
    aten_loss = unfused.run(idx_d, tgt_d).item()
    out = {
        "model": "examples/gpt.py",
        "config": cfg.__dict__,
        "groups": {k: sum(1 for op in fused.module.walk()
                          if isinstance(op, FusedOp) and op.kind_name == k)
                   for k in ("elementwise", "reduction", "matmul")},
        "fallback_groups": len(fused.kernel_report.aten),
        "loss": eager_loss,
        "aten_vs_eager_loss_diff": abs(aten_loss - eager_loss),
        "fused_vs_eager_loss_diff": abs(fused_loss - eager_loss),
    }
    out["piper_aten_ms"] = timed(lambda: unfused.run(idx_d, tgt_d), steps, warmup)
    out["piper_fused_ms"] = timed(lambda: fused.run(idx_d, tgt_d), steps, warmup)

    def train_step(m, opt):
        def run():
            opt.zero_grad(set_to_none=True)
            m(idx_d, tgt_d).backward()
            opt.step()
        return run

    out["eager_ms"] = timed(train_step(eager_model, torch.optim.AdamW(eager_model.parameters(),
                                                                      lr=1e-3)), steps, warmup)
    if HAS_GPU:
        compiled = torch.compile(eager_model)
        out["torch_compile_ms"] = timed(
            train_step(compiled, torch.optim.AdamW(eager_model.parameters(), lr=1e-3)),
            steps, max(warmup, 3))
    else:
        out["torch_compile_ms"] = None
        out["torch_compile_skipped"] = "no GPU: torch.compile (inductor) is timed on GPUs only"
    out["fused_speedup_vs_eager"] = out["eager_ms"] / out["piper_fused_ms"]
    return out


# --------------------------------------------------------------------------
# single kernels: achieved bandwidth
# --------------------------------------------------------------------------


def kernel_cases(tiny: bool):
    """(name, IR of one function, argument shapes and kinds, eager function)."""
    n = 4096 if tiny else 1 << 26
    rows, cols = (8, 64) if tiny else (16384, 4096)
    ce_rows, vocab = (8, 32) if tiny else (16384, 8192)
    t, v, r1 = f"tensor<{rows}x{cols}xf32>", f"tensor<{cols}xf32>", f"tensor<{rows}x1xf32>"
    vt = f"tensor<{n}xf32>"
    lt = f"tensor<{ce_rows}x{vocab}xf32>"

    return [
        ("gelu(x * a + b)", f"""
func.func @f(%x: {vt}, %a: {vt}, %b: {vt}) -> {vt} {{
  %m = graph.aten "aten.mul.Tensor"(%x, %a) : ({vt}, {vt}) -> {vt}
  %s = graph.aten "aten.add.Tensor"(%m, %b) : ({vt}, {vt}) -> {vt}
  %g = graph.aten "aten.gelu.default"(%s) : ({vt}) -> {vt}
  func.return %g : {vt}
}}""", [("randn", (n,))] * 3, lambda x, a, b: F.gelu(x * a + b)),
        ("gelu_backward(g, x)", f"""
func.func @f(%g: {vt}, %x: {vt}, %r: {vt}) -> {vt} {{
  %d = graph.aten "aten.gelu_backward.default"(%g, %x) : ({vt}, {vt}) -> {vt}
  %s = graph.aten "aten.add.Tensor"(%d, %r) : ({vt}, {vt}) -> {vt}
  func.return %s : {vt}
}}""", [("randn", (n,))] * 3,
         lambda g, x, r: torch.ops.aten.gelu_backward(g, x) + r),
        ("softmax(x / 8)", f"""
func.func @f(%x: {t}) -> {t} {{
  %d = graph.aten "aten.div.Tensor"(%x, 8.0) : ({t}) -> {t}
  %s = graph.aten "aten._softmax.default"(%d, -1, false) : ({t}) -> {t}
  func.return %s : {t}
}}""", [("randn", (rows, cols))], lambda x: torch.softmax(x / 8.0, dim=-1)),
        ("softmax_backward(g, y)", f"""
func.func @f(%g: {t}, %y: {t}) -> {t} {{
  %d = graph.aten "aten._softmax_backward_data.default"(%g, %y, -1, f32) : ({t}, {t}) -> {t}
  func.return %d : {t}
}}""", [("randn", (rows, cols)), ("softmax", (rows, cols))],
         lambda g, y: torch.ops.aten._softmax_backward_data(g, y, -1, torch.float32)),
        ("layer_norm(x)", f"""
func.func @f(%x: {t}, %w: {v}, %b: {v}) -> {t} {{
  %y, %m, %r = graph.aten "aten.native_layer_norm.default"(%x, [{cols}], %w, %b, 1.0e-05) : ({t}, {v}, {v}) -> ({t}, {r1}, {r1})
  func.return %y : {t}
}}""", [("randn", (rows, cols)), ("randn", (cols,)), ("randn", (cols,))],
         lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5)),
        ("layer_norm_backward(dy) (input grad)", f"""
func.func @f(%dy: {t}, %x: {t}, %mean: {r1}, %rstd: {r1}, %w: {v}, %b: {v}) -> {t} {{
  %dx = graph.aten "aten.native_layer_norm_backward.default"(%dy, %x, [{cols}], %mean, %rstd, %w, %b, [true, false, false]) : ({t}, {t}, {r1}, {r1}, {v}, {v}) -> {t}
  func.return %dx : {t}
}}""", [("randn", (rows, cols)), ("randn", (rows, cols)), ("mean", (rows, 1)), ("rstd", (rows, 1)),
        ("randn", (cols,)), ("randn", (cols,))],
         lambda dy, x, m, r, w, b: torch.ops.aten.native_layer_norm_backward(
             dy, x, [x.shape[-1]], m, r, w, b, [True, False, False])[0]),
        ("cross_entropy_backward", f"""
func.func @f(%g: tensor<f32>, %logp: {lt}, %t: tensor<{ce_rows}xi64>, %tw: tensor<f32>) -> {lt} {{
  %nb = graph.aten "aten.nll_loss_backward.default"(%g, %logp, %t, none, 1, -100, %tw) : (tensor<f32>, {lt}, tensor<{ce_rows}xi64>, tensor<f32>) -> {lt}
  %d = graph.aten "aten._log_softmax_backward_data.default"(%nb, %logp, 1, f32) : ({lt}, {lt}) -> {lt}
  func.return %d : {lt}
}}""", [("one", ()), ("log_softmax", (ce_rows, vocab)), ("target", (ce_rows, vocab)),
        ("count", (ce_rows,))],
         lambda g, lp, t, tw: torch.ops.aten._log_softmax_backward_data(
             torch.ops.aten.nll_loss_backward(g, lp, t, None, 1, -100, tw), lp, 1, torch.float32)),
    ]


def make_args(specs, device):
    gen = torch.Generator().manual_seed(0)
    out = []
    for kind, shape in specs:
        if kind == "randn":
            a = torch.randn(shape, generator=gen)
        elif kind == "softmax":
            a = torch.softmax(torch.randn(shape, generator=gen), -1)
        elif kind == "log_softmax":
            a = torch.log_softmax(torch.randn(shape, generator=gen), -1)
        elif kind in ("mean", "rstd"):
            x = out[1].cpu()  # layer_norm_backward: statistics of its x
            a = x.mean(-1, keepdim=True) if kind == "mean" else torch.rsqrt(
                x.var(-1, unbiased=False, keepdim=True) + 1e-5)
        elif kind == "one":
            a = torch.tensor(1.0)
        elif kind == "target":
            a = torch.randint(0, shape[1], (shape[0],), generator=gen)
        elif kind == "count":
            a = torch.tensor(float(shape[0]))
        else:
            raise ValueError(kind)
        out.append(a.to(device))
    return out


def bench_kernels(tiny: bool, steps: int, warmup: int, device: str, peak: float | None,
                  copy_bw: float | None) -> list[dict]:
    results = []
    for name, text, specs, eager in kernel_cases(tiny):
        module = fuse(parse_module(text), ["fuse-reductions", "fuse-elementwise"])
        groups = [o for o in module.walk() if isinstance(o, FusedOp)]
        if len(groups) != 1:
            raise RuntimeError(f"{name}: expected one fused group, got {len(groups)}")
        op = groups[0]
        group = TritonGroup(op)
        args = make_args(specs, device)
        got = group(*args)
        want = eager(*args)
        want = list(want) if isinstance(want, tuple | list) else [want]
        nbytes = sum(a.numel() * a.element_size() for a in args) + sum(
            o.numel() * o.element_size() for o in got)
        row = {
            "name": name,
            "kind": op.kind_name,
            "domain": op.domain_shape,
            "block": op.block_sizes,
            "warps": op.num_warps.data,
            "bytes": nbytes,
            "max_abs_err": max(float((g - w).abs().max()) for g, w in zip(got, want, strict=True)),
            "fused_ms": timed(lambda g=group, a=args: g(*a), steps, warmup),
            "eager_ms": timed(lambda e=eager, a=args: e(*a), steps, warmup),
        }
        if HAS_GPU:
            compiled = torch.compile(eager)
            row["torch_compile_ms"] = timed(lambda c=compiled, a=args: c(*a), steps,
                                            max(warmup, 3))
        for k in ("fused", "eager", "torch_compile"):
            if f"{k}_ms" in row:
                row[f"{k}_GBps"] = nbytes / row[f"{k}_ms"] / 1e6
        if peak:
            row["fused_fraction_of_peak"] = row["fused_GBps"] * 1e9 / peak
            row["meets_target"] = row["fused_fraction_of_peak"] >= TARGET
        if copy_bw:
            row["fused_fraction_of_copy"] = row["fused_GBps"] * 1e9 / copy_bw
        results.append(row)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true",
                   help="tiny sizes (the default without a GPU: Triton's interpreter is slow)")
    p.add_argument("--steps", type=int, default=None, help="timed repetitions (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    p.add_argument("--out", type=Path, default=None, help="JSON output file")
    args = p.parse_args(argv)
    device = "cuda" if HAS_GPU else "cpu"
    name = device_name()
    tiny = args.tiny or not HAS_GPU
    steps = args.steps or (2 if tiny else 50)
    stem = f"kernels_{slug(name)}{'_tiny' if tiny else ''}"
    out = args.out or ROOT / "bench" / "results" / f"{stem}.json"
    peak = peak_bandwidth(name) if HAS_GPU else None
    copy_bw = copy_bandwidth(1 << 30, 20) if HAS_GPU and not tiny else None
    result = {
        "device": device,
        "device_name": name,
        "interpreted": interpreting(),
        "tiny": tiny,
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "peak_GBps": peak / 1e9 if peak else None,
        "copy_GBps": copy_bw / 1e9 if copy_bw else None,
        "target_fraction_of_peak": TARGET,
        "step": bench_step(TINY_GPT if tiny else FULL_GPT, steps if tiny else 20,
                           args.warmup, device),
        "kernels": bench_kernels(tiny, steps, args.warmup, device, peak, copy_bw),
    }
    if not HAS_GPU:
        result["note"] = ("no GPU: Triton ran in its interpreter at tiny sizes; the "
                          "timings check that the paths run, they are not measurements")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    s = result["step"]
    print(f"device: {name} ({device}{', Triton interpreter' if result['interpreted'] else ''})")
    print(f"GPT step: eager {s['eager_ms']:.2f} ms, piper aten {s['piper_aten_ms']:.2f} ms, "
          f"piper fused {s['piper_fused_ms']:.2f} ms"
          + (f", torch.compile {s['torch_compile_ms']:.2f} ms" if s["torch_compile_ms"] else ""))
    for k in result["kernels"]:
        frac = (f", {100 * k['fused_fraction_of_peak']:.0f}% of peak"
                if "fused_fraction_of_peak" in k else "")
        comp = (f", torch.compile {k['torch_compile_GBps']:.0f} GB/s"
                if "torch_compile_GBps" in k else "")
        print(f"{k['name']:>38}: fused {k['fused_ms']:.3f} ms ({k['fused_GBps']:.1f} GB/s{frac}), "
              f"eager {k['eager_GBps']:.1f} GB/s{comp}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
