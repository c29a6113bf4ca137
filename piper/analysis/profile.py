"""Task costs measured on this machine.

`ProfiledCosts` times every stage function a plan calls (the `sched.call`
targets) with the aten executor, the backend the CPU runtime runs them
with, on this process's CPU: `warmup` untimed calls, then the median of
`repeat` timed ones, each function once however often the plan calls it.
The same is done for gradient sums (`sched.sum`) and fills. Inputs are
made up from the argument types: uniform [0, 1) floats (non-negative, so
square roots of optimizer state stay finite) and zero integers and
booleans (valid token ids and targets), since timing depends on shapes,
not values. Torch runs with `threads` intra-op threads while timing (1:
what the runtime's workers get through OMP_NUM_THREADS). `clock="wall"`
times with the wall clock; `clock="cpu"` with the thread's CPU time, which
other processes on a loaded machine do not inflate (with one thread, the
work itself: what the ranks' sharing of cores then stretches, see below).

Communication is not measured (it needs the other processes); it comes
from a device spec's links and measured collectives, `cpu` by default.
Other processes sharing the cores come from the spec's `host_cores`
(`compute_share`: a function timed alone on one core runs ranks / cores
times slower when the ranks of a step share fewer cores). What this source
does not see: the interpreter's own time per instruction and caches warmed
differently than in the real step.
"""

from __future__ import annotations

import statistics
import time

import torch

from piper.analysis import cost_model as C
from piper.analysis.task_costs import TaskCosts
from piper.diagnostics import PiperError


def example_tensor(t, gen: torch.Generator) -> torch.Tensor:
    """A tensor of type `t` with harmless values (see the module docstring)."""
    from piper.dialects.graph import torch_dtype

    dtype = torch_dtype(t.element_type)
    shape = list(t.get_shape())
    if dtype.is_floating_point:
        return torch.rand(shape, generator=gen, dtype=torch.float32).to(dtype)
    return torch.zeros(shape, dtype=dtype)


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def median_seconds(fn, repeat: int, warmup: int, clock: str = "wall") -> float:
    now = CLOCKS[clock]
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = now()
        fn()
        times.append(now() - t0)
    return statistics.median(times)


def _kernel_hook(module):
    """Fused groups (`kernel.fused`) run as the runtime runs them."""
    try:
        from piper.backend.kernels import kernel_hook
    except ImportError:
        return None
    return kernel_hook(module, "cpu")


class ProfiledCosts(TaskCosts):
    """Stage functions timed here; communication from `comm_spec`."""

    name = "profile"

    def __init__(self, comm_spec: str | C.DeviceSpec = "cpu", repeat: int = 5,
                 warmup: int = 1, threads: int = 1, seed: int = 0, clock: str = "wall"):
        if clock not in CLOCKS:
            raise PiperError(f"profile: clock must be one of {', '.join(CLOCKS)}, got '{clock}'")
        if clock == "cpu" and threads != 1:
            raise PiperError("profile: clock 'cpu' needs threads=1 (the CPU time of one "
                             "thread is the call's work only when it runs on that thread)")
        self.clock = clock
        self.spec = C.device_spec(comm_spec)
        self.repeat, self.warmup, self.threads, self.seed = repeat, warmup, threads, seed
        self.calls: dict[str, float] = {}
        self.locals: dict[tuple, float] = {}
        self._compiled: dict = {}
        self._module = None  # the module `calls` belongs to

    def _timed(self, fn) -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                return median_seconds(fn, self.repeat, self.warmup, self.clock)
        finally:
            torch.set_num_threads(before)

    def call(self, module, op) -> float:
        from piper.backend.aten import CompiledFunction, find_function

        name = op.callee.root_reference.data
        if module is not self._module:  # another plan: its @F0 is another function
            self._module, self.calls, self._compiled = module, {}, {}
        if name not in self.calls:
            fn = find_function(module, name)
            compiled = CompiledFunction(module, fn, "cpu", self._compiled, _kernel_hook(module))
            gen = torch.Generator().manual_seed(self.seed)
            args = [example_tensor(t, gen) for t in fn.function_type.inputs.data]
            self.calls[name] = self._timed(lambda: compiled(*args))
        return self.calls[name]

    def local(self, module, op) -> float:
        from piper.dialects import sched

        if isinstance(op, sched.SumOp):
            t = op.result.type
            key = ("sum", len(op.inputs), tuple(t.get_shape()), str(t.element_type),
                   op.scale.value.data != 1.0)
            if key not in self.locals:
                gen = torch.Generator().manual_seed(self.seed)
                vals = [example_tensor(t, gen) for _ in op.inputs]
                scale = op.scale.value.data

                def run():
                    out = vals[0]
                    for v in vals[1:]:
                        out = out + v
                    return out if scale == 1.0 else out * scale

                self.locals[key] = self._timed(run)
            return self.locals[key]
        if isinstance(op, sched.FillOp):
            from piper.dialects.graph import torch_dtype

            t = op.result.type
            key = ("fill", tuple(t.get_shape()), str(t.element_type))
            if key not in self.locals:
                shape, dtype = list(t.get_shape()), torch_dtype(t.element_type)
                self.locals[key] = self._timed(lambda: torch.full(shape, 1.0, dtype=dtype))
            return self.locals[key]
        return 0.0

    def comm(self, kind, nbytes, devices) -> float:
        return C.collective_time(kind, nbytes, devices, self.spec)

    def compute_share(self, devices: int) -> float:
        return C.core_share(self.spec, devices)

    def comm_overlap(self) -> float:
        return self.spec.comm_overlap

    def describe(self) -> dict:
        return {**super().describe(), "comm_device": self.spec.name, "repeat": self.repeat,
                "warmup": self.warmup, "threads": self.threads, "clock": self.clock,
                "calls": dict(sorted(self.calls.items()))}
