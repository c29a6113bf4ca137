"""Tensor parallelism trains the GPT example exactly like eager PyTorch.

Each parity case compiles the GPT example with `piper.tensor_parallel(2,
plan=...)` on its MLPs (Megatron's pattern: `fc` colwise, gelu, `proj`
rowwise), alone, with a 1F1B pipeline, with data parallelism (gradient
buckets) and with ZeRO-1/3, trains 3 steps with AdamW on real gloo
processes and compares every loss and the final parameters with one
process training the plain model with torch.optim on the same global
batches (fp32, rtol 1e-5). The final state comes back whole: colwise
shards joined on dim 0, rowwise ones on dim 1. The automatic plan
(plan=None) runs on the GPT example over 4 ranks and on a transformers
Llama. The other cases check the errors a user can cause, without starting
processes.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from eager import train_eagerly
from test_own_model import assert_close_normwise, qwen3, train_and_compare
from torch import nn

import piper
from examples.gpt import GPTConfig, gpt_data, make_gpt
from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.dialects import sched

STEPS = 3
MEGATRON_MLP = {"blocks.*.mlp.fc": "colwise", "blocks.*.mlp.proj": "rowwise"}


def run_and_compare(cfg, strategy, batches_per_step, checkpoint_dir="", normwise=False):
    """Train 3 steps with `strategy` and with eager torch; return the plan.
    `batches_per_step`: captured batches in one step's global batch
    (microbatches x dp; tensor parallelism does not split tokens). With
    `checkpoint_dir`, also checkpoint the last step and check that
    `piper.load_checkpoint` reassembles it into a plain model. Parameters
    are compared elementwise (rtol 1e-5, atol 1e-6), or `normwise`."""
    model, reference = make_gpt(cfg), make_gpt(cfg)
    reference.load_state_dict(model.state_dict())

    def optimizer(m):
        return torch.optim.AdamW(m.parameters(), lr=1e-2)

    plan = piper.compile(model, gpt_data(cfg), optimizer=optimizer(model), strategy=strategy)
    per_step = GPTConfig(**{**cfg.__dict__, "batch": cfg.batch * batches_per_step})
    batches = []
    for s in range(STEPS):
        x, y = gpt_data(per_step, seed=50 + s)
        batches.append({"input0": x, "input1": y})
    result = plan.run(batches, checkpoint_every=STEPS if checkpoint_dir else 0,
                      checkpoint_dir=checkpoint_dir)

    losses = train_eagerly(reference, batches, optimizer(reference))
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=1e-6)
    def close(got, want, name):
        if normwise:
            assert_close_normwise(got, want, name)
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"{name}: {m}")

    for name, p in reference.named_parameters():
        close(result.state[name], p.detach(), name)
    # plan.state_dict(): the model's own keys, full shapes, the trained values
    state = plan.state_dict()
    for name, p in reference.state_dict().items():
        close(state[name], p, name)
    if checkpoint_dir:
        from piper.runtime.checkpoint import latest

        restored = piper.load_checkpoint(make_gpt(cfg, seed=7), latest(checkpoint_dir)[0])
        for name, p in reference.named_parameters():
            close(restored.state_dict()[name], p.detach(), name)
    return plan


def loads(plan, device: int) -> dict[str, tuple[list[int], list[int] | None]]:
    """Tensor name -> (loaded shape, shard) in one device's program."""
    return {op.tensor_name.data: (list(op.result.type.get_shape()),
                                  [a.data for a in op.shard.data] if op.shard else None)
            for op in programs(plan.module)[device].body.block.ops
            if isinstance(op, sched.LoadOp)}


def collectives(plan, device: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(op.kind.data, tuple(op.members)) for op in programs(plan.module)[device].body.block.ops
            if isinstance(op, sched.CollectiveOp)]


def test_tensor_parallel_alone(tmp_path):
    cfg = GPTConfig(layers=1, batch=2)
    plan = run_and_compare(cfg, [piper.tensor_parallel(2, plan=MEGATRON_MLP)], 1,
                           checkpoint_dir=str(tmp_path / "ckpt"))
    assert plan.num_devices == 2
    for d in (0, 1):
        held = loads(plan, d)
        # dim 16, hidden 64: fc.weight [64, 16] by rows, proj.weight [16, 64] by columns
        assert held["blocks.0.mlp.fc.weight"] == ([32, 16], [d, 2])
        assert held["blocks.0.mlp.fc.bias"] == ([32], [d, 2])
        assert held["blocks.0.mlp.proj.weight"] == ([16, 32], [d, 2, 1])
        assert held["blocks.0.mlp.proj.weight:exp_avg"] == ([16, 32], [d, 2, 1])
        assert held["blocks.0.mlp.proj.bias"] == ([16], None)
        assert held["blocks.0.attn.qkv.weight"] == ([48, 16], None)
        # one all_reduce in the forward (the MLP's output), one in the
        # backward (the gradient of the MLP's input)
        assert collectives(plan, d) == [("all_reduce", (0, 1))] * 2


def test_gpt_automatic_plan_four_ranks(tmp_path):
    """plan=None on the GPT example over 4 ranks (4 heads, one a rank): its
    fused qkv Linear is split colwise in three groups (each rank holds its
    head's rows of q, of k and of v), attention's proj rowwise, the MLP as
    Megatron's. Its checkpoint (qkv in `groups 3` blocks) loads into a
    plain model."""
    cfg = GPTConfig(layers=1, batch=2, heads=4)
    plan = run_and_compare(cfg, [piper.tensor_parallel(4)], 1,
                           checkpoint_dir=str(tmp_path / "ckpt"), normwise=True)
    assert plan.num_devices == 4
    held = loads(plan, 3)
    assert held["blocks.0.attn.qkv.weight"] == ([12, 16], [3, 4, 0, 1, 3])
    assert held["blocks.0.attn.proj.weight"] == ([16, 4], [3, 4, 1])
    assert held["blocks.0.mlp.fc.weight"] == ([16, 16], [3, 4])
    assert held["blocks.0.mlp.proj.weight"] == ([16, 16], [3, 4, 1])
    # attention and MLP: one all_reduce each, forward and backward
    assert collectives(plan, 3) == [("all_reduce", (0, 1, 2, 3))] * 4


def test_sequence_parallel():
    """sequence=True on the GPT example (plan=None, tied head): layer norms,
    residual adds and the head run on sequence shards; per block and
    direction, each rowwise output is reduce-scattered along the sequence
    and each colwise input all-gathered; the layer norms' (replicated)
    weight gradients, partial over the shards, are all-reduced."""
    cfg = GPTConfig(layers=1, batch=2)
    plan = run_and_compare(cfg, [piper.tensor_parallel(2, sequence=True)], 1)
    kinds = [kind for kind, group in collectives(plan, 1)]
    assert all(group == (0, 1) for kind, group in collectives(plan, 1))
    assert kinds.count("reduce_scatter") == 4  # attention, MLP: forward and backward
    assert kinds.count("all_gather") >= 4
    # 3 layer norms x (weight, bias), the rowwise biases, the tied head's weight
    assert kinds.count("all_reduce") >= 6


def test_sequence_must_divide():
    cfg = GPTConfig(layers=1, batch=2, seq=9)
    with pytest.raises(PiperError) as e:
        piper.compile(make_gpt(cfg), gpt_data(cfg),
                      strategy=[piper.tensor_parallel(2, plan=MEGATRON_MLP, sequence=True)])
    assert "sequence=true: the sequence length 9 of the token ids %input0 [2, 9] does not " \
        "divide by n=2" in str(e.value)


def test_vocab_and_loss_layouts_with_pipeline():
    """"vocab" splits the token embedding [32, 16] over its rows: each rank
    looks up the ids in its 16 rows (zero for the others) and the partial
    lookups are summed; its gradient is each rank's block of rows. "loss"
    splits the head over the vocabulary and computes the cross entropy on
    the logits' shards: the max, the sum of exponentials and the target's
    log-probability all-reduced, never the logits. With sequence
    parallelism and a 1F1B pipeline (sequence shards sent between the
    stages; untied head: a tied one is the next test)."""
    cfg = GPTConfig(layers=2, batch=2, tied=False)
    plan = run_and_compare(cfg, [
        piper.place(pp=2), piper.split(2), piper.order(schedule="1f1b"),
        piper.tensor_parallel(2, plan={**MEGATRON_MLP, "embed.tok": "vocab", "head.proj": "loss"},
                              sequence=True)], 2)
    for b in (0, 1):
        assert loads(plan, b)["embed.tok.weight"] == ([16, 16], [b, 2])  # stage 0
        assert loads(plan, b)["embed.tok.weight:exp_avg"] == ([16, 16], [b, 2])
        assert loads(plan, 2 + b)["head.proj.weight"] == ([16, 16], [b, 2])  # stage 1
    # with sequence parallelism the partial lookup is reduce-scattered
    assert collectives(plan, 0)[0] == ("reduce_scatter", (0, 1))
    # the loss, per microbatch: one max over the vocabulary shards, of [16, 1]
    maxes = [op for op in programs(plan.module)[2].body.block.ops
             if isinstance(op, sched.CollectiveOp) and op.kind.data == "all_reduce"
             and op.reduce.data == "max"]
    assert len(maxes) == 2 and list(maxes[0].result_type.get_shape()) == [16, 1]


def test_vocab_of_a_tied_embedding():
    """The GPT example's head is tied to its embedding: "vocab" splits the
    one weight for both, the head getting the loss layout; its gradient
    (lookups' plus head's) is each rank's block of rows."""
    cfg = GPTConfig(layers=1, batch=2)
    plan = run_and_compare(cfg, [piper.tensor_parallel(
        2, plan={**MEGATRON_MLP, "embed.tok": "vocab"})], 1)
    assert loads(plan, 1)["embed.tok.weight"] == ([16, 16], [1, 2])
    assert ("all_reduce", (0, 1)) in collectives(plan, 1)


def test_vocab_of_a_linear():
    cfg = GPTConfig(layers=1, batch=2)
    with pytest.raises(PiperError) as e:
        piper.compile(make_gpt(cfg), gpt_data(cfg),
                      strategy=[piper.tensor_parallel(2, plan={"blocks.*.mlp.fc": "vocab"})])
    assert "vocab 'blocks.0.mlp.fc': weight 'blocks.0.mlp.fc.weight' [64, 16] is read by no " \
        "embedding lookup" in str(e.value)


def test_tensor_parallel_with_pipeline_1f1b():
    cfg = GPTConfig(layers=2, batch=2)
    plan = run_and_compare(cfg, [piper.place(pp=2), piper.split(2), piper.order(schedule="1f1b"),
                                 piper.tensor_parallel(2, plan=MEGATRON_MLP)], 2)
    assert plan.num_devices == 4
    # device = pp rank * 2 + tp rank: block 1's MLP on devices 2 and 3
    assert loads(plan, 3)["blocks.1.mlp.proj.weight"] == ([16, 32], [1, 2, 1])
    assert "blocks.0.mlp.fc.weight" not in loads(plan, 3)
    assert ("all_reduce", (2, 3)) in collectives(plan, 3)


def test_tensor_parallel_with_data_parallel():
    """Gradients over dp in buckets of 512 bytes: the small ones (biases,
    norms, fc.bias's block) packed together, the large ones (blocks too)
    all-reduced alone."""
    cfg = GPTConfig(layers=1, batch=2)
    plan = run_and_compare(cfg, [piper.replicate(2, bucket_bytes=512),
                                 piper.tensor_parallel(2, plan=MEGATRON_MLP)], 2)
    assert plan.num_devices == 4
    groups = set(collectives(plan, 0))
    assert ("all_reduce", (0, 1)) in groups  # partial sums over tp
    assert ("all_reduce", (0, 2)) in groups  # gradients over dp (shards too)
    # the loss and 15 gradients, these in 10 buckets (16 all_reduces without)
    assert collectives(plan, 0).count(("all_reduce", (0, 2))) == 11


@pytest.mark.parametrize("zero", [1, 3])
def test_tensor_parallel_with_zero(zero, tmp_path):
    """ZeRO over the dp axis of tp blocks: each split weight's block (and
    its optimizer state) is ZeRO-sharded within its dp group, a flat slice
    of the block (`shard b*dp+k of n*dp`, columns' blocks `dim 1 parts
    dp`); reduce_scatter and all_gather run over dp groups of the same tp
    rank. ZeRO-3 with the automatic plan (the fused qkv in groups too). The
    checkpoints (ZeRO-3's: every weight in flat slices) load into a plain
    model and pass the checks before a resume."""
    cfg = GPTConfig(layers=1, batch=2)
    ck = str(tmp_path / "ckpt")
    plan = run_and_compare(cfg, [piper.replicate(2), piper.shard(zero),
                                 piper.tensor_parallel(2, plan=MEGATRON_MLP if zero == 1
                                                       else None)], 2, checkpoint_dir=ck)
    # resuming checks the checkpoint first: each tensor's elements, a ZeRO
    # shard of a replicated weight (held by every tp rank) counted once
    from piper.runtime.checkpoint import check_matches, latest

    shapes = {f"{name}{kind}": list(p.shape) for name, p in make_gpt(cfg).named_parameters()
              for kind in ("", ":exp_avg", ":exp_avg_sq")}
    check_matches(latest(ck)[0], plan.module, shapes)
    assert plan.num_devices == 4
    held = loads(plan, 1)  # dp replica 0, tp rank 1
    # fc.weight [64, 16]: rows 32..63, of which ZeRO slice 0 of 2
    assert held["blocks.0.mlp.fc.weight:exp_avg"] == ([256], [2, 4])
    # proj.weight [16, 64]: columns 32..63, of which ZeRO slice 0 of 2
    assert held["blocks.0.mlp.proj.weight:exp_avg"] == ([256], [2, 4, 1, 2])
    if zero == 3:
        assert held["blocks.0.mlp.proj.weight"] == ([256], [2, 4, 1, 2])
        # qkv.weight [48, 16]: rows 8..15 of each of q, k, v; ZeRO slice 0 of 2
        assert held["blocks.0.attn.qkv.weight"] == ([192], [2, 4, 0, 2, 3])
    kinds = {(k, g) for k, g in collectives(plan, 1)}
    assert ("all_reduce", (0, 1)) in kinds  # partial sums over tp
    assert ("reduce_scatter", (1, 3)) in kinds and ("all_gather", (1, 3)) in kinds


class _Attention(nn.Module):
    """Causal self-attention with separate q, k, v Linears (the GPT example
    fuses them into one `qkv`, whose colwise split would not follow heads)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, c = x.shape
        h = self.heads
        q = self.q(x).view(b, t, h, c // h).transpose(1, 2)
        k = self.k(x).view(b, t, h, c // h).transpose(1, 2)
        v = self.v(x).view(b, t, h, c // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // h))
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        att = torch.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, t, c))


class _AttentionLM(nn.Module):
    def __init__(self, vocab=16, dim=8, heads=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.ln = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.head = nn.Linear(dim, vocab)

    def forward(self, idx, targets):
        with piper.annotate("PP"):
            x = self.embed(idx)
            x = x + self.attn(self.ln(x))
            return F.cross_entropy(self.head(x).flatten(0, 1), targets.flatten())


def test_attention_heads_split():
    """q, k, v colwise and the out-projection rowwise: each tp rank runs
    heads/n heads (the head reshapes, the batched matmuls and the softmax
    over keys stay on the rank); one all_reduce in the forward, one in the
    backward (the gradient reaching the layer norm)."""

    def data(seed):
        g = torch.Generator().manual_seed(seed)
        s = torch.randint(0, 16, (2, 5), generator=g)
        return s[:, :-1].contiguous(), s[:, 1:].contiguous()

    torch.manual_seed(0)
    model, reference = _AttentionLM(), _AttentionLM()
    reference.load_state_dict(model.state_dict())
    plan = piper.compile(model, data(1), optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                         strategy=[piper.tensor_parallel(2, plan={"attn.[qkv]": "colwise",
                                                                  "attn.o": "rowwise"})])
    batches = [dict(zip(("input0", "input1"), data(50 + s), strict=True)) for s in range(STEPS)]
    result = plan.run(batches)
    losses = train_eagerly(reference, batches, torch.optim.AdamW(reference.parameters(), lr=1e-2))
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=1e-6)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(result.state[name], p.detach(), rtol=1e-5, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")
    held = loads(plan, 1)
    assert held["attn.q.weight"] == ([4, 8], [1, 2])
    assert held["attn.o.weight"] == ([8, 4], [1, 2, 1])
    assert collectives(plan, 0) == [("all_reduce", (0, 1))] * 2


def _llama(layers=2, heads=4, kv_heads=2):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=layers, num_attention_heads=heads,
                                   num_key_value_heads=kv_heads, use_cache=False)
    return transformers.LlamaForCausalLM(cfg)


def _llama_batches(rows: int, steps: int = STEPS):
    g = torch.Generator().manual_seed(11)
    return [{"input_ids": x, "labels": x} for x in torch.randint(0, 256, (steps, rows, 16),
                                                                     generator=g)]


def test_llama_automatic_plan():
    """plan=None on an unmodified transformers Llama (grouped-query attention,
    4 heads, 2 key/value heads; scaled_dot_product_attention, rotary
    embeddings): q, k, v and gate, up colwise, o and down rowwise, found
    from the graph; 3 AdamW steps like eager."""
    model, reference = _llama(), _llama()
    reference.load_state_dict(model.state_dict())
    plan = piper.compile(model, _llama_batches(2, 1)[0],
                         optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                         strategy=[piper.tensor_parallel(2)])
    batches = _llama_batches(2)
    result = plan.run(batches)
    losses = train_eagerly(reference, batches, torch.optim.AdamW(reference.parameters(), lr=1e-3),
                           lambda m, b: m(**b).loss)
    torch.testing.assert_close(torch.tensor(result.losses), torch.tensor(losses),
                               rtol=1e-5, atol=1e-6)
    state = plan.state_dict()
    for name, p in reference.named_parameters():
        assert_close_normwise(state[name], p.detach(), name)
    held = loads(plan, 1)
    for layer in (0, 1):
        at = f"model.layers.{layer}"
        assert held[f"{at}.self_attn.q_proj.weight"] == ([32, 64], [1, 2])  # 2 of 4 heads
        assert held[f"{at}.self_attn.k_proj.weight"] == ([16, 64], [1, 2])  # 1 of 2 kv heads
        assert held[f"{at}.self_attn.o_proj.weight"] == ([64, 32], [1, 2, 1])
        assert held[f"{at}.mlp.gate_proj.weight"] == ([64, 64], [1, 2])
        assert held[f"{at}.mlp.up_proj.weight"] == ([64, 64], [1, 2])
        assert held[f"{at}.mlp.down_proj.weight"] == ([64, 64], [1, 2, 1])
    assert held["lm_head.weight"] == ([256, 64], None)
    # per layer: attention and MLP, one all_reduce each way
    assert collectives(plan, 0) == [("all_reduce", (0, 1))] * 8


def test_qwen3_automatic_plan_with_per_head_norms():
    """plan=None on an unmodified transformers Qwen3: its q and k go through
    an RMSNorm per head (mean over head_dim), which keeps heads apart, so
    attention splits by heads like Llama's; 3 AdamW steps like eager."""
    plan, _, _ = train_and_compare(qwen3, lambda model: None, [piper.tensor_parallel(2)],
                                   replicas=1, microbatches=1)
    held = loads(plan, 1)
    assert held["model.layers.0.self_attn.q_proj.weight"] == ([24, 48], [1, 2])  # 2 of 4 heads
    assert held["model.layers.0.self_attn.o_proj.weight"] == ([48, 24], [1, 2, 1])
    assert held["model.layers.0.self_attn.q_norm.weight"] == ([12], None)  # per head: whole


def test_directive_json():
    from piper.directives.strategy import from_json, to_json

    d = from_json('[{"directive": "tensor_parallel", "n": 2, '
                  '"plan": {"blocks.*.mlp.fc": "colwise", "blocks.*.mlp.proj": "rowwise"}}]')
    assert d == [piper.tensor_parallel(2, plan=MEGATRON_MLP)]
    assert from_json(to_json(d)) == d
    assert d[0].to_dict()["plan"] == MEGATRON_MLP
    auto = from_json('[{"directive": "tensor_parallel", "n": 2}]')  # plan=None
    assert auto == [piper.tensor_parallel(2)] and from_json(to_json(auto)) == auto
    seq = from_json('[{"directive": "tensor_parallel", "n": 2, "plan": {"embed.tok": "vocab", '
                    '"head.proj": "loss"}, "sequence": true}]')
    assert seq == [piper.tensor_parallel(2, plan={"embed.tok": "vocab", "head.proj": "loss"},
                                         sequence=True)]
    assert from_json(to_json(seq)) == seq
    assert seq[0].passes()[0].sequence and seq[0].passes()[0].plan == "embed.tok:vocab,head.proj:loss"


@pytest.mark.parametrize("make, message", [
    (lambda: piper.tensor_parallel(0, plan=MEGATRON_MLP),
     "tensor_parallel: n must be an integer >= 1, got 0"),
    (lambda: piper.tensor_parallel(2, plan={}), "the plan is empty; give module patterns"),
    (lambda: piper.tensor_parallel(2, plan=MEGATRON_MLP, sequence=1),
     "tensor_parallel: sequence must be"),
    (lambda: piper.tensor_parallel(2, plan={"blocks.*.mlp.fc": "diagonal"}),
     "must be one of 'colwise', 'rowwise', 'vocab', 'loss', got 'diagonal'"),
    (lambda: piper.tensor_parallel(2, plan=["blocks.0.mlp.fc"]), "plan must be an object"),
])
def test_bad_options(make, message):
    with pytest.raises(PiperError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_pattern_matching_nothing():
    cfg = GPTConfig(layers=1, batch=2)
    with pytest.raises(PiperError) as e:
        piper.compile(make_gpt(cfg), gpt_data(cfg),
                      strategy=[piper.tensor_parallel(2, plan={"layers.*.mlp.up": "colwise"})])
    assert "plan pattern 'layers.*.mlp.up' matches no module with a weight" in str(e.value)


def test_dimension_must_divide():
    cfg = GPTConfig(layers=1, batch=2)  # fc.weight [64, 16]
    with pytest.raises(PiperError) as e:
        piper.compile(make_gpt(cfg), gpt_data(cfg),
                      strategy=[piper.tensor_parallel(3, plan=MEGATRON_MLP)])
    msg = str(e.value)
    assert "dim 0 of 'blocks.0.mlp.fc.weight' ([64, 16]) does not divide by n=3" in msg
    assert 'loc("blocks.0.mlp.fc")' in msg


class _Unequal(nn.Module):
    """A fused Linear split into unequal parts (6 and 2 features)."""

    def __init__(self):
        super().__init__()
        self.fused, self.a, self.b = nn.Linear(4, 8), nn.Linear(6, 4), nn.Linear(2, 4)

    def forward(self, x):
        a, b = self.fused(x).split([6, 2], dim=-1)
        return self.a(torch.relu(a)) + self.b(torch.relu(b))


def test_automatic_plan_errors():
    """plan=None names the module it cannot split: a fused Linear split
    into unequal parts, and key/value heads that do not divide by n (2 of
    them over 4 ranks: the weight's 32 rows would, its heads would not)."""
    model = _Unequal()
    with pytest.raises(PiperError) as e:
        piper.compile(model, (torch.randn(2, 4),), F.mse_loss, (torch.randn(2, 4),),
                      strategy=[piper.tensor_parallel(2)])
    assert ("tensor_parallel(plan=None): 'fused' is a fused Linear (weight 'fused.weight' "
            "[8, 4]) whose output is split into parts of different sizes") in str(e.value)
    with pytest.raises(PiperError) as e:
        piper.compile(_llama(layers=1), _llama_batches(2, 1)[0],
                      strategy=[piper.tensor_parallel(4)])
    msg = str(e.value)
    assert "directive tensor_parallel(n=4" in msg
    assert 'loc("model.layers.0.self_attn")' in msg
    assert ("(split from 'model.layers.0.self_attn.k_proj.weight' [32, 64]) where it cannot "
            "stay split over 4 ranks: dim 2 of [2, 16, 2, 16] has 2 (attention heads?), not a "
            "multiple of n=4") in msg


def test_zero_shard_of_a_block_must_divide():
    """A colwise Linear(4, 6)'s bias: 6 elements divide over dp=2 and over
    tp=2, its block of 3 not over dp=2 (plan=None finds up/down)."""

    class UpDown(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(4, 6), nn.Linear(6, 4)

        def forward(self, x):
            return self.down(torch.relu(self.up(x)))

    model = UpDown()
    with pytest.raises(PiperError) as e:
        piper.compile(model, (torch.randn(2, 4),), F.mse_loss, (torch.randn(2, 4),),
                      optimizer=torch.optim.AdamW(model.parameters()),
                      strategy=[piper.replicate(2), piper.shard(1), piper.tensor_parallel(2)])
    assert ("directive tensor_parallel(n=2 axis='tp'): tensor_parallel: 'up.bias' [6]: its "
            "block [3] (split over n=2) does not divide into the 2 ZeRO shards of its dp "
            "group") in str(e.value)


def test_checkpoint_moves_between_layouts(tmp_path):
    """AdamW state saved by a tensor-parallel plan (rowwise shards on dim 1)
    resumes in a plan without it, and the other way round, exactly like the
    uninterrupted run."""
    cfg = GPTConfig(layers=1, batch=2)
    batches = [dict(zip(("input0", "input1"), gpt_data(cfg, seed=70 + s), strict=True))
               for s in range(4)]

    def plan(tp: bool):
        model = make_gpt(cfg)
        strategy = [piper.tensor_parallel(2, plan=MEGATRON_MLP)] if tp else []
        return piper.compile(model, gpt_data(cfg), strategy=strategy,
                             optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2))

    sharded, whole_plan = plan(tp=True), plan(tp=False)
    whole = whole_plan.run(batches)
    for first, then in ((sharded, whole_plan), (whole_plan, sharded)):
        ck = tmp_path / f"ck{first is sharded}"
        first.run(batches[:2], worker_args=("--save-checkpoint", str(ck)))
        resumed = then.run(batches[2:], worker_args=("--load-checkpoint", str(ck)))
        torch.testing.assert_close(torch.tensor(resumed.losses), torch.tensor(whole.losses[2:]),
                                   rtol=1e-5, atol=1e-6)
        for name, value in whole.state.items():
            torch.testing.assert_close(resumed.state[name], value, rtol=1e-5, atol=1e-6,
                                       msg=lambda m, name=name: f"{name}: {m}")
