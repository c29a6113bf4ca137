"""Llama-3 8B and 70B: published training configurations beside the search's choice.

For Llama-3 8B on 8 devices and 70B on 64 (issue 22, item 5) this script
writes to bench/results/search_published.json, on the simulator's `h100`
preset (analytic roofline, docs/simulator.md):

1. the configurations torchtitan and NVIDIA's NeMo (Megatron-LM) publish
   for these models on H100s, with their published numbers and sources
   (`published()`), each written as the directive list that comes closest
   (`missing` says what Piper cannot say: context parallelism, selective
   activation checkpointing, virtual pipeline stages, FP8), and the
   simulator's prediction for it: step time, tokens a second a device,
   peak memory;
2. the search's best choice under the H100's 80 GB (`piper.search`'s
   candidates, piper.strategy_search.candidates, each simulated as
   `search_captured` does), with the same prediction.

Shapes without memory: the model (transformers' LlamaForCausalLM at the
published dimensions, seq 8192, sdpa attention) is built and captured
under a FakeTensorMode, so no weight is ever allocated (an 8B model in
fp32 is 32 GB, the machine has 24 GiB).

Depth: compiling and simulating a plan costs time proportional to the
layers (about 2-3 s a layer a candidate on the shared 2-core machine:
minutes per candidate at 32 or 80 layers). So every plan is compiled and
simulated at two reduced depths, `DEPTHS` (all dimensions but the layer
count as published), and its step time and peak memory are extrapolated
linearly to the full depth. Both are linear in the layer count for the
plans here (every stage's work and memory grows by the same layer's
share; embedding, head and loss are the constant part): with `--check`
the run also simulates the search's best at full depth and records the
extrapolation's error (`depth_check`).

Every plan trains in bf16 from fp32 masters (`precision()`: the
published runs are bf16 or FP8) with AdamW, one sequence of 8192 tokens
per microbatch; all plans of one model train the same global batch
(`GLOBAL`), the published one where the sources give it.

    python bench/search_published.py                  # both models: ~25 min on the shared 2 cores
    python bench/search_published.py --quick --check --out /tmp/p.json   # tiny Llama

docs/search.md ("Published configurations") discusses the result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import piper  # noqa: E402
from piper.analysis.cost_model import device_spec  # noqa: E402
from piper.analysis.plan_sim import simulate_plan  # noqa: E402
from piper.analysis.task_costs import cost_source  # noqa: E402
from piper.diagnostics import PiperError  # noqa: E402
from piper.directives.strategy import compile_plan  # noqa: E402
from piper.strategy_search import candidates  # noqa: E402

# Llama-3 dimensions (The Llama 3 Herd of Models, Table 3; the released
# config.json files); "tiny" is the smoke test's.
ARCH = {
    "8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
    "70B": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                num_attention_heads=64, num_key_value_heads=8, vocab_size=128256),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=8,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=256),
}
SEQ = {"8B": 8192, "70B": 8192, "tiny": 32}
# the two depths every plan is simulated at, and the global batch in sequences
DEPTHS = {"8B": (4, 8), "70B": (4, 8), "tiny": (2, 4)}
GLOBAL = {"8B": 16, "70B": 64, "tiny": 8}
DEVICES = {"8B": 8, "70B": 64, "tiny": 4}
SPEC = "h100"

# Megatron's tensor-parallel plan for a transformers Llama (torchtitan's
# too): q/k/v and gate/up split by output features, o/down by input
# features. Written out because tensor_parallel(plan=None) finds no pair
# once precision() has put casts between the Linears (see docs/search.md).
TP_PLAN = {
    "model.layers.*.self_attn.q_proj": "colwise", "model.layers.*.self_attn.k_proj": "colwise",
    "model.layers.*.self_attn.v_proj": "colwise", "model.layers.*.self_attn.o_proj": "rowwise",
    "model.layers.*.mlp.gate_proj": "colwise", "model.layers.*.mlp.up_proj": "colwise",
    "model.layers.*.mlp.down_proj": "rowwise",
}

TT_H100 = ("https://github.com/pytorch/torchtitan/blob/main/benchmarks/"
           "llama3_h100_202412_torchtitan.md")
TT_A100 = "https://github.com/pytorch/torchtitan/blob/main/docs/performance.md"
TT_ASYNC_TP = ("https://github.com/pytorch/torchtitan/blob/main/benchmarks/"
               "asyncTP_llama3_h100_2025-06_torchtitan.md")
NEMO = ("https://docs.nvidia.com/nemo-framework/user-guide/24.12/nemotoolkit/performance/"
        "performance_summary.html")


def _fsdp(n: int, mb: int, again: bool) -> list:
    """FSDP (ZeRO-3 over n replicas, one layer's gather ahead, as FSDP2's
    per-block prefetch) with mb microbatches a replica."""
    out = [piper.precision()] + ([piper.recompute()] if again else [])
    out += [piper.place(pp=1)] + ([piper.split(mb)] if mb > 1 else [])
    return out + [piper.replicate(n), piper.shard(3, prefetch=1)]


def published(model: str) -> list[dict]:
    """The published configurations for `model` on DEVICES[model] devices:
    what the source says, and the closest directive list."""
    g = GLOBAL[model]
    if model == "tiny":  # the smoke test: one of each kind the real rows use
        return [
            {"name": "fsdp4", "source": "smoke", "url": "", "published": {},
             "missing": "", "strategy": _fsdp(4, g // 4, False)},
            {"name": "fsdp2 tp2", "source": "smoke", "url": "", "published": {},
             "missing": "", "strategy": _fsdp(2, g // 2, True)
             + [piper.tensor_parallel(2, plan=TP_PLAN)]},
            {"name": "tp2 pp2 1f1b", "source": "smoke", "url": "", "published": {},
             "missing": "", "strategy": [
                 piper.precision(), piper.place(pp=2), piper.split(g), piper.order("1f1b"),
                 piper.tensor_parallel(2, plan=TP_PLAN)]},
        ]
    if model == "8B":
        return [
            {"name": "torchtitan FSDP 8, local batch 2, no AC",
             "source": "torchtitan, Llama 3.1 8B on 8 H100s, Table 1 (Dec 2024)", "url": TT_H100,
             "published": {"tokens_per_s_per_gpu": 5762, "memory_gib": 82.4, "mfu": "33-39%",
                           "global_batch": 16, "seq": 8192, "dtype": "bf16",
                           "ac": "selective", "note": "eager; 6,667 with torch.compile, "
                           "8,532 with compile + Float8; H100 SXM with 96 GB HBM2e at 500 W"},
             "missing": "selective activation checkpointing (Piper recomputes a whole "
                        "stage or nothing: this row and the next bracket it); the local "
                        "batch of 2 runs as 2 microbatches of 1",
             "strategy": _fsdp(8, 2, False)},
            {"name": "torchtitan FSDP 8, local batch 2, full AC",
             "source": "as above", "url": TT_H100, "published": {"tokens_per_s_per_gpu": 5762},
             "missing": "as above",
             "strategy": _fsdp(8, 2, True)},
            {"name": "NeMo TP1 PP1 CP2 (DP 4), MBS 1",
             "source": "NeMo 24.12 performance summary, LLAMA3-8B pretraining, 8 H100s",
             "url": NEMO,
             "published": {"tokens_per_s_per_gpu": 12273, "model_tflops_per_gpu": 711,
                           "global_batch": 128, "seq": 8192, "dtype": "fp8"},
             "missing": "context parallelism (CP2 is run as 2 more data-parallel "
                        "replicas: dp 8), FP8; global batch 16 instead of 128",
             "strategy": [piper.precision(), piper.place(pp=1), piper.split(2),
                          piper.replicate(8), piper.shard(1)]},
        ]
    return [
        {"name": "torchtitan FSDP 64, local batch 1, full AC",
         "source": "torchtitan, Llama 3 70B on 64 A100 80GB (the 64-GPU 70B run it "
                   "publishes; its H100 70B run is FSDP 32 x TP 8 on 256)", "url": TT_A100,
         "published": {"tokens_per_s_per_gpu": 331, "mfu": "51.7%", "global_batch": 64,
                       "seq": 8192, "dtype": "bf16", "ac": "full", "hardware": "A100 80GB"},
         "missing": "", "strategy": _fsdp(64, 1, True)},
        {"name": "torchtitan FSDP 8 x TP 8, full AC",
         "source": "torchtitan async-TP benchmark: Llama 3 70B on 256 H100s, FSDP 32 x "
                   "TP 8, local batch 16, full AC (here on 64: FSDP 8 x TP 8)",
         "url": TT_ASYNC_TP,
         "published": {"tokens_per_s_per_gpu": 597.3, "global_batch": 512, "seq": 8192,
                       "dtype": "bf16", "note": "652.4 with async TP; 829 with compile "
                       "+ Float8 (Dec 2024 table, FSDP 32 x TP 8, 256 GPUs)"},
         "missing": "sequence parallelism and loss parallelism of the embedding and head "
                    "(TP here splits the layers' Linears only); the local batch of 8 runs "
                    "as 8 microbatches of 1, each gathering the FSDP shards again",
         "strategy": _fsdp(8, g // 8, True) + [piper.tensor_parallel(8, plan=TP_PLAN)]},
        {"name": "NeMo TP4 PP4 CP2 VP5 (DP 2), MBS 1",
         "source": "NeMo 24.12 performance summary, LLAMA3-70B pretraining, 64 H100s",
         "url": NEMO,
         "published": {"tokens_per_s_per_gpu": 1524, "model_tflops_per_gpu": 734,
                       "global_batch": 128, "seq": 8192, "dtype": "fp8"},
         "missing": "context parallelism (CP2 run as 2 more replicas: dp 4), virtual "
                    "pipeline stages (VP5: plain 1F1B here), FP8; global batch 64 "
                    "instead of 128",
         "strategy": [piper.precision(), piper.place(pp=4), piper.split(g // 4),
                      piper.replicate(4), piper.shard(1), piper.order("1f1b"),
                      piper.tensor_parallel(4, plan=TP_PLAN)]},
    ]


# The search's space per model (piper.search keys; every candidate gets
# precision() pinned, as every published run trains in bf16 or FP8).
SPACE = {
    "8B": {"pp": [1, 2, 4], "zero": [0, 1, 3], "schedule": ["1f1b"],
           "recompute": [False, True]},
    "70B": {"pp": [1, 2, 4], "zero": [1, 3], "schedule": ["1f1b"], "recompute": [True]},
    "tiny": {"pp": [1, 2], "zero": [0, 3], "schedule": ["1f1b"], "recompute": [False, True]},
}


def llama_config(model: str, layers: int | None = None):
    from transformers import LlamaConfig

    dims = dict(ARCH[model])
    if layers is not None:
        dims["num_hidden_layers"] = layers
    return LlamaConfig(**dims, max_position_embeddings=SEQ[model], rope_theta=500000.0,
                       use_cache=False, attn_implementation="sdpa", tie_word_embeddings=False)


def capture_shapes(model: str, layers: int | None = None):
    """The captured training step of `model` (one sequence a microbatch),
    built and traced on fake tensors: shapes and dtypes only, no weights."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import LlamaForCausalLM

    cfg = llama_config(model, layers)
    with FakeTensorMode():
        net = LlamaForCausalLM(cfg)
        ids = torch.randint(0, cfg.vocab_size, (1, SEQ[model]))
    piper.annotate("PP", net.model.layers)  # each layer a region
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4)
    return piper.capture(net, {"input_ids": ids, "labels": ids}, optimizer=opt)


def simulate(module, strategy: list, spec=SPEC) -> dict:
    """Compile `strategy` on a copy of the captured step and simulate it."""
    m = module.clone()
    try:
        compile_plan(m, strategy, "search_published")
        r = simulate_plan(m, cost_source("analytic", device_spec(spec)))
    except PiperError as e:
        return {"error": str(e).splitlines()[0]}
    return {"step_s": r.step_time, "peak_bytes": max(r.peak_mem.values()),
            "devices": len(r.devices)}


def extrapolate(at: dict[int, dict], full: int) -> dict:
    """Step time and peak memory at `full` layers from the two depths of `at`
    (a straight line through both)."""
    (la, a), (lb, b) = sorted(at.items())
    if "error" in a or "error" in b:
        return {"error": a.get("error") or b.get("error")}
    out = {"devices": a["devices"]}
    for k in ("step_s", "peak_bytes"):
        out[k] = a[k] + (full - la) * (b[k] - a[k]) / (lb - la)
    out["peak_bytes"] = int(out["peak_bytes"])
    return out


def prediction(sim: dict, model: str) -> dict:
    """What the table shows: step, tokens a second a device, peak GiB."""
    if "error" in sim:
        return sim
    tokens = GLOBAL[model] * SEQ[model]
    return {"step_s": float(f"{sim['step_s']:.6g}"), "devices": sim["devices"],
            "tokens_per_s_per_device": round(tokens / sim["step_s"] / sim["devices"], 1),
            "peak_gib": round(sim["peak_bytes"] / 2**30, 2), "peak_bytes": sim["peak_bytes"],
            "fits_80gb": sim["peak_bytes"] <= device_spec(SPEC).mem_capacity}


def run_model(model: str, check: bool = False, log=print) -> dict:
    full = ARCH[model]["num_hidden_layers"]
    depths = DEPTHS[model]
    budget = int(device_spec(SPEC).mem_capacity)
    caps = {}
    for d in depths:
        t = time.perf_counter()
        caps[d] = capture_shapes(model, d).module
        log(f"{model}: captured {d} layers in {time.perf_counter() - t:.1f} s")
    rows = []
    for p in published(model):
        t = time.perf_counter()
        at = {d: simulate(caps[d], p["strategy"]) for d in depths}
        sim = extrapolate(at, full)
        row = {k: v for k, v in p.items() if k != "strategy"}
        row["strategy"] = [d.to_dict() for d in p["strategy"]]
        row["at_depth"] = {str(d): at[d] for d in depths}
        row["predicted"] = prediction(sim, model)
        rows.append(row)
        log(f"{model}: {p['name']}: {row['predicted']} ({time.perf_counter() - t:.0f} s)")
    # the search: its candidates (piper.strategy_search.candidates, the
    # directive lists piper.search ranks), each compiled and simulated at
    # both depths as search_captured does at one, extrapolated to the full
    # depth; then the 80 GB budget on the extrapolated peak
    cands = []
    for c in candidates(DEVICES[model], GLOBAL[model], min(depths), SPACE[model],
                        pinned=[piper.precision()]):
        t = time.perf_counter()
        at = {d: simulate(caps[d], c.strategy) for d in depths}
        pred = prediction(extrapolate(at, full), model)
        cands.append({"name": c.name, "strategy": [x.to_dict() for x in c.strategy],
                      "at_depth": {str(d): at[d] for d in depths}, "predicted": pred})
        log(f"{model}: search: {c.name}: {pred} ({time.perf_counter() - t:.0f} s)")
    fits = [c for c in cands if "error" not in c["predicted"] and c["predicted"]["fits_80gb"]]
    fits.sort(key=lambda c: (c["predicted"]["step_s"], c["predicted"]["peak_gib"]))
    best = fits[0] if fits else None
    log(f"{model}: search best: {best['name'] if best else None} "
        f"{best['predicted'] if best else ''}")
    out = {"model": model, "layers": full, "seq": SEQ[model], "devices": DEVICES[model],
           "global_batch_sequences": GLOBAL[model], "depths": list(depths),
           "memory_budget_bytes": budget, "space": SPACE[model], "published": rows,
           "search_best": best, "search_candidates": cands}
    if check:
        out["depth_check"] = depth_check(model, best or rows[0], log)
    return out


def depth_check(model: str, row: dict, log=print) -> dict:
    """A plan (the search's best) at full depth against its extrapolation."""
    from piper.directives.strategy import from_dict

    t = time.perf_counter()
    module = capture_shapes(model).module
    strategy = [from_dict(d) for d in row["strategy"]]
    sim = simulate(module, strategy)
    exact = prediction(sim, model)
    ext = row["predicted"]
    out = {"plan": row["name"], "full_depth": exact, "extrapolated": ext,
           "seconds": round(time.perf_counter() - t, 1)}
    if "error" not in exact and "error" not in ext:
        out["step_error"] = round(ext["step_s"] / exact["step_s"] - 1, 4)
        out["peak_error"] = round(ext["peak_bytes"] / exact["peak_bytes"] - 1, 4)
    log(f"{model}: depth check: {out}")
    return out


def table(doc: dict) -> str:
    """The markdown table docs/search.md shows."""
    lines = [("| model, devices | configuration | published tokens/s/GPU | predicted step | "
              "predicted tokens/s/device | predicted peak | fits 80 GB |"),
             "|---|---|---|---|---|---|---|"]
    for res in doc["results"]:
        where = f"{res['model']}, {res['devices']}"
        rows = [(r["name"], r["published"].get("tokens_per_s_per_gpu", ""), r["predicted"])
                for r in res["published"]]
        if res["search_best"]:
            rows.append((f"**search: {res['search_best']['name']}**", "",
                         res["search_best"]["predicted"]))
        else:  # nothing fits: the candidate closest to fitting
            ok = [c for c in res["search_candidates"] if "error" not in c["predicted"]]
            if ok:
                c = min(ok, key=lambda c: c["predicted"]["peak_bytes"])
                rows.append((f"**search: none fits; smallest peak: {c['name']}**", "",
                             c["predicted"]))
        for name, pub, p in rows:
            if "error" in p:
                lines.append(f"| {where} | {name} | {pub} | {p['error'][:80]} | | | |")
                continue
            lines.append(f"| {where} | {name} | {pub} | {p['step_s']:.3f} s | "
                         f"{p['tokens_per_s_per_device']:,.0f} | {p['peak_gib']:.1f} GiB | "
                         f"{'yes' if p['fits_80gb'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny Llama (smoke test)")
    ap.add_argument("--models", default="8B,70B")
    ap.add_argument("--check", action="store_true",
                    help="also simulate one plan per model at full depth")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "search_published.json"))
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="write the results of earlier runs (one a model) to --out as one")
    args = ap.parse_args(argv)
    if args.merge:
        docs = [json.loads(Path(f).read_text()) for f in args.merge]
        doc = dict(docs[0], results=[r for d in docs for r in d["results"]],
                   seconds=sum(d["seconds"] for d in docs))
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
        print(table(doc))
        return 0
    models = ["tiny"] if args.quick else args.models.split(",")
    start = time.perf_counter()
    doc = {"benchmark": "search_published", "device": SPEC, "costs": "analytic",
           "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
           "results": [run_model(m, args.check) for m in models]}
    doc["seconds"] = round(time.perf_counter() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(table(doc))
    print(f"wrote {args.out} ({doc['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
