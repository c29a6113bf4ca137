"""Views of a simulation: Chrome/Perfetto trace, timeline and memory plots,
and a text summary.

- `to_chrome_trace(result)`: the Trace Event Format dict (`json.dump` it and
  open in chrome://tracing or ui.perfetto.dev): one process per device, one
  thread per stream, one complete event ("X") per instruction, a counter
  ("C") track for each device's memory (per category when it has them).
  Instructions of a stream that overlap in time (unordered point-to-point
  messages) go to extra threads named `comm #2`, ... so no two events of a
  thread overlap.
- `plot_timeline(result, path)`: one row per device (compute on top, other
  streams as thin lanes under it), boxes coloured by kind and labelled with
  the microbatch; overlapped pairs framed together. PNG or SVG by suffix.
- `plot_memory(result, path)`: memory over time, one line per device; with
  `by_kind=True`, one panel per device stacking the categories
  (parameters, gradients, optimizer state, activations, ...).
- `summary_table(result)`: step time, and per device its end, busy time,
  idle time, bubble, peak memory and what the peak is made of.

Instructions with `meta["hidden"]` (zero-time bookkeeping such as frees and
waits of a simulated plan) appear in none of the views but the summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from piper.analysis.simulator import SimResult

COLORS = {
    "F": "#4C72B0",
    "B": "#55A868",
    "I": "#8FD18F",
    "W": "#DD8452",
    "OPT": "#8172B3",
    "sum": "#C44E52",
    "local": "#CCB974",
    "comm": "#9E9E9E",
}

MEM_COLORS = {
    "params": "#4C72B0",
    "grads": "#C44E52",
    "optimizer": "#8172B3",
    "activations": "#55A868",
    "inputs": "#CCB974",
    "other": "#9E9E9E",
    "base": "#DDDDDD",
}


def visible(result: "SimResult") -> list:
    return [i for i in result.instrs if not i.meta.get("hidden")]


def stream_lanes(result: "SimResult") -> dict[str, tuple[int, str, int]]:
    """Instruction id -> (device, stream, lane): lane 0 unless the
    instruction overlaps an earlier one of its stream (unordered messages)."""
    by_stream: dict[tuple[int, str], list] = {}
    for ins in visible(result):
        by_stream.setdefault((ins.device, ins.stream), []).append(ins)
    out = {}
    for (d, s), items in by_stream.items():
        ends: list[float] = []
        for ins in sorted(items, key=lambda i: (result.start[i.id], result.end[i.id])):
            t0, t1 = result.start[ins.id], result.end[ins.id]
            lane = next((k for k, e in enumerate(ends) if e <= t0), None)
            if lane is None:
                lane = len(ends)
                ends.append(t1)
            else:
                ends[lane] = t1
            out[ins.id] = (d, s, lane)
    return out


def lane_name(stream: str, lane: int) -> str:
    return stream if lane == 0 else f"{stream} #{lane + 1}"


LOCAL_KINDS = ("fill", "load", "input", "shard", "store")


def _color_kind(kind: str) -> str:
    if kind in COLORS:
        return kind
    return "local" if kind in LOCAL_KINDS else "comm"


def color_of(kind: str, chunk: int = 0) -> str:
    """The kind's colour; odd model chunks of a rank (v > 1) a darker shade."""
    c = COLORS[_color_kind(kind)]
    if chunk % 2 == 0:
        return c
    rgb = [int(c[i:i + 2], 16) * 0.62 for i in (1, 3, 5)]
    return "#" + "".join(f"{int(x):02X}" for x in rgb)


def to_chrome_trace(result: "SimResult", scale: float = 1e6) -> dict:
    """Trace events; `scale` is trace microseconds per simulator time unit
    (1e6 for results in seconds, the cost model's unit)."""
    events: list[dict] = []
    lanes = stream_lanes(result)
    tids: dict[tuple[int, str, int], int] = {}
    for d in result.devices:
        events.append({"ph": "M", "name": "process_name", "pid": d, "tid": 0,
                       "args": {"name": f"device {d}"}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": d, "tid": 0,
                       "args": {"sort_index": d}})
        used = sorted({(s, k) for dd, s, k in lanes.values() if dd == d},
                      key=lambda x: (result.streams[d].index(x[0]), x[1]))
        for s in result.streams[d]:
            if not any(u[0] == s for u in used):
                used.append((s, 0))  # a stream with hidden work only still gets its track
        for i, (s, k) in enumerate(used):
            tids[(d, s, k)] = i
            events.append({"ph": "M", "name": "thread_name", "pid": d, "tid": i,
                           "args": {"name": lane_name(s, k)}})
            events.append({"ph": "M", "name": "thread_sort_index", "pid": d, "tid": i,
                           "args": {"sort_index": i}})
    for ins in visible(result):
        args = {"id": ins.id, **{k: v for k, v in ins.meta.items()}}
        wait = result.transfer_start(ins.id) - result.start[ins.id]
        if wait > 0:
            args["wait"] = wait
        events.append({
            "ph": "X", "name": ins.label or ins.id, "cat": ins.kind,
            "pid": ins.device, "tid": tids[lanes[ins.id]],
            "ts": result.start[ins.id] * scale,
            "dur": (result.end[ins.id] - result.start[ins.id]) * scale,
            "args": args,
        })
    for d in result.devices:
        kinds = result.mem_kind_series.get(d, {})
        if len(kinds) > 1:
            times = sorted({t for pts in kinds.values() for t, _ in pts})
            for t in times:
                events.append({"ph": "C", "name": "memory", "pid": d, "tid": 0,
                               "ts": t * scale,
                               "args": {k: _at(pts, t) for k, pts in sorted(kinds.items())}})
        else:
            for t, b in result.mem_series[d]:
                events.append({"ph": "C", "name": "memory", "pid": d, "tid": 0,
                               "ts": t * scale, "args": {"bytes": b}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"step_time": result.step_time, "unit": result.unit,
                          "generator": "piper simulator"}}


def _at(pts: list[tuple[float, int]], t: float) -> int:
    """The value of a step function [(time, value), ...] at time t."""
    v = 0
    for tt, b in pts:
        if tt > t:
            break
        v = b
    return v


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timeline(result: "SimResult", path, title: str | None = None,
                  unit: str = "") -> None:
    """Write a timeline of the run to `path` (.png or .svg)."""
    from matplotlib.patches import Patch, Rectangle

    plt = _pyplot()
    lanes = stream_lanes(result)
    rows: list[tuple[int, str, float, float]] = []  # device, stream, y, height
    y = 0.0
    for d in reversed(result.devices):
        streams = sorted(result.streams[d], key=lambda s: (not s.startswith("compute"), s))
        streams = [s for s in streams if s.startswith("compute")
                   or any(v[0] == d and v[1] == s for v in lanes.values())]
        for s in reversed(streams):
            h = 0.8 if s.startswith("compute") else 0.35
            rows.append((d, s, y, h))
            y += h + 0.1
        y += 0.3
    lane = {(d, s): (yy, h) for d, s, yy, h in rows}
    step = result.step_time or 1.0
    shown = visible(result)
    width = min(24.0, max(8.0, 0.12 * len(shown) / max(1, len(result.devices)) + 6))
    fig, ax = plt.subplots(figsize=(width, 0.9 + 0.55 * y))
    pairs: dict[str, list] = {}
    for ins in shown:
        yy, h = lane[(ins.device, ins.stream)]
        s0 = result.start[ins.id]
        t0, t1 = result.transfer_start(ins.id), result.end[ins.id]
        if t0 > s0:  # rendezvous wait: a faint box before the transfer
            ax.add_patch(Rectangle((s0, yy), t0 - s0, h, facecolor=color_of(ins.kind),
                                   alpha=0.2, linewidth=0))
        if t1 <= t0:
            continue
        ax.add_patch(Rectangle((t0, yy), t1 - t0, h,
                               facecolor=color_of(ins.kind, ins.meta.get("chunk", 0)),
                               edgecolor="white", linewidth=0.6,
                               alpha=1.0 if ins.ordered else 0.6))
        mb = ins.meta.get("mb")
        text = str(mb) if mb is not None and ins.stream.startswith("compute") else ""
        if ins.kind == "OPT":
            text = "opt"
        if text and (t1 - t0) / step > 0.006 * len(text):
            ax.text((t0 + t1) / 2, yy + h / 2, text, ha="center", va="center",
                    fontsize=7, color="white")
        if "pair" in ins.meta:
            pairs.setdefault((ins.device, ins.meta["pair"]), []).append((t0, t1, yy, h))
    for boxes in pairs.values():
        a = min(b[0] for b in boxes)
        z = max(b[1] for b in boxes)
        ax.add_patch(Rectangle((a, boxes[0][2]), z - a, boxes[0][3], fill=False,
                               edgecolor="black", linewidth=1.2))
    ax.set_xlim(0, step)
    ax.set_ylim(-0.2, y - 0.2)
    ticks, names = [], []
    for d, s, yy, h in rows:
        ticks.append(yy + h / 2)
        names.append(f"device {d}" if s.startswith("compute") else s)
    ax.set_yticks(ticks)
    ax.set_yticklabels(names, fontsize=8)
    _time_axis(ax, step, unit or result.unit)
    kinds = sorted({_color_kind(i.kind) for i in shown},
                   key=lambda k: list(COLORS).index(k) if k in COLORS else 99)
    handles = [Patch(color=color_of(k), label=k) for k in kinds]
    if any(i.meta.get("chunk", 0) % 2 for i in shown):
        handles.append(Patch(color=color_of("F", 1), label="darker: odd chunk"))
    if pairs:
        handles.append(Patch(facecolor="none", edgecolor="black", label="overlapped F&B"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(title or f"step {format_time(step, result.unit)}, "
                 f"bubble {100 * result.mean_bubble:.1f}%")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def _time_axis(ax, step: float, unit: str) -> None:
    """Label the x axis with the unit; seconds are shown as ms or us."""
    from matplotlib.ticker import FuncFormatter

    if unit == "s":
        scale, unit = next(((f, u) for f, u in ((1.0, "s"), (1e3, "ms"), (1e6, "us"))
                            if step * f >= 1.0), (1e6, "us"))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x * scale:g}"))
    ax.set_xlabel(f"time ({unit})" if unit else "time")


def _mem_unit(peak: float) -> tuple[int, str]:
    for d, u in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if peak >= 4 * d:
            return d, u
    return 1, "bytes"


def plot_memory(result: "SimResult", path, title: str | None = None,
                by_kind: bool = False) -> None:
    """Write memory over time per device to `path` (.png or .svg): one line
    per device, or with `by_kind` one panel per device stacking categories."""
    plt = _pyplot()
    peak = max(result.peak_mem.values(), default=0)
    div, unit = _mem_unit(peak)
    if not by_kind:
        fig, ax = plt.subplots(figsize=(9, 3.5))
        for d in result.devices:
            pts = result.mem_series[d]
            ax.step([t for t, _ in pts], [b / div for _, b in pts], where="post",
                    label=f"device {d} (peak {result.peak_mem[d] / div:.4g})")
        _time_axis(ax, result.step_time, result.unit)
        ax.set_ylabel(f"memory ({unit})")
        ax.set_xlim(0, result.step_time or 1.0)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(title or "memory per device")
    else:
        n = len(result.devices)
        fig, axes = plt.subplots(n, 1, figsize=(9, 1.2 + 1.6 * n), sharex=True, squeeze=False)
        # device memory only: host categories ("host:...", offload) are not stacked
        present = {k for d in result.devices for k in result.mem_kind_series.get(d, {})
                   if not k.startswith("host:")}
        order = [k for k in MEM_COLORS if k in present] + sorted(present - set(MEM_COLORS))
        for ax, d in zip(axes[:, 0], result.devices):
            series = result.mem_kind_series.get(d, {})
            times = sorted({t for pts in series.values() for t, _ in pts} | {0.0})
            ys = [[_at(series[k], t) / div if k in series else 0.0 for t in times]
                  for k in order]
            ax.stackplot(times, ys, step="post", labels=order,
                         colors=[MEM_COLORS.get(k, "#777777") for k in order])
            ax.set_ylabel(f"device {d}\n({unit})", fontsize=8)
            ax.set_ylim(0, peak / div * 1.08 if peak else 1)
            ax.text(0.995, 0.92, f"peak {result.peak_mem[d] / div:.4g} {unit}",
                    transform=ax.transAxes, ha="right", va="top", fontsize=7)
        axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        _time_axis(axes[-1, 0], result.step_time, result.unit)
        axes[-1, 0].set_xlim(0, result.step_time or 1.0)
        axes[0, 0].set_title(title or "memory per device, by category")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def format_time(t: float, unit: str = "") -> str:
    """Seconds as s/ms/µs with 4 digits; other units as they are."""
    if unit != "s":
        return f"{t:g}"
    for scale, u in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if abs(t) >= scale:
            return f"{t / scale:.4g} {u}"
    return f"{t * 1e9:.4g} ns" if t else "0"


def format_bytes(b: float) -> str:
    for scale, u in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if b >= scale:
            return f"{b / scale:.4g} {u}"
    return f"{b:g} B"


def summary_table(result: "SimResult") -> str:
    """Step time, and per device: when it ends, busy and idle compute time,
    bubble, peak memory and (with categories) what the peak is made of;
    the host memory's peak where a plan offloads."""
    u = result.unit
    kinds = [k for k in MEM_COLORS if any(k in b for b in result.peak_breakdown.values())]
    kinds += sorted({k for b in result.peak_breakdown.values() for k in b} - set(kinds))
    detail = len(kinds) > 1
    host = any(result.host_peak.values())  # offloaded bytes: a column of their own
    lines = [f"step time {format_time(result.step_time, u)}   "
             f"mean bubble {100 * result.mean_bubble:.1f}%"
             + (f"   (times in {u})" if u and u != "s" else ""),
             f"{'device':>6}  {'end':>10}  {'busy':>10}  {'idle':>10}  {'bubble':>7}  "
             f"{'peak mem':>12}" + ("".join(f"  {k:>11}" for k in kinds) if detail else "")
             + (f"  {'host mem':>11}" if host else "")]
    bub = result.bubble
    ends = {d: 0.0 for d in result.devices}
    for ins in result.instrs:
        ends[ins.device] = max(ends[ins.device], result.end[ins.id])
    for d in result.devices:
        mem = format_bytes(result.peak_mem[d]) if u else str(result.peak_mem[d])
        row = (f"{d:>6}  {format_time(ends[d], u):>10}  {format_time(result.busy[d], u):>10}"
               f"  {format_time(result.bubble_time(d), u):>10}  {100 * bub[d]:>6.1f}%"
               f"  {mem:>12}")
        if detail:
            br = result.peak_breakdown.get(d, {})
            row += "".join(f"  {(format_bytes(br.get(k, 0)) if u else br.get(k, 0)):>11}"
                           for k in kinds)
        if host:
            h = result.host_peak.get(d, 0)
            row += f"  {(format_bytes(h) if u else h):>11}"
        lines.append(row)
    return "\n".join(lines)
