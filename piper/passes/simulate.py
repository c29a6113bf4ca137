"""simulate: predict a plan's step without running it.

Reads the sched programs, simulates `steps` training steps with a cost
source (piper.analysis.plan_sim) and prints a summary table to stdout: the
step time and, per device, when it ends, its busy and idle compute time,
its bubble and its peak memory with what the peak is made of. The IR is
left as it was.

    piper-opt plan.mlir -o /dev/null \\
      -p 'simulate{costs="analytic" device="h100" trace="t.json" plot="t.png"}'

Options:
  costs        `analytic` (roofline per graph op on `device`, default),
               `profile` (stage functions timed on this CPU with the aten
               executor; communication from `device`, default `cpu`) or
               `unit` (F=1, B=2, I=W=1, OPT=0, free communication)
  device       `h100`, `h200` or `cpu` (default h100, cpu for profile)
  efficiency   share of the peak FLOP/s compute reaches (analytic)
  p2p          `rendezvous` (a send completes with its receive, as on gloo
               and NCCL; default) or `eager` (buffered sends)
  steps        consecutive steps to simulate (default 1); the table covers
               them all, and a line gives each device's time per step
  trace        write a Chrome/Perfetto trace JSON here
  plot         write a timeline plot here (.png, .svg or .pdf)
  memory_plot  write a memory-over-time plot by category here (same)
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError


@dataclass(frozen=True)
class Simulate(ModulePass):
    name = "simulate"

    costs: str = "analytic"
    device: str = ""
    efficiency: float = 1.0
    p2p: str = "rendezvous"
    steps: int = 1
    trace: str = ""
    plot: str = ""
    memory_plot: str = ""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        from piper.analysis.plan_check import plan_devices
        from piper.analysis.plan_sim import rank_step_times, simulate_plan
        from piper.analysis.task_costs import cost_source
        from piper.analysis.timeline import (format_time, plot_memory, plot_timeline,
                                             summary_table, to_chrome_trace)

        device = self.device or ("cpu" if self.costs == "profile" else "h100")
        costs = cost_source(self.costs, device, self.efficiency)
        for path, plot in ((self.trace, False), (self.plot, True), (self.memory_plot, True)):
            if path:
                _check_output(path, plot)
        result = simulate_plan(op, costs, self.steps, self.p2p)
        print(f"simulate: costs {costs.name}" + (f" on {device}" if self.costs != "unit" else "")
              + (f", {self.steps} steps" if self.steps > 1 else ""))
        print(summary_table(result))
        whole = plan_devices(op, len(result.devices))
        if whole != len(result.devices):
            print(f"(lowered with replicas=first: the {len(result.devices)} devices of dp "
                  f"replica 0 of {whole}; the other replicas run the same programs)")
        if self.steps > 1:
            for d, times in sorted(rank_step_times(result).items()):
                print(f"device {d} per step: "
                      + " ".join(format_time(t, costs.unit) for t in times))
        sys.stdout.flush()
        scale = 1e6 if costs.unit == "s" else 1.0
        for path, write in ((self.trace, lambda p: _write_json(p, to_chrome_trace(result, scale))),
                            (self.plot, lambda p: plot_timeline(result, p)),
                            (self.memory_plot, lambda p: plot_memory(result, p, by_kind=True))):
            if path:
                try:
                    write(path)
                except OSError as e:
                    raise PiperError(f"simulate: cannot write '{path}': {e.strerror}") from None
                except ValueError as e:
                    raise PiperError(f"simulate: cannot write '{path}': {e}") from None


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _check_output(path: str, plot: bool) -> None:
    """Fail before simulating, not after, on a path that cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PiperError(f"simulate: cannot write '{path}': no folder {folder}")
    if plot and not path.lower().endswith(PLOT_SUFFIXES):
        raise PiperError(f"simulate: cannot write '{path}': a plot must end in "
                         + ", ".join(PLOT_SUFFIXES))


def _write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f)
