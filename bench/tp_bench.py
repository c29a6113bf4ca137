"""Tensor and sequence parallelism: Piper `tensor_parallel(n)` against
PyTorch's DTensor `parallelize_module` with `loss_parallel`, side by side.

    python bench/tp_bench.py                 # tp=2 and tp=4, each without and with sp
    python bench/tp_bench.py --nproc 2 --tiny --steps 1 --warmup 0

Both sides train the benchmark GPT (dim 256, 4 heads, 4 layers, 8
sequences of 64 tokens, vocabulary 256, untied head, AdamW) on the same
batches, in the same torchrun job on the same processes, from the same
initial weights, with the same Megatron plan (`PLAN`): per block, the
fused `attn.qkv` and `mlp.fc` column-wise, `attn.proj` and `mlp.proj`
row-wise; the token embedding split over the vocabulary and the head
loss-parallel (logits split over the vocabulary, the cross entropy on the
shards); the position embedding and the layer norms replicated. Every tp
rank reads the whole batch.

Each tp size runs twice in one job: `tpN` (activations between the
Linear pairs whole on every rank, one all-reduce per pair each way) and
`tpN+sp` (sequence parallelism: the norms, residual adds and the head's
input sharded along the sequence, each all-reduce a reduce-scatter plus an
all-gather).

- Piper: `[place(pp=1), tensor_parallel(n, plan=PLAN, sequence=sp)]`, run
  by `RankRuntime.step`. `plan=None` (which splits the blocks only)
  is compiled on the same captured step and compared with the blocks' part
  of `PLAN` (`auto_plan_same_ir`).
- PyTorch: `parallelize_module` over a 1-D CPU device mesh (gloo), as
  torchtitan parallelizes its Llama: `ColwiseParallel()` /
  `RowwiseParallel()` on the four Linears per block,
  `RowwiseParallel(input_layouts=Replicate())` on the token embedding,
  `ColwiseParallel(output_layouts=Shard(-1), use_local_output=False)` on
  the head and the forward and backward inside `loss_parallel()`; with sp,
  `SequenceParallel()` on the norms, `PrepareModuleInput` (sequence shards
  -> replicated) on the attention and the MLP, the rowwise Linears and the
  token embedding giving `Shard(1)`, the head reading `Shard(1)`. Then
  `torch.optim.AdamW` over the DTensor and plain parameters. What it needs
  beyond torchtitan's recipe (the fused `qkv`, the learned position
  embedding) is in `DEVIATIONS`.

Recorded per case (bench/results/tp.json, tp.png; bench/harness.py says
how time and memory are measured): step time (slowest rank per step,
median over the timed steps of all repeats) and its ratio Piper /
PyTorch, the peak CPU tensor memory ratio, every step's loss on both sides
and their largest relative difference, and `tp_bytes`: the tp collectives
of one step read from Piper's compiled plan (`sched.collective` ops) and
counted on the PyTorch side (its functional collectives, in one extra step
after the timed ones), against the closed form: 4 per layer (2 forward,
2 backward) plus the embedding's (forward) and the head's (backward)
collectives of the activation [tokens, dim]: all-reduces, or with sp the
same number of reduce-scatters and of all-gathers (the same bytes sent).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import types
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

# the Megatron plan of the GPT example's blocks, in parallelize_module's vocabulary
BLOCK_PLAN = {"blocks.*.attn.qkv": "colwise", "blocks.*.attn.proj": "rowwise",
              "blocks.*.mlp.fc": "colwise", "blocks.*.mlp.proj": "rowwise"}
# and its embedding and head, as torchtitan's Llama plan has them
PLAN = {**BLOCK_PLAN, "embed.tok": "vocab", "head.proj": "loss"}
DTYPE_BYTES = 4  # float32

LOSS_PARALLEL_NOTE = (
    "every case: the head's weight split over the vocabulary and the cross entropy computed "
    "on the logits' vocabulary shards (Piper's 'loss' layout; PyTorch's ColwiseParallel("
    "output_layouts=Shard(-1), use_local_output=False) on head.proj with the forward and "
    "backward inside loss_parallel()), the token embedding split over the vocabulary "
    "(Piper's 'vocab'; PyTorch's RowwiseParallel(input_layouts=Replicate()))")
SEQUENCE_NOTE = (
    "the '+sp' cases: Piper's tensor_parallel(n, plan, sequence=True); PyTorch's "
    "SequenceParallel() on every layer norm, PrepareModuleInput(Shard(1) -> Replicate()) on "
    "attn and mlp, RowwiseParallel(output_layouts=Shard(1)) on attn.proj, mlp.proj and the "
    "token embedding, ColwiseParallel(input_layouts=Shard(1), ...) on the head")

DEVIATIONS = [
    ("The fused qkv Linear: Piper splits its weight colwise in 3 groups (each rank its heads' "
     "rows of q, of k and of v). PyTorch's ColwiseParallel has no groups, so the baseline "
     "reorders the weight's rows before sharding (rank b's block = q_b, k_b, v_b) and its "
     "attention views the local width as its local heads; same weights, same arithmetic."),
    ("PyTorch's ColwiseParallel/RowwiseParallel run each Linear as DTensor ops (sharding "
     "propagation per op on every call); Piper's plan is plain aten calls on local shards "
     "with the collectives placed at compile time."),
    ("sp, the learned position embedding (torchtitan's Llama has none): the baseline's "
     "embedding looks up only its rank's positions, through SequenceParallel(sequence_dim=0) "
     "on embed.pos (its weight a replicated DTensor, its gradient all-reduced: [seq, dim]); "
     "Piper takes the rank's rows of the whole lookup (a local slice) and all-gathers the "
     "position gradient's shards ([seq/n, dim] each)."),
    ("sp, the backward of a colwise Linear: Piper saves its input's sequence shard and "
     "all-gathers it again for the weight's gradient (Megatron's choice: less activation "
     "memory, one more all-gather per colwise Linear and the head), PyTorch's autograd saves "
     "the gathered input; tp_bytes counts both as they are."),
    ("sp, replicated parameters used on sequence shards (layer norms, rowwise biases): both "
     "sides all-reduce their gradients, one all-reduce per tensor (DTensor's Partial -> "
     "Replicate, Piper's partial sum), small next to the activations (tp_bytes 'other')."),
]


def strategy(n: int, plan: dict | None = PLAN, sequence: bool = False) -> list:
    import piper

    return [piper.place(pp=1), piper.tensor_parallel(n, plan=plan, sequence=sequence)]


def case_name(n: int, sequence: bool) -> str:
    return f"tp{n}+sp" if sequence else f"tp{n}"


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


def _sequence_embed_forward(self, idx):
    """Embedding.forward with sequence parallelism: the token lookup comes
    back as this rank's positions (`Shard(1)`, local), so the position
    embedding looks up those positions only (SequenceParallel on `pos`
    takes the local ids as the sequence shard of `arange(seq)`)."""
    x = self.tok(idx)
    t = x.size(1)
    pos = torch.arange(self.tp_rank * t, (self.tp_rank + 1) * t, device=idx.device)
    return x + self.pos(pos)


class DTensorTPSide(Side):
    what = ("torch DTensor parallelize_module (ColwiseParallel on attn.qkv and mlp.fc, "
            "RowwiseParallel on attn.proj and mlp.proj and the token embedding, ColwiseParallel "
            "to Shard(-1) on the head under loss_parallel{sp}, 1-D CPU mesh, gloo) + AdamW")

    def __init__(self, settings: dict, full: dict, rank: int, world: int):
        from torch.distributed.device_mesh import init_device_mesh

        self.settings, self.full, self.rank, self.world = settings, full, rank, world
        self.sequence = bool(settings.get("sequence"))
        self.what = self.what.format(
            sp="; SequenceParallel on the norms and the position embedding, PrepareModuleInput "
               "on attn and mlp" if self.sequence else "")
        self.mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tp",))

    def build(self) -> None:
        from torch.distributed.tensor import Replicate, Shard
        from torch.distributed.tensor.parallel import (
            ColwiseParallel,
            PrepareModuleInput,
            RowwiseParallel,
            SequenceParallel,
            parallelize_module,
        )

        sp = self.sequence
        model = make_model(self.settings, self.full)
        # the activations between the Linear pairs: sequence shards or whole
        between = Shard(1) if sp else Replicate()
        plan = {"embed.tok": RowwiseParallel(input_layouts=Replicate(), output_layouts=between),
                "head.proj": ColwiseParallel(input_layouts=between, output_layouts=Shard(-1),
                                             use_local_output=False)}
        if sp:
            model.embed.tp_rank = self.mesh.get_local_rank()
            model.embed.forward = types.MethodType(_sequence_embed_forward, model.embed)
            plan.update({"embed.pos": SequenceParallel(sequence_dim=0, use_local_output=True),
                         "head.ln": SequenceParallel()})
        for i, block in enumerate(model.blocks):
            with torch.no_grad():
                block.attn.qkv.weight.copy_(_grouped_rows(block.attn.qkv.weight, self.world))
            block.attn.forward = types.MethodType(_local_heads_forward, block.attn)
            plan.update({f"blocks.{i}.attn.qkv": ColwiseParallel(),
                         f"blocks.{i}.attn.proj": RowwiseParallel(output_layouts=between),
                         f"blocks.{i}.mlp.fc": ColwiseParallel(),
                         f"blocks.{i}.mlp.proj": RowwiseParallel(output_layouts=between)})
            if sp:
                gather = PrepareModuleInput(input_layouts=(Shard(1),),
                                            desired_input_layouts=(Replicate(),))
                plan.update({f"blocks.{i}.ln1": SequenceParallel(),
                             f"blocks.{i}.attn": gather,
                             f"blocks.{i}.ln2": SequenceParallel(),
                             f"blocks.{i}.mlp": gather})
        self.model = parallelize_module(model, self.mesh, plan)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.settings["lr"])

    def step(self, batch):
        from torch.distributed.tensor.parallel import loss_parallel

        with loss_parallel():
            loss = self.model(batch["input0"], batch["input1"])
            loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.to_local().item()

    def extra(self) -> dict:
        """One more (untimed) step, listing the collectives DTensor issues."""
        batch = self.settings.get("count_batch")
        if batch is None:
            return {}
        data = torch.load(batch)
        mode = _collective_mode()
        with mode:
            self.step(data)
        return {"collectives": mode.calls}


# functional collectives by the names Piper's plans give them
_KINDS = {"all_reduce": "all_reduce", "all_reduce_": "all_reduce",
          "reduce_scatter_tensor": "reduce_scatter", "all_gather_into_tensor": "all_gather",
          "all_to_all_single": "all_to_all", "broadcast": "broadcast"}


def _collective_mode():
    """CommDebugMode that also lists each collective's kind and input bytes."""
    from torch.distributed.tensor.debug import CommDebugMode

    class Counting(CommDebugMode):
        def __init__(self):
            super().__init__()
            self.calls: list[tuple[str, int]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = super().__torch_dispatch__(func, types, args, kwargs)
            if out is NotImplemented or isinstance(func, torch._ops.HigherOrderOperator):
                return out
            kind = _KINDS.get(func._overloadpacket.__name__)
            if kind is not None:
                t = args[0]
                self.calls.append((kind, t.numel() * t.element_size()))
            return out

    return Counting()


# --------------------------------------------------------------------------
# the tp collectives' bytes
# --------------------------------------------------------------------------

# what a ring sends per rank, as a multiple of the operand's bytes
_RING_SENT = {"all_reduce": lambda n: 2 * (n - 1) / n,
              "reduce_scatter": lambda n: (n - 1) / n,   # operand: the whole tensor
              "all_gather": lambda n: n - 1}              # operand: one rank's shard


def plan_collectives(plan) -> dict[int, list[tuple[str, int]]]:
    """Per rank: (kind, operand bytes) of each collective of one step, in order."""
    from piper.analysis.plan_check import programs
    from piper.dialects import sched

    return {rank: [(op.kind.data, op.bytes) for op in prog.body.block.ops
                   if isinstance(op, sched.CollectiveOp)]
            for rank, prog in sorted(programs(plan.module).items())}


def tally(calls: list[tuple[str, int]], activation: int, n: int) -> dict:
    """Count, operand bytes and ring bytes sent per rank of each kind,
    split in the activation collectives (an all-reduce or reduce-scatter
    of `activation` bytes, an all-gather of its 1/n shard) and the others
    (the loss' row statistics, replicated parameters' gradients)."""
    out: dict = {"activation": {}, "other": {}}
    for kind, nbytes in calls:
        whole = nbytes * (n if kind == "all_gather" else 1)
        part = out["activation" if whole == activation else "other"]
        rec = part.setdefault(kind, {"count": 0, "operand_bytes": 0, "sent_per_rank_bytes": 0.0})
        rec["count"] += 1
        rec["operand_bytes"] += nbytes
        rec["sent_per_rank_bytes"] += nbytes * _RING_SENT.get(kind, lambda n: 1)(n)
    return out


def closed_form(cfg, n: int, sequence: bool) -> dict:
    """The activation collectives of one step: 4 per layer (the attention's
    and the MLP's, forward and backward), the embedding's (forward) and the
    head's (the gradient of its input): all-reduces of [tokens, dim], or
    with sequence parallelism one reduce-scatter and one all-gather each."""
    whole = cfg.batch * cfg.seq * cfg.dim * DTYPE_BYTES
    count = 4 * cfg.layers + 2
    kinds = {"reduce_scatter": whole, "all_gather": whole // n} if sequence else \
        {"all_reduce": whole}
    return {kind: {"count": count, "operand_bytes": count * op,
                   "sent_per_rank_bytes": count * op * _RING_SENT[kind](n)}
            for kind, op in kinds.items()}


def _sent(part: dict) -> float:
    return sum(rec["sent_per_rank_bytes"] for rec in part.values())


def bytes_figures(plan, cfg, n: int, sequence: bool, torch_calls: list | None) -> dict:
    tokens = cfg.batch * cfg.seq
    whole = tokens * cfg.dim * DTYPE_BYTES
    closed = closed_form(cfg, n, sequence)
    ranks = {r: tally(calls, whole, n) for r, calls in plan_collectives(plan).items()}
    piper0 = ranks[0]
    out = {
        "what": ("tp collectives of one training step on one rank, by kind: count, operand "
                 "bytes (an all-gather's operand is one rank's shard) and the bytes a ring "
                 "sends per rank (all-reduce 2(n-1)/n of the operand, reduce-scatter (n-1)/n, "
                 "all-gather n-1 shards); 'activation' = collectives of the activation "
                 "[tokens, dim], 'other' = the rest. Piper's read from the compiled plan "
                 "(sched.collective), PyTorch's counted on its functional collectives in one "
                 "extra step"),
        "closed_form": ("(layers x 4 + 2) collectives of the activation [tokens, dim] x 4 bytes: "
                        "per layer 2 forward, 2 backward, the embedding's forward, the gradient "
                        "of the head's input; all-reduces, or with sp one reduce-scatter and one "
                        "all-gather each (the same bytes sent)"),
        "tokens": tokens,
        "activation_bytes": whole,
        "closed_form_activation": closed,
        "closed_form_sent_per_rank_bytes": _sent(closed),
        "piper_rank0": piper0,
        "piper_activation_sent_per_rank_bytes": _sent(piper0["activation"]),
        "piper_same_on_every_rank": len({json.dumps(v, sort_keys=True)
                                         for v in ranks.values()}) == 1,
        "piper_matches_closed_form": piper0["activation"] == closed,
    }
    if torch_calls is not None:
        torch0 = tally([tuple(c) for c in torch_calls], whole, n)
        out.update({
            "torch_rank0": torch0,
            "torch_activation_sent_per_rank_bytes": _sent(torch0["activation"]),
            "torch_matches_closed_form": torch0["activation"] == closed,
        })
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_args(ap, steps=10)
    ap.add_argument("--nproc", default="", help="tp sizes = process counts, comma-separated "
                                                "(default 2,4; 2 with --tiny)")
    ap.add_argument("--sequence", choices=("both", "off", "on"), default="both",
                    help="cases without sequence parallelism, with it, or both (default)")
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args.worker, DTensorTPSide)

    import piper
    from examples.gpt import gpt_data, make_gpt
    from piper.directives.strategy import compile_plan, to_json
    from piper.ir import print_module

    cfg = gpt_config(args.tiny, layers=2 if args.tiny else 4)
    nprocs = [int(v) for v in (args.nproc or ("2" if args.tiny else "2,4")).split(",")]
    sequences = {"both": (False, True), "off": (False,), "on": (True,)}[args.sequence]
    count = 2 + args.warmup + args.steps
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in nprocs:
            compiled = []
            batches = gpt_batches(cfg, cfg.batch, count + 1)
            count_batch = Path(tmp) / f"count{n}.pt"
            torch.save(batches[-1], count_batch)
            for sp in sequences:
                model = make_gpt(cfg)
                t0 = time.perf_counter()
                plan = piper.compile(model, gpt_data(cfg), optimizer=torch.optim.AdamW(
                    model.parameters(), lr=LR), strategy=strategy(n, sequence=sp))
                compile_s = {"explicit": time.perf_counter() - t0}
                # plan=None on the same captured step (no second capture):
                # Piper finds the blocks' plan itself (it leaves the
                # embedding and the head replicated)
                t0 = time.perf_counter()
                auto = compile_plan(plan.captured.module.clone(), strategy(n, None, sp))
                compile_s["auto"] = time.perf_counter() - t0
                blocks = compile_plan(plan.captured.module.clone(), strategy(n, BLOCK_PLAN, sp))
                case_dir = Path(tmp) / case_name(n, sp).replace("+", "_")
                settings = {**base_settings(args, cfg), "sequence": sp,
                            "count_batch": str(count_batch)}
                save_case(case_dir, plan, batches[:-1], settings)
                compiled.append((sp, plan, case_dir, compile_s,
                                 print_module(auto) == print_module(blocks)))
            jobs = launch(__file__, [c[2] for c in compiled], n, args.threads, args.timeout,
                          repeats(args))
            for (sp, plan, _, compile_s, auto_same), ranks in zip(compiled, jobs, strict=True):
                part = summarize(ranks)
                case = {"case": case_name(n, sp), "nproc": n, "sequence": sp,
                        "piper_strategy": json.loads(to_json(strategy(n, sequence=sp))),
                        "auto_plan_same_ir": auto_same,
                        "compile_s": compile_s, **part,
                        "tp_bytes": bytes_figures(plan, cfg, n, sp,
                                                  ranks[0]["sides"]["torch"].get("collectives"))}
                case["losses_agree"] = (part["loss_max_rel_diff"] is not None
                                        and part["loss_max_rel_diff"] <= 1e-5)
                cases.append(case)
    doc = {
        "benchmark": "tp",
        "baseline": ("torch DTensor parallelize_module (ColwiseParallel / RowwiseParallel, "
                     "loss_parallel, SequenceParallel)"),
        "plan": PLAN,
        "auto_plan": ("plan=None splits the blocks only; auto_plan_same_ir: its IR is the "
                      "explicit plan's without the embedding and head entries"),
        "deviations": DEVIATIONS,
        "loss_parallel": True,
        "loss_parallel_note": LOSS_PARALLEL_NOTE,
        "sequence": [c["case"] for c in cases if c["sequence"]],
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
        print(f"{c['case']}: activation collectives sent per rank a step: Piper "
              f"{b['piper_activation_sent_per_rank_bytes']:.0f}, PyTorch "
              f"{b.get('torch_activation_sent_per_rank_bytes', 0):.0f}, closed form "
              f"{b['closed_form_sent_per_rank_bytes']:.0f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
