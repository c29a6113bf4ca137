"""A run's progress while it trains: per-step records, a live line, metrics.jsonl.

Every rank appends one JSON line per step to `progress/rank{r}.jsonl` in
the plan directory (`RankLog`: its losses, step time, peak live bytes of
its program and its resident memory). The launcher tails those files
(`StepCollector`): once every rank reported a step, the step is complete,
one `StepRecord` with the loss (the first rank that holds losses, the mean
of its microbatches' losses, as the result's losses are), the slowest
rank's step time and the largest peaks. `ProgressLine` prints it (a line
rewritten in place on a terminal; one line every `every` steps in a log);
`MetricsLog` appends it to `metrics.jsonl` in the run directory, one record
per step per metric: `{"step": 3, "metric": "loss", "value": 2.31, "time": ...}`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass

from piper.diagnostics import PiperError

PROGRESS = "progress"


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class RankLog:
    """A rank's side: one line per step, flushed, so the launcher sees it."""

    def __init__(self, plan_dir: str, rank: int):
        os.makedirs(os.path.join(plan_dir, PROGRESS), exist_ok=True)
        self.f = open(os.path.join(plan_dir, PROGRESS, f"rank{rank}.jsonl"), "a")

    def step(self, step: int, stats) -> None:
        rec = {"step": step, "losses": stats.losses, "seconds": stats.seconds,
               "peak_bytes": stats.peak_bytes, "rss": resident_bytes()}
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def clear(plan_dir: str) -> None:
    d = os.path.join(plan_dir, PROGRESS)
    if os.path.isdir(d):
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))


@dataclass
class StepRecord:
    step: int
    loss: float | None
    seconds: float  # the slowest rank's
    peak_bytes: int  # the largest rank's live bytes
    rss: int  # the largest rank's resident memory


class StepCollector:
    """The launcher's side: reads the ranks' new lines, returns complete steps."""

    def __init__(self, plan_dir: str, ranks: list[int]):
        self.dir = os.path.join(plan_dir, PROGRESS)
        self.ranks = ranks
        self.offsets = dict.fromkeys(ranks, 0)
        self.partial: dict[int, dict[int, dict]] = {}  # step -> rank -> record
        self.last_seen = time.monotonic()

    def poll(self) -> list[StepRecord]:
        for r in self.ranks:
            path = os.path.join(self.dir, f"rank{r}.jsonl")
            try:
                with open(path) as f:
                    f.seek(self.offsets[r])
                    chunk = f.read()
            except FileNotFoundError:
                continue
            end = chunk.rfind("\n") + 1  # a line still being written waits
            self.offsets[r] += len(chunk[:end].encode())
            for line in chunk[:end].splitlines():
                rec = json.loads(line)
                self.partial.setdefault(rec["step"], {})[r] = rec
                self.last_seen = time.monotonic()
        done = []
        for step in sorted(self.partial):
            recs = self.partial[step]
            if len(recs) < len(self.ranks):
                break
            del self.partial[step]
            losses = next((recs[r]["losses"] for r in sorted(recs) if recs[r]["losses"]), [])
            done.append(StepRecord(
                step, sum(losses) / len(losses) if losses else None,
                max(x["seconds"] for x in recs.values()),
                max(x["peak_bytes"] for x in recs.values()),
                max(x["rss"] for x in recs.values())))
        return done


class MetricsLog:
    """metrics.jsonl in the run directory: one record per step per metric."""

    def __init__(self, run_dir: str, append: bool = False):
        os.makedirs(run_dir, exist_ok=True)
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.f = open(self.path, "a" if append else "w")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        now = time.time()
        for k, v in metrics.items():
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                v = None if v is None else str(v)
            self.f.write(json.dumps({"step": step, "metric": k, "value": v, "time": now}) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def read_metrics(path: str) -> dict[str, list[tuple[int, float]]]:
    """metric -> [(step, value)] from a metrics.jsonl."""
    out: dict[str, list[tuple[int, float]]] = {}
    try:
        with open(path) as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    step, name, value = int(rec["step"]), str(rec["metric"]), rec["value"]
                except (ValueError, KeyError, TypeError):
                    raise PiperError(f"{path}:{i}: not a metrics record "
                                     f"(step, metric, value)") from None
                if isinstance(value, int | float):
                    out.setdefault(name, []).append((step, float(value)))
    except OSError as e:
        raise PiperError(f"{path}: {e.strerror}") from None
    return out


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _mb(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def step_metrics(rec: StepRecord, tokens: int, unit: str) -> dict[str, float | None]:
    """The metrics.jsonl records of one step."""
    return {"loss": rec.loss, "step_seconds": rec.seconds,
            f"{unit}_per_s": tokens / rec.seconds if rec.seconds > 0 else 0.0,
            "peak_bytes": rec.peak_bytes, "rank_rss_bytes": rec.rss,
            "launcher_rss_bytes": resident_bytes()}


class ProgressLine:
    """step 12/300 | loss 2.3451 | 1.2e+04 tok/s | 85.1 ms/step | peak 3.2 MiB | ETA 0:00:25"""

    def __init__(self, total: int | None, tokens: int, stream=None, every: int = 10,
                 unit: str = "tok"):
        self.total, self.tokens, self.every, self.unit = total, tokens, every, unit
        self.stream = stream if stream is not None else sys.stdout
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.first = 0.0
        self.seen = 0
        self.last = ""
        self.open_line = False  # a live line not yet ended

    def update(self, rec: StepRecord) -> None:
        """Print the step's line (when due)."""
        self.seen += 1
        now = time.monotonic()
        if self.seen == 1:
            self.first = now  # start-up is not a step: the ETA counts from here
        per_step = (now - self.first) / (self.seen - 1) if self.seen > 1 else rec.seconds
        rate = self.tokens / rec.seconds if rec.seconds > 0 else 0.0
        total = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total:
            left = self.total - rec.step - 1
            eta = f" | ETA {_duration(per_step * left)}"
        loss = f"{rec.loss:.4f}" if rec.loss is not None else "-"
        self.last = (f"step {rec.step + 1}{total} | loss {loss} | {rate:.3g} {self.unit}/s | "
                     f"{rec.seconds * 1e3:.1f} ms/step | peak {_mb(rec.peak_bytes)}{eta}")
        last_step = self.total is not None and rec.step + 1 >= self.total
        if self.live:
            self.stream.write("\r\x1b[2K" + self.last + ("\n" if last_step else ""))
            self.stream.flush()
            self.open_line = not last_step
        elif self.seen == 1 or (rec.step + 1) % self.every == 0 or last_step:
            print(self.last, file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A line between progress lines (a validation loss, a checkpoint)."""
        if self.open_line:
            self.stream.write("\r\x1b[2K")
            self.open_line = False
        print(text, file=self.stream, flush=True)

    def finish(self) -> None:
        if self.open_line:
            self.stream.write("\n")
            self.open_line = False
