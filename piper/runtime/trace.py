"""What a rank's runtime did, when: a trace of its instructions.

`plan.run(..., trace=DIR)` (worker `--trace DIR`) has every rank record,
for each step, when each compute call, communication start and wait began
and ended on its host thread, and write `DIR/rank{r}.json` in the Chrome
trace format (chrome://tracing, Perfetto): on thread "compute" the calls,
on thread "comm" each communication from the end of its start (when it
is issued) to the end of its wait (the latest it can have finished), and
under "piper" a summary.

The summary answers whether the runtime overlapped communication with
compute, as the plan says it may: for each kind of communication, the
time from starts to the ends of their waits (in flight), the part of it
the host spent blocked in the wait, and `hidden` = 1 - blocked / in
flight: the fraction of the communication's life during which the rank
computed (or issued other work) instead of waiting. A collective waited
for right after its start has `hidden` near 0; one started before another
task's piece and waited for after it (overlap-pairs) has it near 1 when the
piece takes longer than the transfer.

Recording costs two clock reads per instruction; without `--trace` the
runtime reads no clock per instruction.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

from piper.runtime.instructions import Call, Collective, Recv, Send, Wait


def _names(code, ops) -> tuple[dict[int, str], dict[int, int]]:
    """A name per traced instruction (from its sched op: a call's task and
    function, a collective's kind) and, per wait, the pc of its start."""
    names: dict[int, str] = {}
    start_of_handle: dict[int, int] = {}
    waits: dict[int, int] = {}
    for pc, (ins, op) in enumerate(zip(code, ops, strict=True)):
        if isinstance(ins, Call):
            names[pc] = f"{op.task.data} {op.callee.root_reference.data}"
        elif isinstance(ins, Collective):
            names[pc] = op.kind.data
            start_of_handle[ins.handle] = pc
        elif isinstance(ins, Send | Recv):
            names[pc] = "send" if isinstance(ins, Send) else "recv"
            start_of_handle[ins.handle] = pc
        elif isinstance(ins, Wait):
            names[pc] = "wait"
            if ins.handle in start_of_handle:
                waits[pc] = start_of_handle[ins.handle]
    return names, waits


def trace_document(rank: int, code, ops, steps: list[list[tuple[int, float, float]]]) -> dict:
    """The Chrome trace of one rank: `code` its decoded instructions, `ops`
    their sched ops, `steps` per step (pc, start, end) of its traced
    instructions, in seconds of one clock."""
    names, waits = _names(code, ops)
    t0 = steps[0][0][1] if steps and steps[0] else 0.0
    events: list[dict] = [{"ph": "M", "name": "process_name", "pid": rank,
                           "args": {"name": f"rank {rank}"}}]
    flight: dict[str, float] = defaultdict(float)
    blocked: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)

    def us(t: float) -> float:
        return round((t - t0) * 1e6, 3)

    for step, recs in enumerate(steps):
        started: dict[int, float] = {}
        for pc, a, b in recs:
            ins = code[pc]
            if isinstance(ins, Call):
                events.append({"ph": "X", "name": names[pc], "pid": rank, "tid": "compute",
                               "ts": us(a), "dur": us(b) - us(a), "args": {"step": step}})
            elif isinstance(ins, Collective | Send | Recv):
                started[pc] = b  # issued: in flight from here
            elif isinstance(ins, Wait) and pc in waits and waits[pc] in started:
                s = waits[pc]
                kind = names[s]
                begin = started.pop(s)
                flight[kind] += b - begin
                blocked[kind] += b - a
                count[kind] += 1
                hidden = 1.0 - (b - a) / (b - begin) if b > begin else 0.0
                events.append({"ph": "X", "name": kind, "pid": rank, "tid": "comm",
                               "ts": us(begin), "dur": us(b) - us(begin),
                               "args": {"step": step, "blocked_us": us(b) - us(a),
                                        "hidden": round(hidden, 4)}})
    summary = {kind: {"count": count[kind], "in_flight_s": flight[kind],
                      "blocked_s": blocked[kind],
                      "hidden": 1.0 - blocked[kind] / flight[kind] if flight[kind] > 0 else 0.0}
               for kind in sorted(flight)}
    return {"traceEvents": events, "piper": {"rank": rank, "steps": len(steps),
                                             "communication": summary}}


def write_trace(directory: str, rank: int, code, ops, steps) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"rank{rank}.json")
    with open(path, "w") as f:
        json.dump(trace_document(rank, code, ops, steps), f)
    return path


def read_traces(directory: str) -> dict[int, dict]:
    """Every rank's trace in `directory`, by rank."""
    out = {}
    for name in os.listdir(directory):
        if name.startswith("rank") and name.endswith(".json"):
            with open(os.path.join(directory, name)) as f:
                doc = json.load(f)
            out[doc["piper"]["rank"]] = doc
    return out


def hidden_fraction(traces: dict[int, dict], kind: str) -> float | None:
    """Over every rank: 1 - time blocked in the waits of `kind` / its time in flight."""
    flight = blocked = 0.0
    for doc in traces.values():
        c = doc["piper"]["communication"].get(kind)
        if c:
            flight += c["in_flight_s"]
            blocked += c["blocked_s"]
    return 1.0 - blocked / flight if flight > 0 else None
