"""Routed mixture of experts: Piper `expert_parallel(n)` against a PyTorch
expert-parallel reference written with `all_to_all_single`, and against
Piper's dense plan, side by side.

    python bench/moe_bench.py                  # ep=2 and ep=4 processes
    python bench/moe_bench.py --tiny --steps 1 --warmup 0 --no-plot

The model is examples/moe.py (8 experts, top-2, dim 256, expert hidden
512, 2 MoE layers, 256 tokens per rank, 16 classes, load-balancing loss
weight 0.01, AdamW). Three sides train in the *same* torchrun job, on the
same processes, on the same global batches (rank r takes the r-th block of
256 tokens, as Piper's plan does), steps rotating which side goes first:

- `piper`: `MoEConfig(routing="routed", capacity_factor=1.0)`, compiled
  with `[place(pp=1), expert_parallel(n)]` (both MoE layers on every rank),
  run by `RankRuntime.step`;
- `torch`: the reference, written here with plain PyTorch from the same
  initial state: every rank holds its E/n experts' rows of the stacked
  weights (`[E/n, d, h]`...) and the replicated rest; it routes its tokens
  with `piper.moe` (route, dispatch, combine, load_balancing_loss: the
  same static-shape routing the model uses), exchanges the slots
  [E, C, d] with `torch.distributed.nn.functional.all_to_all_single`
  (split on dim 0: block b to rank b; autograd's backward is the reverse
  all_to_all), runs its experts on all received slots as one `bmm` per
  projection, exchanges the outputs back and combines; it backpropagates
  its loss / n, all-reduces the replicated parameters' gradients as one
  flat buffer and steps `torch.optim.AdamW` on its local parameters;
- `piper_dense`: today's dense plan of the same sizes
  (`MoEConfig(routing="dense")`: every expert runs on every token, weighted
  by a gate that is zero where the token did not choose it), compiled the
  same way.

Recorded per case (bench/results/moe.json, moe.png): step time of each
side (slowest rank per step, median over the timed steps of all repeats),
Piper / reference (`ratio_step_time`), Piper routed / dense
(`ratio_routed_over_dense_step_time`), peak CPU tensor memory of each
side, the losses of every step with the first step's checked between Piper
and the reference, and the all_to_all bytes per step and rank read from
the compiled plans (`sched.collective` ops of kind all_to_all) against the
closed form tokens x top_k x dim x 4 bytes x (n-1)/n per all_to_all (with
capacity_factor 1.0 the slot buffer [E, C, dim] has E*C = tokens*top_k
rows). `overlap`: under DualPipeV (pp=2 x ep=2, 4 processes), the fraction
of the all_to_alls' time in flight that the ranks spent computing rather
than waiting, read from the runtime's traces, for the plan with its
overlapped pairs and for the same schedule without them (`--no-overlap`
skips it).

Diagnostics (not the baseline): `--reference-experts per-block` runs the
reference's experts on each source rank's block separately and
`--reference-allreduce per-param` all-reduces each replicated gradient on
its own, as Piper's plan does.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    LR,
    PiperSide,
    Side,
    common_args,
    launch,
    machine,
    measure_peak,
    repeats,
    save_case,
    summarize,
    write_results,
)

DTYPE_BYTES = 4  # float32
AUX_LOSS = 0.01
CAPACITY_FACTOR = 1.0

OVERLAP_NOTE = (
    "DualPipeV pp=2 x ep=2 (4 processes) on the routed model with 4 layers, the same plan "
    "run with its overlapped pairs (order text of dualpipe_v(2, 4)) and with the same text "
    "without '&'; `hidden` = 1 - time blocked in all_to_all waits / time all_to_alls were in "
    "flight, over every rank and step, read from the runtime's traces (plan.run(trace=...)); "
    "on this CPU machine 4 ranks share 2 cores, so compute that overlaps a transfer also "
    "competes with it for a core: the step-time ratio is not what a GPU with its own copy "
    "engines would show")


def measure_overlap(routed_cfg, steps: int, warmup: int, timeout: float) -> dict:
    """The DualPipeV overlap of all_to_all with compute, read from the runtime's traces."""
    import piper
    from examples.moe import make_moe, moe_data
    from piper.runtime.trace import hidden_fraction, read_traces
    from piper.tasks import schedules as S

    cfg = replace(routed_cfg, layers=4)
    text = S.dualpipe_v(2, 4).text()
    batches = moe_batches(cfg, 2 * 4, warmup + steps)
    out: dict = {"note": OVERLAP_NOTE, "processes": 4, "steps": steps, "warmup": warmup}
    losses = {}
    for name, order in (("paired", text), ("unpaired", text.replace("&", " "))):
        model = make_moe(cfg)
        plan = piper.compile(model, moe_data(cfg), optimizer=torch.optim.AdamW(
            model.parameters(), lr=LR), strategy=[
                piper.split_backward(), piper.place(pp=2, placement="v"), piper.split(4),
                piper.order(text=order), piper.expert_parallel(2)])
        with tempfile.TemporaryDirectory() as tmp:
            result = plan.run(batches, trace=tmp, progress=False, timeout=timeout)
            traces = read_traces(tmp)
        per_step = [max(times[i] for times in result.seconds.values())
                    for i in range(warmup, warmup + steps)]
        losses[name] = result.losses
        out[name] = {"hidden_all_to_all": hidden_fraction(traces, "all_to_all"),
                     "median_step_s": statistics.median(per_step), "step_s": per_step}
    out["ratio_step_paired_over_unpaired"] = (out["paired"]["median_step_s"]
                                              / out["unpaired"]["median_step_s"])
    out["same_losses"] = losses["paired"] == losses["unpaired"]
    return out


# the reference as described above; the other choices make it do what Piper's
# plan does (a diagnostic: --reference-experts per-block --reference-allreduce per-param)
REFERENCE = {"experts": "concat", "allreduce": "flat"}


def moe_config(tiny: bool, routing: str):
    from examples.moe import MoEConfig

    if tiny:
        sizes = {"dim": 16, "hidden": 32, "layers": 2, "classes": 8, "batch": 16}
    else:
        sizes = {"dim": 256, "hidden": 512, "layers": 2, "classes": 16, "batch": 256}
    extra = ({"routing": "routed", "capacity_factor": CAPACITY_FACTOR, "aux_loss": AUX_LOSS}
             if routing == "routed" else {"routing": "dense"})
    return MoEConfig(experts=8, top_k=2, **sizes, **extra)


def moe_batches(cfg, nproc: int, count: int) -> list[dict[str, torch.Tensor]]:
    """`count` global batches of `batch * nproc` tokens (distinct seeds)."""
    from examples.moe import moe_data

    out = []
    for s in range(count):
        x, y = moe_data(replace(cfg, batch=cfg.batch * nproc), seed=100 + s)
        out.append({"input0": x, "input1": y})
    return out


def strategy(n: int) -> list:
    import piper

    return [piper.place(pp=1), piper.expert_parallel(n)]


# --------------------------------------------------------------------------
# the plan's all_to_all bytes
# --------------------------------------------------------------------------


def all_to_all_bytes(plan, n: int) -> dict:
    """Per rank: the all_to_all collectives of one step, their operand bytes
    and the part each rank sends to the others ((n-1)/n of the operand:
    block b of the operand stays on rank b)."""
    from piper.analysis.plan_check import programs
    from piper.dialects import sched

    per_rank = {}
    for rank, prog in sorted(programs(plan.module).items()):
        shapes = []
        total = 0
        kinds: dict[str, int] = {}
        for op in prog.body.block.ops:
            if isinstance(op, sched.CollectiveOp):
                kinds[op.kind.data] = kinds.get(op.kind.data, 0) + 1
            if isinstance(op, sched.CollectiveOp) and op.kind.data == "all_to_all":
                t = op.operands[0].type
                shape = list(t.get_shape())
                width = t.get_element_type().bitwidth // 8
                shapes.append(shape)
                total += math.prod(shape) * width
        per_rank[rank] = {"all_to_all_count": len(shapes), "operand_shapes": shapes,
                          "operand_bytes": total, "sent_to_other_ranks_bytes": total * (n - 1) // n,
                          "collectives": kinds}
    return per_rank


def dispatch_figures(routed_plan, dense_plan, cfg, n: int, reference_all_reduces: int) -> dict:
    routed = all_to_all_bytes(routed_plan, n)
    dense = all_to_all_bytes(dense_plan, n)
    r0, d0 = routed[0], dense[0]
    tokens = cfg.batch  # per rank
    per_a2a = tokens * cfg.top_k * cfg.dim * DTYPE_BYTES * (n - 1) / n
    per_step = 4 * cfg.layers  # per layer: dispatch and combine, forward and backward
    from piper.moe import capacity

    cap = capacity(tokens, cfg.experts, cfg.top_k, cfg.capacity_factor)
    return {
        "what": ("bytes of the all_to_all operands of one training step on one rank, read "
                 "from the compiled plan (sched.collective kind all_to_all); 'sent' is the "
                 "(n-1)/n of each operand that goes to other ranks. Per MoE layer a step has "
                 "4 all_to_alls: forward dispatch and combine, and their transposes in the "
                 "backward"),
        "capacity_factor": cfg.capacity_factor,
        "capacity_per_expert": cap,
        "slot_rows": cfg.experts * cap,
        "tokens_per_rank": tokens,
        "slot_rows_equal_tokens_x_top_k": cfg.experts * cap == tokens * cfg.top_k,
        "closed_form": "tokens x top_k x dim x 4 bytes x (n-1)/n per all_to_all "
                       "(the issue's 'hidden' is the model width, dim, that the slots carry)",
        "closed_form_per_all_to_all_bytes": per_a2a,
        "closed_form_dispatch_per_step_bytes": per_a2a * cfg.layers,
        "closed_form_all_per_step_bytes": per_a2a * per_step,
        "plan_all_to_all_count_per_step": r0["all_to_all_count"],
        "plan_operand_shapes": r0["operand_shapes"],
        "plan_sent_per_step_bytes": r0["sent_to_other_ranks_bytes"],
        "plan_sent_per_step_bytes_per_rank": [v["sent_to_other_ranks_bytes"]
                                              for v in routed.values()],
        "plan_dispatch_per_step_bytes": (r0["sent_to_other_ranks_bytes"] * cfg.layers
                                         / max(r0["all_to_all_count"], 1)),
        "plan_matches_closed_form": (r0["all_to_all_count"] == per_step
                                     and r0["sent_to_other_ranks_bytes"] == per_a2a * per_step
                                     and len({v["operand_bytes"] for v in routed.values()}) == 1),
        "plan_collectives_per_step_rank0": r0["collectives"],
        "reference_collectives_per_step": {"all_to_all": per_step,
                                           "all_reduce": reference_all_reduces},
        "dense_plan_all_to_all_count_per_step": d0["all_to_all_count"],
        "dense_plan_operand_shapes": d0["operand_shapes"],
        "dense_plan_sent_per_step_bytes": d0["sent_to_other_ranks_bytes"],
        "routed_over_dense_bytes": (r0["sent_to_other_ranks_bytes"]
                                    / max(d0["sent_to_other_ranks_bytes"], 1)),
    }


# --------------------------------------------------------------------------
# the PyTorch reference (worker side)
# --------------------------------------------------------------------------


class _LocalExperts(nn.Module):
    """This rank's rows of a layer's stacked experts."""

    def __init__(self, full: dict, prefix: str, lo: int, hi: int):
        super().__init__()
        for name in ("w1", "b1", "w2", "b2"):
            setattr(self, name, nn.Parameter(full[f"{prefix}.{name}"][lo:hi].clone()))


class _RefLayer(nn.Module):
    def __init__(self, cfg, full: dict, i: int, rank: int, world: int, per_block: bool):
        super().__init__()
        self.cfg, self.world, self.per_block = cfg, world, per_block
        p = f"layers.{i}"
        self.ln = nn.LayerNorm(cfg.dim)
        self.router = nn.Linear(cfg.dim, cfg.experts, bias=False)
        with torch.no_grad():
            self.ln.weight.copy_(full[f"{p}.ln.weight"])
            self.ln.bias.copy_(full[f"{p}.ln.bias"])
            self.router.weight.copy_(full[f"{p}.router.weight"])
        local = cfg.experts // world
        self.experts = _LocalExperts(full, f"{p}.experts", rank * local, (rank + 1) * local)

    def forward(self, x):
        from torch.distributed.nn.functional import all_to_all_single

        from piper import moe

        cfg, n = self.cfg, self.world
        h = self.ln(x)
        probs = torch.softmax(self.router(h), dim=-1)
        cap = moe.capacity(h.shape[0], cfg.experts, cfg.top_k, cfg.capacity_factor)
        routing = moe.route(probs, cfg.top_k, cap)
        slots = moe.dispatch(h, routing)  # [E, C, d], block b -> rank b
        recv = all_to_all_single(torch.empty_like(slots), slots.contiguous())
        local, d = cfg.experts // n, cfg.dim
        ex = self.experts
        if self.per_block:  # as Piper's plan does: each source's block [E/n, C, d] on its own
            back = torch.cat([torch.bmm(F.gelu(torch.bmm(blk, ex.w1) + ex.b1), ex.w2) + ex.b2
                              for blk in recv.split(local)])
        else:
            # [n sources, E/n, C, d] -> [E/n, n*C, d]: each local expert on every source's slots
            rows = recv.view(n, local, cap, d).transpose(0, 1).reshape(local, n * cap, d)
            y = torch.bmm(F.gelu(torch.bmm(rows, ex.w1) + ex.b1), ex.w2) + ex.b2
            back = y.view(local, n, cap, d).transpose(0, 1).reshape(cfg.experts, cap, d)
        out = all_to_all_single(torch.empty_like(back), back.contiguous())
        return x + moe.combine(out, routing), moe.load_balancing_loss(probs, routing)


class _RefModel(nn.Module):
    def __init__(self, cfg, full: dict, rank: int, world: int, per_block: bool = False):
        super().__init__()
        from examples.moe import Head

        self.cfg = cfg
        self.inp = nn.Linear(cfg.dim, cfg.dim)
        self.layers = nn.ModuleList(_RefLayer(cfg, full, i, rank, world, per_block)
                                    for i in range(cfg.layers))
        self.head = Head(cfg.dim, cfg.classes)
        with torch.no_grad():
            for name in ("inp.weight", "inp.bias", "head.fc.weight", "head.fc.bias"):
                self.get_parameter(name).copy_(full[name])

    def forward(self, x, targets):
        aux = None
        x = self.inp(x)
        for layer in self.layers:
            x, a = layer(x)
            aux = a if aux is None else aux + a
        return self.head(x, targets) + self.cfg.aux_loss * aux


class EPReference(Side):
    what = ("PyTorch expert parallelism written with torch.distributed.nn.functional."
            "all_to_all_single (gloo): E/n experts' rows per rank, piper.moe routing, slots "
            "[E, C, d] exchanged on dim 0, one bmm per projection over all received slots, "
            "replicated gradients all-reduced as one flat buffer, AdamW")

    def __init__(self, settings: dict, full: dict, rank: int, world: int):
        from examples.moe import MoEConfig

        self.cfg = MoEConfig(**settings["model"])
        self.full, self.rank, self.world = full, rank, world
        self.variant = settings.get("reference", dict(REFERENCE))
        if self.variant != REFERENCE:
            self.what += (f" -- variant: experts {self.variant['experts']}, "
                          f"all-reduce {self.variant['allreduce']}")

    def build(self) -> None:
        self.model = _RefModel(self.cfg, self.full, self.rank, self.world,
                               self.variant["experts"] == "per-block")
        self.replicated = [p for n, p in self.model.named_parameters() if ".experts." not in n]
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR)

    def step(self, batch):
        import torch.distributed as dist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        x, y = batch["input0"], batch["input1"]
        t = x.shape[0] // self.world
        part = slice(self.rank * t, (self.rank + 1) * t)
        loss = self.model(x[part], y[part])
        (loss / self.world).backward()  # the step's loss is the mean over the ranks' tokens
        grads = [p.grad for p in self.replicated]
        if self.variant["allreduce"] == "per-param":
            for g in grads:
                dist.all_reduce(g)
        else:
            flat = _flatten_dense_tensors(grads)
            dist.all_reduce(flat)
            for g, r in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
                g.copy_(r)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


def run_worker(case_dirs: str) -> int:
    """Per rank: the three sides in one process; writes out/rank{r}.json."""
    import datetime

    import torch.distributed as dist

    t_start = time.perf_counter()
    torch.manual_seed(0)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=600))
    rank, world = dist.get_rank(), dist.get_world_size()
    for case in case_dirs.split(","):
        phases = {"start": time.perf_counter() - t_start}
        case_dir = Path(case)
        settings = json.loads((case_dir / "bench.json").read_text())
        torch.set_num_threads(settings["threads"])
        batches = torch.load(case_dir / "data.pt")
        steps, warmup = settings["steps"], settings["warmup"]
        # Piper's runtimes create their groups first, in the same order on every rank
        routed = PiperSide(case_dir, rank, world, steps)
        dense = PiperSide(Path(settings["dense_dir"]), rank, world, steps)
        dense.what += " (dense plan: every expert on every token)"
        ref = EPReference(settings, routed.full, rank, world)
        sides = {"torch": ref, "piper": routed, "piper_dense": dense}
        phases["setup"] = time.perf_counter() - t_start
        rec = {s: {"what": side.what, "seconds": [], "losses": []} for s, side in sides.items()}
        mem_steps = 2
        for name, side in sides.items():
            peak, losses = measure_peak(side, batches[:mem_steps], dist.barrier)
            rec[name]["peak_alloc_bytes"] = peak
            rec[name]["losses"].extend(losses)
            phases[f"memory_{name}"] = time.perf_counter() - t_start
        names = list(sides)
        for i in range(warmup + steps):
            order = names[i % 3:] + names[:i % 3]  # who goes first rotates
            batch = batches[(mem_steps + i) % len(batches)]
            for name in order:
                dist.barrier()
                t0 = time.perf_counter()
                loss = sides[name].step(batch)
                dt = time.perf_counter() - t0
                rec[name]["losses"].append(loss)
                if i >= warmup:
                    rec[name]["seconds"].append(dt)
        phases["timed"] = time.perf_counter() - t_start
        for name, side in sides.items():
            rec[name].update(side.extra())
        (case_dir / "out").mkdir(exist_ok=True)
        (case_dir / "out" / f"rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "sides": rec, "phases_s": phases}))
        del sides, ref, routed, dense
        gc.collect()
        dist.barrier()
    dist.destroy_process_group()
    return 0


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def first_step_losses(case: dict) -> dict:
    p, t = case["piper"]["losses"][0], case["torch"]["losses"][0]
    rel = abs(p - t) / max(abs(t), 1e-12)
    return {"piper": p, "reference": t, "rel_diff": rel, "tolerance": 1e-5,
            "agree": rel <= 1e-5}


def plot(doc: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = doc["cases"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(4 + 2.6 * len(cases), 4))
    w = 0.27
    sides = [("torch", "PyTorch EP reference"), ("piper", "Piper routed"),
             ("piper_dense", "Piper dense")]
    for j, (key, label) in enumerate(sides):
        xs = [i + (j - 1) * w for i in range(len(cases))]
        ax1.bar(xs, [c[key]["median_step_s"] * 1e3 for c in cases], w, label=label)
        ax2.bar(xs, [max(c[key]["peak_bytes_per_rank"]) / 2**20 for c in cases], w, label=label)
    for i, c in enumerate(cases):
        ax1.text(i, c["piper"]["median_step_s"] * 1e3, f"{c['ratio_step_time']:.2f}x",
                 ha="center", va="bottom", fontsize=8)
    names = [c["case"] for c in cases]
    ax1.set_xticks(range(len(cases)), names)
    ax1.set_ylabel("median step time (ms)")
    ax1.legend(fontsize=7)
    ax2.set_xticks(range(len(cases)), names)
    ax2.set_ylabel("peak tensor memory, largest rank (MiB)")
    ax2.legend(fontsize=7)
    fig.suptitle(f"moe: Piper expert_parallel vs PyTorch all_to_all_single reference "
                 f"({doc['machine']['cpu']}, {doc['machine']['cores']} cores)", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap, steps=10)
    ap.add_argument("--nproc", default="", help="ep sizes = process counts, comma-separated "
                                                "(default 2,4; 2 with --tiny)")
    ap.add_argument("--no-overlap", action="store_true",
                    help="skip the DualPipeV overlap measurement")
    ap.add_argument("--reference-experts", choices=["concat", "per-block"], default="concat",
                    help="reference: run the local experts on all received slots as one bmm "
                         "(concat, the default) or on each source rank's block separately "
                         "(per-block, as Piper's plan does; a diagnostic)")
    ap.add_argument("--reference-allreduce", choices=["flat", "per-param"], default="flat",
                    help="reference: all-reduce the replicated gradients as one flat buffer "
                         "(default) or one all_reduce per parameter (as Piper's plan does)")
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args.worker)
    reference = {"experts": args.reference_experts, "allreduce": args.reference_allreduce}

    import piper
    from examples.moe import make_moe, moe_data
    from piper.directives.strategy import to_json

    routed_cfg = moe_config(args.tiny, "routed")
    dense_cfg = moe_config(args.tiny, "dense")
    nprocs = [int(v) for v in (args.nproc or ("2" if args.tiny else "2,4")).split(",")]
    count = 2 + args.warmup + args.steps
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in nprocs:
            plans, compile_s = {}, {}
            replicated = sum(".experts." not in k for k, _ in make_moe(routed_cfg).named_parameters())
            batches = moe_batches(routed_cfg, n, count)
            for kind, cfg in (("routed", routed_cfg), ("dense", dense_cfg)):
                model = make_moe(cfg)
                t0 = time.perf_counter()
                plans[kind] = piper.compile(model, moe_data(cfg), optimizer=torch.optim.AdamW(
                    model.parameters(), lr=LR), strategy=strategy(n))
                compile_s[kind] = time.perf_counter() - t0
            case_dir, dense_dir = Path(tmp) / f"ep{n}", Path(tmp) / f"ep{n}_dense"
            settings = {"model": asdict(routed_cfg), "lr": LR, "steps": args.steps,
                        "warmup": args.warmup, "threads": args.threads,
                        "dense_dir": str(dense_dir), "reference": reference}
            plans["dense"].save(str(dense_dir))
            save_case(case_dir, plans["routed"], batches, settings)
            ranks = launch(__file__, [case_dir], n, args.threads, args.timeout,
                           repeats(args))[0]
            main_part = summarize(ranks, ("torch", "piper"))
            dense_part = summarize(ranks, ("piper_dense", "piper"))
            case = {"case": f"ep{n}", "nproc": n,
                    "piper_strategy": json.loads(to_json(strategy(n))),
                    "compile_s": compile_s, **main_part,
                    "piper_dense": dense_part["piper_dense"],
                    "ratio_routed_over_dense_step_time": dense_part["ratio_step_time"],
                    "ratio_routed_over_dense_peak_bytes": dense_part["ratio_peak_bytes"],
                    "dispatch_bytes": dispatch_figures(
                        plans["routed"], plans["dense"], routed_cfg, n,
                        1 if reference["allreduce"] == "flat" else replicated)}
            case["first_step_loss"] = first_step_losses(case)
            cases.append(case)
    doc = {
        "benchmark": "moe",
        "baseline": "PyTorch expert parallelism written with all_to_all_single (gloo)",
        "reference_variant": reference,
        "machine": machine(max(c["nproc"] for c in cases), args.threads,
                           shared=not args.quiet_machine),
        "model": {"name": "examples.moe", "routed": asdict(routed_cfg),
                  "dense": asdict(dense_cfg), "tokens_per_rank": routed_cfg.batch},
        "optimizer": f"AdamW(lr={LR})",
        "steps": args.steps, "warmup": args.warmup,
        "ratios": "ratio_step_time = Piper routed / reference; "
                  "ratio_routed_over_dense_step_time = Piper routed / Piper dense",
        "overlap": None if args.no_overlap else measure_overlap(
            routed_cfg, args.steps, args.warmup, args.timeout),
        "cases": cases,
    }
    path = write_results("moe", args.out, doc, plot=False)
    if not args.no_plot:
        plot(doc, path.with_suffix(".png"))
    for c in cases:
        d = c["dispatch_bytes"]
        print(f"{c['case']}: Piper/reference step x{c['ratio_step_time']:.3f} "
              f"({c['piper']['median_step_s'] * 1e3:.1f} / {c['torch']['median_step_s'] * 1e3:.1f}"
              f" ms), routed/dense x{c['ratio_routed_over_dense_step_time']:.3f}, "
              f"peak x{c['ratio_peak_bytes']:.3f}, first loss {c['first_step_loss']['piper']:.6f}"
              f" vs {c['first_step_loss']['reference']:.6f} "
              f"(rel {c['first_step_loss']['rel_diff']:.1e}), all_to_all sent "
              f"{d['plan_sent_per_step_bytes']} B/step/rank, closed form "
              f"{d['closed_form_all_per_step_bytes']:.0f} (match {d['plan_matches_closed_form']})")
    if doc["overlap"]:
        o = doc["overlap"]
        print(f"DualPipeV pp2 x ep2: all_to_all hidden {o['paired']['hidden_all_to_all']:.2f} "
              f"with pairs, {o['unpaired']['hidden_all_to_all']:.2f} without; step "
              f"x{o['ratio_step_paired_over_unpaired']:.3f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
