"""Tensor parallelism: Piper `tensor_parallel(n)` against PyTorch's DTensor
`parallelize_module`, side by side.

    python bench/tp_bench.py                 # tp=2 and tp=4
    python bench/tp_bench.py --nproc 2 --tiny --steps 1 --warmup 0

Both sides train the benchmark GPT (dim 256, 4 heads, 4 layers, 8
sequences of 64 tokens, vocabulary 256, AdamW) on the same batches, in the
same torchrun job on the same processes, from the same initial weights,
with the same Megatron plan (`PLAN`): per block, the fused `attn.qkv` and
`mlp.fc` column-wise, `attn.proj` and `mlp.proj` row-wise; embeddings,
layer norms and the head replicated. Every tp rank reads the whole batch
(tensor parallelism does not split tokens).

- Piper: `[place(pp=1), tensor_parallel(n, plan=PLAN)]` (`plan=None` finds the same
  plan: the driver compiles both and records whether their IR is the
  same), run by `RankRuntime.step`.
- PyTorch: `parallelize_module` over a 1-D CPU device mesh (gloo) with
  `ColwiseParallel()` / `RowwiseParallel()` on the same four Linears per
  block, then `torch.optim.AdamW` over the DTensor shards and the plain
  replicated parameters. PyTorch has no "colwise in groups" for a fused
  Linear, so the fused `qkv` weight's rows are reordered before it is
  sharded (rank b's block is its heads' rows of q, of k and of v, as
  Piper's `groups 3` layout) and the attention takes its local heads from
  the local width (`view(b, t, -1, head_dim)`, as torchtitan's attention
  does). The head stays replicated on both sides: Piper has no vocabulary
  layout yet, so PyTorch's `loss_parallel` is not used (`loss_parallel`
  in the JSON says so).

Recorded per case (bench/results/tp.json, tp.png; bench/harness.py says
how time and memory are measured): step time (slowest rank per step,
median over the timed steps of all repeats) and its ratio Piper /
PyTorch, the peak CPU tensor memory ratio, every step's loss on both sides
and their largest relative difference, and `tp_bytes`: the tp collectives
of one step read from Piper's compiled plan (`sched.collective` ops) and
counted on the PyTorch side (its functional collectives, in one extra step
after the timed ones), against the closed form: per layer 2 all-reduces of
the activation [tokens, dim] in the forward and 2 in the backward.
`sequence` (sequence parallelism) is `null` until Piper has it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import types
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    LR,
    Side,
    base_settings,
    common_args,
    gpt_batches,
    gpt_config,
    launch,
    machine,
    make_model,
    ratio_line,
    repeats,
    run_worker,
    save_case,
    summarize,
    write_results,
)

# the Megatron plan of the GPT example, in parallelize_module's vocabulary
PLAN = {"blocks.*.attn.qkv": "colwise", "blocks.*.attn.proj": "rowwise",
        "blocks.*.mlp.fc": "colwise", "blocks.*.mlp.proj": "rowwise"}
DTYPE_BYTES = 4  # float32

SEQUENCE_NOTE = ("sequence parallelism (tensor_parallel(n, sequence=True)) is not in Piper "
                 "yet: no case is run; this key gets its cases when it lands")
LOSS_PARALLEL_NOTE = ("not used: Piper has no vocabulary layout yet (a vocab-parallel head "
                      "with a parallel cross-entropy), so the head, the final norm and the "
                      "embeddings stay replicated on both sides and each tp rank computes the "
                      "whole loss")

DEVIATIONS = [
    ("The fused qkv Linear: Piper splits its weight colwise in 3 groups (each rank its heads' "
     "rows of q, of k and of v). PyTorch's ColwiseParallel has no groups, so the baseline "
     "reorders the weight's rows before sharding (rank b's block = q_b, k_b, v_b) and its "
     "attention views the local width as its local heads; same weights, same arithmetic."),
    ("PyTorch's ColwiseParallel/RowwiseParallel run each Linear as DTensor ops (sharding "
     "propagation per op on every call); Piper's plan is plain aten calls on local shards "
     "with the collectives placed at compile time."),
]


def strategy(n: int, plan: dict | None = PLAN) -> list:
    import piper

    return [piper.place(pp=1), piper.tensor_parallel(n, plan=plan)]


# --------------------------------------------------------------------------
# the PyTorch baseline (worker side)
# --------------------------------------------------------------------------


def _grouped_rows(w: torch.Tensor, n: int) -> torch.Tensor:
    """The fused qkv weight [3C, C] with its rows reordered so that a plain
    split in n blocks gives rank b the rows of its heads of q, k and v."""
    three_c, c = w.shape
    return w.reshape(3, n, three_c // (3 * n), c).transpose(0, 1).reshape(three_c, c)


def _local_heads_forward(self, x):
    """CausalSelfAttention.forward on a colwise qkv shard: the local width
    holds the local heads (examples/gpt.py's forward takes them from
    `self.heads`, which a shard does not have)."""
    b, t, c = x.shape
    hd = c // self.heads
    q, k, v = self.qkv(x).chunk(3, dim=2)
    q = q.view(b, t, -1, hd).transpose(1, 2)
    k = k.view(b, t, -1, hd).transpose(1, 2)
    v = v.view(b, t, -1, hd).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
    causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
    att = torch.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
    y = (att @ v).transpose(1, 2).reshape(b, t, -1)
    return self.proj(y)


class DTensorTPSide(Side):
    what = ("torch DTensor parallelize_module (ColwiseParallel on attn.qkv and mlp.fc, "
            "RowwiseParallel on attn.proj and mlp.proj, 1-D CPU mesh, gloo) + AdamW")

    def __init__(self, settings: dict, full: dict, rank: int, world: int):
        from torch.distributed.device_mesh import init_device_mesh

        self.settings, self.full, self.rank, self.world = settings, full, rank, world
        self.mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tp",))
        self.collectives: dict = {}

    def build(self) -> None:
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            RowwiseParallel,
            parallelize_module,
        )

        model = make_model(self.settings, self.full)
        plan = {}
        for i, block in enumerate(model.blocks):
            with torch.no_grad():
                block.attn.qkv.weight.copy_(_grouped_rows(block.attn.qkv.weight, self.world))
            block.attn.forward = types.MethodType(_local_heads_forward, block.attn)
            plan.update({f"blocks.{i}.attn.qkv": ColwiseParallel(),
                         f"blocks.{i}.attn.proj": RowwiseParallel(),
                         f"blocks.{i}.mlp.fc": ColwiseParallel(),
                         f"blocks.{i}.mlp.proj": RowwiseParallel()})
        self.model = parallelize_module(model, self.mesh, plan)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.settings["lr"])

    def step(self, batch):
        loss = self.model(batch["input0"], batch["input1"])
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()

    def extra(self) -> dict:
        """One more (untimed) step, counting the collectives DTensor issues."""
        batch = self.settings.get("count_batch")
        if batch is None:
            return {}
        data = torch.load(batch)
        mode = _collective_mode()
        with mode:
            self.step(data)
        return {"collectives": mode.summary()}


def _collective_mode():
    """CommDebugMode that also adds up each collective's input bytes."""
    from torch.distributed.tensor.debug import CommDebugMode

    class Counting(CommDebugMode):
        def __init__(self):
            super().__init__()
            self.bytes: dict[str, int] = defaultdict(int)
            self.count: dict[str, int] = defaultdict(int)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = super().__torch_dispatch__(func, types, args, kwargs)
            if out is NotImplemented or isinstance(func, torch._ops.HigherOrderOperator):
                return out
            name = func._overloadpacket.__name__
            if name in ("all_reduce", "all_reduce_", "reduce_scatter_tensor",
                        "all_gather_into_tensor", "all_to_all_single", "broadcast"):
                t = args[0]
                kind = name.rstrip("_")
                self.count[kind] += 1
                self.bytes[kind] += t.numel() * t.element_size()
            return out

        def summary(self) -> dict:
            return {"count": dict(self.count), "operand_bytes": dict(self.bytes)}

    return Counting()


# --------------------------------------------------------------------------
# the tp collectives' bytes
# --------------------------------------------------------------------------


def plan_collectives(plan) -> dict[int, dict]:
    """Per rank: count and operand bytes of each collective kind in one step."""
    from piper.analysis.plan_check import programs
    from piper.dialects import sched

    out = {}
    for rank, prog in sorted(programs(plan.module).items()):
        count: dict[str, int] = defaultdict(int)
        nbytes: dict[str, int] = defaultdict(int)
        for op in prog.body.block.ops:
            if isinstance(op, sched.CollectiveOp):
                count[op.kind.data] += 1
                nbytes[op.kind.data] += op.bytes
        out[rank] = {"count": dict(count), "operand_bytes": dict(nbytes)}
    return out


def bytes_figures(plan, cfg, n: int, torch_collectives: dict | None) -> dict:
    tokens = cfg.batch * cfg.seq
    per = tokens * cfg.dim * DTYPE_BYTES
    count = 4 * cfg.layers
    closed = count * per
    ranks = plan_collectives(plan)
    r0 = ranks[0]
    plan_count = r0["count"].get("all_reduce", 0)
    plan_bytes = r0["operand_bytes"].get("all_reduce", 0)
    out = {
        "what": ("all-reduce operand bytes of one training step on one rank: Piper's read from "
                 "the compiled plan (sched.collective), PyTorch's counted on its functional "
                 "collectives in one extra step; 'ring_sent' is what a ring all-reduce sends "
                 "per rank, 2(n-1)/n of the operand"),
        "closed_form": "layers x 4 all-reduces (2 forward, 2 backward) x tokens x dim x 4 bytes",
        "tokens": tokens,
        "closed_form_per_all_reduce_bytes": per,
        "closed_form_all_reduces_per_step": count,
        "closed_form_per_step_bytes": closed,
        "closed_form_ring_sent_per_step_bytes": closed * 2 * (n - 1) / n,
        "piper_collectives_per_step_rank0": r0,
        "piper_all_reduces_per_step": plan_count,
        "piper_per_step_bytes": plan_bytes,
        "piper_ring_sent_per_step_bytes": plan_bytes * 2 * (n - 1) / n,
        "piper_same_on_every_rank": len({json.dumps(v, sort_keys=True)
                                         for v in ranks.values()}) == 1,
        "piper_matches_closed_form": plan_count == count and plan_bytes == closed
                                     and set(r0["count"]) == {"all_reduce"},
    }
    if torch_collectives is not None:
        t_count = torch_collectives["count"].get("all_reduce", 0)
        t_bytes = torch_collectives["operand_bytes"].get("all_reduce", 0)
        out.update({
            "torch_collectives_per_step_rank0": torch_collectives,
            "torch_all_reduces_per_step": t_count,
            "torch_per_step_bytes": t_bytes,
            "torch_matches_closed_form": t_count == count and t_bytes == closed,
        })
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap, steps=10)
    ap.add_argument("--nproc", default="", help="tp sizes = process counts, comma-separated "
                                                "(default 2,4; 2 with --tiny)")
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args.worker, DTensorTPSide)

    import piper
    from examples.gpt import gpt_data, make_gpt
    from piper.directives.strategy import compile_plan, to_json
    from piper.ir import print_module

    cfg = gpt_config(args.tiny, layers=2 if args.tiny else 4)
    nprocs = [int(v) for v in (args.nproc or ("2" if args.tiny else "2,4")).split(",")]
    count = 2 + args.warmup + args.steps
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in nprocs:
            model = make_gpt(cfg)
            t0 = time.perf_counter()
            plan = piper.compile(model, gpt_data(cfg), optimizer=torch.optim.AdamW(
                model.parameters(), lr=LR), strategy=strategy(n))
            compile_s = {"explicit": time.perf_counter() - t0}
            # plan=None on the same captured step (no second capture): Piper
            # finds the plan itself
            t0 = time.perf_counter()
            auto = compile_plan(plan.captured.module.clone(), strategy(n, None))
            compile_s["auto"] = time.perf_counter() - t0
            case_dir = Path(tmp) / f"tp{n}"
            batches = gpt_batches(cfg, cfg.batch, count + 1)
            settings = {**base_settings(args, cfg), "count_batch": str(Path(tmp) / f"count{n}.pt")}
            torch.save(batches[-1], settings["count_batch"])
            save_case(case_dir, plan, batches[:-1], settings)
            ranks = launch(__file__, [case_dir], n, args.threads, args.timeout, repeats(args))[0]
            part = summarize(ranks)
            case = {"case": f"tp{n}", "nproc": n,
                    "piper_strategy": json.loads(to_json(strategy(n))),
                    "auto_plan_same_ir": plan.text() == print_module(auto),
                    "compile_s": compile_s, **part,
                    "tp_bytes": bytes_figures(plan, cfg, n,
                                              ranks[0]["sides"]["torch"].get("collectives"))}
            case["losses_agree"] = (part["loss_max_rel_diff"] is not None
                                    and part["loss_max_rel_diff"] <= 1e-5)
            cases.append(case)
    doc = {
        "benchmark": "tp",
        "baseline": "torch DTensor parallelize_module (ColwiseParallel / RowwiseParallel)",
        "plan": PLAN,
        "deviations": DEVIATIONS,
        "loss_parallel": None,
        "loss_parallel_note": LOSS_PARALLEL_NOTE,
        "sequence": None,
        "sequence_note": SEQUENCE_NOTE,
        "machine": machine(max(c["nproc"] for c in cases), args.threads,
                           shared=not args.quiet_machine),
        "model": {"name": "examples.gpt", **asdict(cfg), "tokens_per_step": cfg.batch * cfg.seq},
        "optimizer": f"AdamW(lr={LR})",
        "steps": args.steps, "warmup": args.warmup,
        "ratios": "ratio_step_time, ratio_peak_bytes = Piper / PyTorch",
        "cases": cases,
    }
    path = write_results("tp", args.out, doc, plot=not args.no_plot)
    print(ratio_line(doc))
    for c in cases:
        b = c["tp_bytes"]
        print(f"{c['case']}: all-reduce bytes per step: Piper {b['piper_per_step_bytes']} "
              f"({b['piper_all_reduces_per_step']}), PyTorch {b.get('torch_per_step_bytes')} "
              f"({b.get('torch_all_reduces_per_step')}), closed form "
              f"{b['closed_form_per_step_bytes']} ({b['closed_form_all_reduces_per_step']})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
