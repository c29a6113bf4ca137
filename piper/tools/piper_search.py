"""piper-search: rank strategies for a captured training step.

    piper-capture gpt --layers 4 -o step.mlir
    piper-search step.mlir --devices 4 --batches-per-step 8 --memory 1MiB \
        --device h100 --json ranked.json --plot best.png

Prints the ranked table (piper.search: each candidate's predicted step time,
bubble and peak memory per device, or why it was pruned) and the best
directive list as JSON, which `piper.compile(..., strategy=TEXT)` and
`piper-run` take. `--space '{"pp": [1, 2], "zero": [1, 3], "tp": [1, 2]}'`
narrows or widens the space (keys pp, zero, schedule, recompute, tp, ep);
`--pin '[{"directive": "fuse"}]'` adds directives to every candidate;
`--workers N` compiles candidates in N processes (default: the CPU count);
`--json FILE` writes everything; `--plot FILE` the best candidate's
simulated timeline.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from piper.tools.cli import Parser, UsageError, run_main

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "tib": 2**40}


def _bytes(text: str) -> int:
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)", text.strip(), re.ASCII)
    if m is None or m.group(2).lower() not in _UNITS:
        raise UsageError(f"--memory: expected a size such as 16GiB or 2000000, got {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value < 1 or value > 2**62:
        raise UsageError(f"--memory: {text!r} is out of range")
    return int(value)


def _json(flag: str, text: str, kind: type):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{flag}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(value, kind):
        raise UsageError(f"{flag}: expected a JSON {kind.__name__}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="piper-search", description="Rank strategies for a captured training step.")
    p.add_argument("step", help="captured step (graph IR, from piper-capture)")
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--batches-per-step", type=int, help="example batches a step (default: devices)")
    p.add_argument("--memory", type=_bytes, help="memory per device, e.g. 80GiB")
    p.add_argument("--device", default="h100", help="cost model preset: h100, h200, gh200 or cpu")
    p.add_argument("--costs", default="analytic", choices=["analytic", "unit"])
    p.add_argument("--space", help='JSON, e.g. {"pp": [1, 2], "zero": [1, 3], "tp": [1, 2]}')
    p.add_argument("--pin", help="JSON list of directives added to every candidate")
    p.add_argument("--workers", type=int,
                   help="processes compiling candidates (default: the CPU count)")
    p.add_argument("--json", dest="json_out", help="write the ranked candidates here")
    p.add_argument("--plot", help="write the best candidate's timeline here (.png/.svg/.pdf)")
    return p


def run(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    space = _json("--space", args.space, dict) if args.space else None
    from piper.directives.strategy import load  # lazy: start-up time
    from piper.ir import parse_module  # lazy: start-up time
    from piper.strategy_search import search_captured  # lazy: start-up time

    pinned = load(args.pin)[0] if args.pin else []
    try:
        with open(args.step, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise UsageError(f"{args.step} is not UTF-8 text") from None
    module = parse_module(text, args.step)
    result = search_captured(module, args.devices, args.batches_per_step, args.memory,
                             args.device, space, pinned, args.costs, workers=args.workers)
    print(result.table())
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result.to_json(), f, indent=1)
    if args.plot:
        from piper.analysis.plan_sim import simulate_plan  # lazy: start-up time
        from piper.analysis.task_costs import cost_source  # lazy: start-up time
        from piper.analysis.timeline import plot_timeline  # lazy: start-up time
        from piper.directives.strategy import compile_plan  # lazy: start-up time

        best = module.clone()
        compile_plan(best, result.best.strategy, "search")
        plot_timeline(simulate_plan(best, cost_source(args.costs, args.device)), args.plot)


def main(argv: list[str] | None = None) -> int:
    return run_main("piper-search", run, argv)


if __name__ == "__main__":
    sys.exit(main())
