"""Search speed: how long `piper.search` takes on a 32-layer GPT-shaped model.

    python bench/search_speed.py --label after        # 8 and 64 devices, a sample of each
    python bench/search_speed.py --compare --label before   # also with workers=1
    python bench/search_speed.py --devices 8 --sample 0 --workers 2   # the whole 8-device space
    python bench/search_speed.py --tiny --out /tmp/s.json             # smoke test (seconds)

The model is the GPT example (examples/gpt.py) with 32 blocks, each its own
"PP" region, at small dims (dim 16, 2 heads, 8 tokens, vocab 32, AdamW),
captured once. For each device count the default space of
`piper.search` (pp x zero x schedule, batches_per_step = devices,
`device="h100"`, no memory budget) is enumerated and priced; with
`--sample K` only K candidates spread evenly over the space are compiled
and simulated (the whole space of 64 devices takes far longer than a run
of this bench should), with `--workers` (and with workers=1 too under
`--compare`), and the space's time is extrapolated from their mean
(recorded as such, beside the measured seconds). Cases are labelled
(`--label`); a run replaces the cases of its own label in `--out` and
keeps the others, so one file holds the times before and after a change. `--sample 0` runs `search_captured` on the whole space.

Per phase: capture, enumerate (the closed-form checks), bounds, and the
compile and simulate seconds summed over the candidates. Output:
bench/results/search_speed.json, with the machine and its load average
before and after (the 2-core machine is shared: the load inflates every
time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import piper  # noqa: E402
from bench.harness import machine  # noqa: E402
from examples.gpt import GPTConfig, gpt_data, make_gpt  # noqa: E402
from piper.analysis.cost_model import device_spec  # noqa: E402
from piper.analysis.task_costs import cost_source  # noqa: E402
from piper.strategy_search import (  # noqa: E402
    ModelFacts,
    _evaluate_all,
    candidates,
    search_captured,
)

RESULTS = ROOT / "bench" / "results"


def _load() -> float:
    return os.getloadavg()[0]


def sample_of(cands: list, k: int) -> list:
    """k candidates spread evenly over the space (its order: pp, then zero,
    schedule), so small and large plans are both in it."""
    if k <= 0 or k >= len(cands):
        return list(cands)
    step = len(cands) / k
    return [cands[int(i * step)] for i in range(k)]


def time_sample(module, cands: list, workers: int) -> dict:
    spec = device_spec("h100")
    fresh = [type(c)(c.pp, c.dp, c.microbatches, c.zero, c.schedule, c.recompute,
                     list(c.strategy), tp=c.tp, ep=c.ep) for c in cands]
    tick = time.perf_counter()
    compiling, simulating = _evaluate_all(module, fresh, cost_source("analytic", spec),
                                          workers)
    wall = time.perf_counter() - tick
    return {"workers": workers, "candidates": len(fresh), "seconds": wall,
            "seconds_per_candidate": wall / len(fresh),
            "compile_seconds_summed": compiling, "simulate_seconds_summed": simulating,
            "failed": {c.name: c.reason for c in fresh if c.status == "failed"},
            "names": [c.name for c in fresh]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--sample", type=int, default=6,
                    help="candidates compiled per device count (0: the whole space)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--compare", action="store_true",
                    help="time the sample with workers=1 too")
    ap.add_argument("--label", default="current",
                    help="names this run's cases; cases of other labels in --out are kept")
    ap.add_argument("--tiny", action="store_true", help="4 layers, 4 devices: a smoke test")
    ap.add_argument("--out", default=str(RESULTS / "search_speed.json"))
    args = ap.parse_args(argv)
    if args.tiny:
        args.layers, args.devices, args.sample = 4, [4], 0
    cfg = GPTConfig(layers=args.layers, dim=16, heads=2, seq=8, vocab=32, batch=2)
    doc = {"model": {"example": "gpt", "layers": cfg.layers, "dim": cfg.dim,
                     "heads": cfg.heads, "seq": cfg.seq, "vocab": cfg.vocab,
                     "batch": cfg.batch, "optimizer": "AdamW", "pp_regions": cfg.layers},
           "machine": machine(1, 1), "load_before": _load(), "device": "h100",
           "space": "default (pp x zero x schedule; tp and ep 1)", "cases": []}
    out = Path(args.out)
    if out.exists():  # earlier runs under other labels (e.g. before a change) stay
        doc["cases"] = [c for c in json.loads(out.read_text()).get("cases", [])
                        if c.get("label") != args.label]
    tick = time.perf_counter()
    model = make_gpt(cfg)
    step = piper.capture(model, gpt_data(cfg), optimizer=torch.optim.AdamW(model.parameters()))
    doc["capture_seconds"] = time.perf_counter() - tick
    print(f"capture: {doc['capture_seconds']:.1f} s", flush=True)
    for devices in args.devices:
        tick = time.perf_counter()
        facts = ModelFacts.of(step.module)
        cands = candidates(devices, devices, facts.regions, None, (), facts)
        case = {"label": args.label, "devices": devices, "candidates": len(cands), "pruned": 0,
                "enumerate_seconds": time.perf_counter() - tick}
        if args.sample == 0:
            result = search_captured(step.module, devices, devices, workers=args.workers)
            case.update(measured="whole space", seconds=result.seconds,
                        phases=result.phases, workers=result.workers,
                        compiled=sum(c.peak_bytes is not None for c in result.candidates),
                        failed=sum(c.status == "failed" for c in result.candidates),
                        pruned=sum(c.status == "pruned" for c in result.candidates),
                        best=result.best.name if result.ranked else None)
        else:
            picked = sample_of(cands, args.sample)
            runs = [time_sample(step.module, picked, 1)] if args.compare else []
            if args.workers > 1 or not runs:
                runs.append(time_sample(step.module, picked, args.workers))
            case.update(measured=f"a sample of {len(picked)} candidates", runs=runs,
                        extrapolated_seconds={
                            f"workers={r['workers']}": r["seconds_per_candidate"] * len(cands)
                            for r in runs})
        print(json.dumps(case), flush=True)
        doc["cases"].append(case)
        doc["load_after"] = _load()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")  # after each case
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
