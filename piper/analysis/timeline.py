"""Views of a simulation: Chrome/Perfetto trace, timeline and memory plots,
and a text summary.

- `to_chrome_trace(result)`: the Trace Event Format dict (`json.dump` it and
  open in chrome://tracing or ui.perfetto.dev): one process per device, one
  thread per stream, one complete event ("X") per instruction, a counter
  ("C") track for each device's memory.
- `plot_timeline(result, path)`: one row per device (compute on top, other
  streams as thin lanes under it), boxes coloured by kind and labelled with
  the microbatch; overlapped pairs framed together. PNG or SVG by suffix.
- `plot_memory(result, path)`: memory over time, one line per device.
- `summary_table(result)`: step time, and per device busy time, bubble,
  peak memory.
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
    "comm": "#9E9E9E",
}


def color_of(kind: str, chunk: int = 0) -> str:
    """The kind's colour; odd model chunks of a rank (v > 1) a darker shade."""
    c = COLORS.get(kind, COLORS["comm"])
    if chunk % 2 == 0:
        return c
    rgb = [int(c[i:i + 2], 16) * 0.62 for i in (1, 3, 5)]
    return "#" + "".join(f"{int(x):02X}" for x in rgb)


def to_chrome_trace(result: "SimResult", scale: float = 1e6) -> dict:
    """Trace events; `scale` is trace microseconds per simulator time unit
    (1e6 for results in seconds, the cost model's unit)."""
    events: list[dict] = []
    tids: dict[tuple[int, str], int] = {}
    for d in result.devices:
        events.append({"ph": "M", "name": "process_name", "pid": d, "tid": 0,
                       "args": {"name": f"device {d}"}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": d, "tid": 0,
                       "args": {"sort_index": d}})
        for i, s in enumerate(result.streams[d]):
            tids[(d, s)] = i
            events.append({"ph": "M", "name": "thread_name", "pid": d, "tid": i,
                           "args": {"name": s}})
    for ins in result.instrs:
        args = {"id": ins.id, **{k: v for k, v in ins.meta.items()}}
        wait = result.transfer_start(ins.id) - result.start[ins.id]
        if wait > 0:
            args["wait"] = wait
        events.append({
            "ph": "X", "name": ins.label or ins.id, "cat": ins.kind,
            "pid": ins.device, "tid": tids[(ins.device, ins.stream)],
            "ts": result.start[ins.id] * scale,
            "dur": (result.end[ins.id] - result.start[ins.id]) * scale,
            "args": args,
        })
    for d in result.devices:
        for t, b in result.mem_series[d]:
            events.append({"ph": "C", "name": "memory", "pid": d, "tid": 0,
                           "ts": t * scale, "args": {"bytes": b}})
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"step_time": result.step_time, "generator": "piper simulator"}}


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
    rows: list[tuple[int, str, float, float]] = []  # device, stream, y, height
    y = 0.0
    for d in reversed(result.devices):
        streams = sorted(result.streams[d], key=lambda s: (not s.startswith("compute"), s))
        for s in reversed(streams):
            h = 0.8 if s.startswith("compute") else 0.35
            rows.append((d, s, y, h))
            y += h + 0.1
        y += 0.3
    lane = {(d, s): (yy, h) for d, s, yy, h in rows}
    step = result.step_time or 1.0
    width = min(24.0, max(8.0, 0.12 * len(result.instrs) / max(1, len(result.devices)) + 6))
    fig, ax = plt.subplots(figsize=(width, 0.9 + 0.55 * y))
    pairs: dict[str, list] = {}
    for ins in result.instrs:
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
                               edgecolor="white", linewidth=0.6))
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
    ax.set_xlabel(f"time{f' ({unit})' if unit else ''}")
    kinds = sorted({i.kind for i in result.instrs},
                   key=lambda k: list(COLORS).index(k) if k in COLORS else 99)
    handles = [Patch(color=color_of(k), label=k) for k in kinds]
    if any(i.meta.get("chunk", 0) % 2 for i in result.instrs):
        handles.append(Patch(color=color_of("F", 1), label="darker: odd chunk"))
    if pairs:
        handles.append(Patch(facecolor="none", edgecolor="black", label="overlapped F&B"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    ax.set_title(title or f"step {step:g}, bubble {100 * result.mean_bubble:.1f}%")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def plot_memory(result: "SimResult", path, title: str | None = None) -> None:
    """Write memory over time per device to `path` (.png or .svg)."""
    plt = _pyplot()
    peak = max(result.peak_mem.values(), default=0)
    div, unit = 1, "bytes"
    for d, u in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if peak >= 4 * d:
            div, unit = d, u
            break
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for d in result.devices:
        pts = result.mem_series[d]
        ax.step([t for t, _ in pts], [b / div for _, b in pts], where="post",
                label=f"device {d} (peak {result.peak_mem[d] / div:g})")
    ax.set_xlabel("time")
    ax.set_ylabel(f"memory ({unit})")
    ax.set_xlim(0, result.step_time or 1.0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or "memory per device")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def summary_table(result: "SimResult") -> str:
    lines = [f"step time {result.step_time:g}   mean bubble {100 * result.mean_bubble:.1f}%",
             f"{'device':>6}  {'busy':>10}  {'idle':>10}  {'bubble':>7}  {'peak mem':>12}"]
    bub = result.bubble
    for d in result.devices:
        lines.append(f"{d:>6}  {result.busy[d]:>10.4g}  {result.bubble_time(d):>10.4g}"
                     f"  {100 * bub[d]:>6.1f}%  {result.peak_mem[d]:>12}")
    return "\n".join(lines)
