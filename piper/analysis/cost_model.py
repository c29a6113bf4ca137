"""Cost model: how long a compute task or a communication takes.

Compute is a roofline: a task that does `flops` floating-point operations
and moves `bytes` through device memory takes
max(flops / (peak_flops * efficiency), bytes / mem_bw).

A point-to-point message of `bytes` takes latency + bytes / bandwidth over
the link between the two devices (intra-node or inter-node, by
`devices_per_node`). Collectives use the ring algorithms' costs, with `bytes`
the size of the full buffer on each rank and n the group size:

    all_reduce      2(n-1) latency + 2(n-1)/n * bytes / bw
    reduce_scatter   (n-1) latency +  (n-1)/n * bytes / bw
    all_gather       (n-1) latency +  (n-1)/n * bytes / bw
    all_to_all       (n-1) latency +  (n-1)/n * bytes / bw
    broadcast        (n-1) latency +            bytes / bw   (pipelined ring)

A group spanning nodes runs at the inter-node link's speed. Where a spec
carries measured collectives (`collectives`, from a probe on the machine:
`measured_collectives`), a collective of a measured kind and group size
within a node costs what was measured, fixed + bytes / bw, instead of the
ring's formula: gloo on a CPU host is no ring of independent links (its
algorithms, worker threads and the processes sharing cores set the cost).

`host_cores`: the cores a node's processes share (a CPU host running one
process per device; fractional when other work takes part of them, as a
probe measures it); None: a core (or a GPU) per device. With more ranks
than cores on a host, compute runs `core_share` times slower
(ranks / cores): the ranks of a step compute at the same time, so each
gets that share of a core. `comm_overlap`: the share of a collective's
time that its rank's compute can hide (1.0: all of it, a GPU's copy
engines or a core of its own; a probe measures it on a CPU host, where the
library's threads need the cores the ranks compute on). Times are in
seconds. The presets are rough public peak numbers (dense bf16 for GPUs),
meant for comparing schedules, not for predicting a run to the percent.
`op_overhead` is the fixed cost of launching one op (a CUDA kernel launch
from eager PyTorch, an aten call's dispatch on a CPU), an order of
magnitude, not a measurement; the analytic task costs
(piper.analysis.task_costs) add it once per op of a stage function.
"""

from __future__ import annotations

from dataclasses import dataclass

from piper.diagnostics import PiperError

COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "all_to_all", "broadcast")
P2P = ("send", "recv", "p2p")
COMM_KINDS = COLLECTIVES + P2P


@dataclass(frozen=True)
class DeviceSpec:
    """What the cost model knows about one kind of device and its links."""

    name: str
    peak_flops: float          # FLOP/s
    mem_bw: float              # bytes/s, device memory
    mem_capacity: float        # bytes
    intra_bw: float            # bytes/s per direction, between devices of a node
    intra_latency: float       # s
    inter_bw: float            # bytes/s per device, between nodes
    inter_latency: float       # s
    devices_per_node: int = 8
    op_overhead: float = 0.0   # s per launched op (kernel launch / eager dispatch)
    # s per step of a collective's ring, when it differs from a message's
    # latency (a library's own handshakes: gloo on a CPU); None: the link's
    collective_step_latency: float | None = None
    # bytes/s per direction and s, between the device and its host's memory
    # (what a sched.copy of offloaded state crosses)
    host_bw: float = 64e9
    host_latency: float = 10e-6
    # measured collectives: ((kind, group size, fixed s, bytes/s), ...)
    collectives: tuple = ()
    host_cores: float | None = None  # cores shared by a node's processes
    # the share of a collective's time that hides under the rank's compute
    comm_overlap: float = 1.0

    def same_node(self, devices) -> bool:
        return len({d // self.devices_per_node for d in devices}) <= 1

    def link(self, devices) -> tuple[float, float]:
        """(latency, bandwidth) of the slowest link the devices use."""
        if self.same_node(devices):
            return self.intra_latency, self.intra_bw
        return self.inter_latency, self.inter_bw


PRESETS = {
    # H100 SXM: ~989 TFLOP/s dense bf16, 3.35 TB/s HBM3, 80 GB; NVLink 4
    # 900 GB/s both directions (450 each); 400 Gb/s NDR InfiniBand per GPU.
    # Host link: PCIe Gen5 x16, 128 GB/s both directions (64 each; NVIDIA
    # H100 and H200 SXM datasheets, "PCIe Gen5: 128 GB/s").
    "h100": DeviceSpec("h100", 989e12, 3.35e12, 80e9, 450e9, 3e-6, 50e9, 8e-6, 8, 5e-6,
                       host_bw=64e9, host_latency=10e-6),
    # H200: same compute as H100, 4.8 TB/s HBM3e, 141 GB.
    "h200": DeviceSpec("h200", 989e12, 4.8e12, 141e9, 450e9, 3e-6, 50e9, 8e-6, 8, 5e-6,
                       host_bw=64e9, host_latency=10e-6),
    # GH200 (an H200-class GPU with its Grace CPU): host link NVLink-C2C,
    # 900 GB/s both directions (450 each; NVIDIA GH200 datasheet).
    "gh200": DeviceSpec("gh200", 989e12, 4.8e12, 141e9, 450e9, 3e-6, 50e9, 8e-6, 8, 5e-6,
                        host_bw=450e9, host_latency=2e-6),
    # A CPU process per device (gloo): ~100 GFLOP/s, ~20 GB/s memory,
    # loopback TCP between processes of a host, 10 GbE between hosts; the
    # host is the device: a copy runs at memory speed.
    "cpu": DeviceSpec("cpu", 100e9, 20e9, 64e9, 5e9, 30e-6, 1.25e9, 60e-6, 64, 5e-6,
                      host_bw=20e9, host_latency=1e-6),
}


def copy_time(nbytes: float, spec: str | DeviceSpec) -> float:
    """A copy of `nbytes` between a device and its host's memory."""
    d = device_spec(spec)
    return d.host_latency + nbytes / d.host_bw


def measured_collectives(fits: dict) -> tuple:
    """`{(kind, n): (fixed s, bytes/s)}` as a spec's `collectives`."""
    out = []
    for (kind, n), (fixed, bw) in sorted(fits.items()):
        if kind not in COLLECTIVES:
            raise PiperError(f"cost model: unknown collective '{kind}'"
                             f" (one of {', '.join(COLLECTIVES)})")
        out.append((kind, int(n), float(fixed), float(bw)))
    return tuple(out)


def core_share(spec: str | DeviceSpec, devices: int) -> float:
    """How many times slower compute runs with `devices` processes on
    hosts of `host_cores` cores (1.0 without `host_cores`)."""
    d = device_spec(spec)
    if not d.host_cores:
        return 1.0
    on_host = min(devices, d.devices_per_node)
    return max(1.0, on_host / d.host_cores)


def device_spec(spec: str | DeviceSpec) -> DeviceSpec:
    if isinstance(spec, DeviceSpec):
        return spec
    if spec not in PRESETS:
        raise PiperError(f"cost model: unknown device '{spec}' (one of {', '.join(PRESETS)})")
    return PRESETS[spec]


def compute_time(flops: float, bytes_moved: float, spec: str | DeviceSpec,
                 efficiency: float = 1.0) -> float:
    d = device_spec(spec)
    return max(flops / (d.peak_flops * efficiency), bytes_moved / d.mem_bw)


def p2p_time(nbytes: float, spec: str | DeviceSpec, devices=(0, 1)) -> float:
    lat, bw = device_spec(spec).link(devices)
    return lat + nbytes / bw


def link_name(devices, spec: str | DeviceSpec) -> str:
    """Which of the spec's links a message or collective among `devices`
    runs on: "intra-node" when they are all on one node (devices
    `k * devices_per_node ..` make node k), else "inter-node".

    Tensor parallelism's mesh axis is the innermost one (device = old
    device * n + tp rank), so each tp group is n consecutive devices: on
    one node, and priced on its intra-node link (NVLink on `h100`/`h200`,
    loopback on `cpu`), whenever n divides devices_per_node."""
    return "intra-node" if device_spec(spec).same_node(devices) else "inter-node"


def collective_time(kind: str, nbytes: float, devices, spec: str | DeviceSpec) -> float:
    """Ring cost of `kind` over `devices` with a `nbytes` buffer on each."""
    n = len(set(devices))
    if kind in P2P:
        return p2p_time(nbytes, spec, devices)
    if kind not in COLLECTIVES:
        raise PiperError(f"cost model: unknown collective '{kind}'"
                         f" (one of {', '.join(COLLECTIVES)})")
    if n <= 1:
        return 0.0
    d = device_spec(spec)
    lat, bw = d.link(devices)
    if d.same_node(devices):
        for k, m, fixed, measured_bw in d.collectives:
            if k == kind and m == n:
                return fixed + nbytes / measured_bw
    if d.collective_step_latency is not None and d.same_node(devices):
        lat = d.collective_step_latency
    if kind == "all_reduce":
        return 2 * (n - 1) * lat + 2 * (n - 1) / n * nbytes / bw
    if kind == "broadcast":
        return (n - 1) * lat + nbytes / bw
    return (n - 1) * lat + (n - 1) / n * nbytes / bw


@dataclass
class CostModel:
    """Fills in the duration of instructions that do not give one.

    A compute instruction needs `flops` (and optionally `bytes`); a
    communication instruction needs `bytes` and, for a collective, the
    devices of its group (the simulator passes them).
    """

    spec: DeviceSpec | str = "h100"
    efficiency: float = 1.0

    def duration(self, instr, devices=None) -> float:
        if instr.kind in COMM_KINDS:
            if instr.bytes is None:
                raise PiperError(f"cost model: {instr.id} ({instr.kind}) has no duration"
                                 " and no bytes")
            devs = devices or [instr.device, instr.peer if instr.peer is not None else instr.device]
            return collective_time(instr.kind, instr.bytes, devs, self.spec)
        if instr.flops is None and instr.bytes is None:
            raise PiperError(f"cost model: {instr.id} ({instr.kind}) has no duration,"
                             " flops or bytes")
        return compute_time(instr.flops or 0.0, instr.bytes or 0.0, self.spec, self.efficiency)
