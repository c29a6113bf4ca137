"""How long Piper's tools and test suite take, with the machine's load.

    python bench/tool_times.py                 # piper-opt start-up and the lit suite
    python bench/tool_times.py --suite         # also the README's whole test command

Measures, in this order, on this machine:

- `piper-opt` parsing, verifying and printing a small IR file
  (test/sched/ops.mlir), the median of --repeat runs, against `python -c
  pass` (the interpreter's own start-up, the floor) in the same run;
- the lit suite (`lit -q test`), wall time;
- with --suite, `python -m pytest -q test/unit` as well (the README's test
  command is pytest then lit).

Goals (issue 16): piper-opt under 1.5 s on a small file, lit under 2 minutes,
the whole command under 10 minutes on a quiet 2-core machine. The machine is
shared, so the load average before and after each measurement goes into the
JSON beside the figure. Output: bench/results/tool_times.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(cmd: list[str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - t0, p.returncode, (p.stdout + p.stderr)[-400:]


def median_of(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        s, rc, out = timed(cmd)
        if rc:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out}")
        times.append(s)
    return statistics.median(times)


def measure(name: str, cmd: list[str], repeat: int = 1) -> dict:
    before = load()
    if repeat > 1:
        seconds = median_of(cmd, repeat)
        rc = 0
    else:
        seconds, rc, out = timed(cmd)
        if rc:
            print(out, file=sys.stderr)
    return {"what": name, "command": " ".join(cmd), "seconds": round(seconds, 2), "rc": rc,
            "load_before": before, "load_after": load()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--suite", action="store_true", help="also time the pytest suite")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "tool_times.json"))
    args = ap.parse_args(argv)
    py = sys.executable
    rows = [
        measure("python start-up (floor)", [py, "-c", "pass"], args.repeat),
        measure("piper-opt small file", [py, "-m", "piper.tools.piper_opt",
                                         "test/sched/ops.mlir", "-o", os.devnull], args.repeat),
        measure("lit suite", ["lit", "-q", "test"]),
    ]
    if args.suite:
        rows.append(measure("pytest suite", [py, "-m", "pytest", "-q", "test/unit"]))
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "python":
              platform.python_version(), "goals_s": {"piper-opt small file": 1.5,
                                                     "lit suite": 120, "whole command": 600},
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        print(f"{r['what']:28s} {r['seconds']:8.2f} s  rc={r['rc']}  load {r['load_before']}")
    return 1 if any(r["rc"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
