"""Where the durations of a plan's instructions come from.

The simulator of sched programs (piper.analysis.plan_sim) asks a cost
source three questions: how long a `sched.call` of a stage function takes,
how long a local instruction takes (`sched.sum` of gradients, a fill, ...),
and how long a message or collective takes. Three sources answer them:

- `UnitCosts`: every task costs its kind's unit (F=1, B=2, I=W=1, OPT=0),
  everything else is free. The schedules' closed forms hold exactly here,
  so a compiled plan can be checked against them.
- `AnalyticCosts(spec)`: a roofline per graph op from its FLOPs and bytes
  (piper.analysis.op_work) on a device preset (`h100`, `h200`, `cpu`) or
  a `DeviceSpec`, plus the spec's per-op launch overhead; communication
  from the spec's links (piper.analysis.cost_model).
- `ProfiledCosts` (piper.analysis.profile): each stage function timed with
  the aten executor on this machine; communication from a spec.

Times are seconds, except for `UnitCosts` (`unit` says which).
"""

from __future__ import annotations

import re

from piper.analysis import cost_model as C
from piper.analysis.op_work import Work, numel, op_works, tensor_bytes
from piper.diagnostics import PiperError
from piper.dialects import sched

_TASK = re.compile(r"^(\d+)(F|B|I|W|OPT)(\d+)$")


def task_kind(label: str, callee: str = "") -> str:
    """`1B3` -> `B`; an unlabelled call is named by its callee (`OPT0` -> OPT)."""
    m = _TASK.match(label)
    if m:
        return m.group(2)
    m = re.match(r"^(OPT|F|B|I|W)\d", callee)
    return m.group(1) if m else "call"


def task_stage_mb(label: str) -> tuple[int | None, int | None]:
    m = _TASK.match(label)
    return (int(m.group(1)), int(m.group(3))) if m else (None, None)


class TaskCosts:
    """Base of the cost sources; see the module docstring."""

    unit = "s"
    name = "costs"

    def call(self, module, op) -> float:
        raise NotImplementedError

    def local(self, module, op) -> float:
        return 0.0

    def comm(self, kind: str, nbytes: float, devices) -> float:
        raise NotImplementedError

    def copy(self, nbytes: float) -> float:
        """A copy between host and device memory (`sched.copy`)."""
        return 0.0

    def compute_share(self, devices: int) -> float:
        """How many times slower compute runs when `devices` ranks share the
        host's cores (cost_model.core_share); 1.0: a core per device."""
        return 1.0

    def comm_overlap(self) -> float:
        """The share of a collective's time its rank's compute can hide
        (cost_model.DeviceSpec.comm_overlap); 1.0: all of it."""
        return 1.0

    def describe(self) -> dict:
        return {"source": self.name, "unit": self.unit}


class UnitCosts(TaskCosts):
    """F=1, B=2 (or I+W), I=W=1, OPT=0 and free communication by default."""

    unit = "units"
    name = "unit"

    def __init__(self, F: float = 1.0, B: float | None = None, I: float = 1.0,  # noqa: E741
                 W: float = 1.0, OPT: float = 0.0, comm: float = 0.0):
        self.table = {"F": F, "I": I, "W": W, "OPT": OPT,
                      "B": I + W if B is None else B, "call": 0.0}
        self.comm_cost = comm

    def call(self, module, op) -> float:
        return float(self.table[task_kind(op.task.data, op.callee.root_reference.data)])

    def comm(self, kind, nbytes, devices) -> float:
        return float(self.comm_cost)

    def describe(self) -> dict:
        return {**super().describe(), "table": dict(self.table), "comm": self.comm_cost}


class AnalyticCosts(TaskCosts):
    """Per-op roofline on a device spec, plus its per-op launch overhead."""

    name = "analytic"

    def __init__(self, spec: str | C.DeviceSpec = "h100", efficiency: float = 1.0):
        if not 0 < efficiency <= 1:
            raise PiperError(f"cost model: efficiency must be in (0, 1], got {efficiency}")
        self.spec = C.device_spec(spec)
        self.efficiency = efficiency
        self._calls: dict[str, float] = {}
        self._module = None  # the module _calls belongs to

    def work_time(self, w: Work) -> float:
        return (C.compute_time(w.flops, w.bytes, self.spec, self.efficiency)
                + w.ops * self.spec.op_overhead)

    def call(self, module, op) -> float:
        name = op.callee.root_reference.data
        if module is not self._module:  # another plan: its @F0 is another function
            self._module, self._calls = module, {}
        if name not in self._calls:
            self._calls[name] = sum(self.work_time(w) for w in op_works(module, name))
        return self._calls[name]

    def local(self, module, op) -> float:
        if isinstance(op, sched.SumOp):
            n, t = len(op.inputs), op.result.type
            scale = 0 if op.scale.value.data == 1.0 else 1
            return self.work_time(Work((n - 1 + scale) * numel(t),
                                       (n + 1) * tensor_bytes(t), max(1, n - 1 + scale)))
        if isinstance(op, sched.FillOp):
            return self.work_time(Work(0.0, tensor_bytes(op.result.type), 1))
        return 0.0

    def comm(self, kind, nbytes, devices) -> float:
        return C.collective_time(kind, nbytes, devices, self.spec)

    def copy(self, nbytes: float) -> float:
        return C.copy_time(nbytes, self.spec)

    def compute_share(self, devices: int) -> float:
        return C.core_share(self.spec, devices)

    def comm_overlap(self) -> float:
        return self.spec.comm_overlap

    def describe(self) -> dict:
        s = self.spec
        return {**super().describe(), "device": s.name, "efficiency": self.efficiency,
                "peak_flops": s.peak_flops, "mem_bw": s.mem_bw, "op_overhead": s.op_overhead}


def cost_source(costs: str, device: str | C.DeviceSpec = "h100", efficiency: float = 1.0,
                **profile_args) -> TaskCosts:
    """A cost source by name: `unit`, `analytic` or `profile`."""
    if costs == "unit":
        return UnitCosts()
    if costs == "analytic":
        return AnalyticCosts(device, efficiency)
    if costs == "profile":
        from piper.analysis.profile import ProfiledCosts

        return ProfiledCosts(comm_spec=device, **profile_args)
    raise PiperError(f"simulate: unknown cost source '{costs}' (one of unit, analytic, profile)")
