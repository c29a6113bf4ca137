"""A small GPT: token and position embeddings, pre-norm transformer blocks,
final LayerNorm and a language-model head (tied to the token embedding or not).

Attention is written with plain matmuls, a causal mask and softmax (no fused
scaled_dot_product_attention), so the captured graph is made of simple aten
ops. There is no dropout: a training step is deterministic.

Pipeline regions: block i runs inside `piper.annotate("PP")` region i; the
embeddings run inside the first block's region and the final norm, the head
and the loss inside the last one, so every op of the captured step carries a
"PP" tag. `GPT.forward(idx)` returns logits; `GPT.forward(idx, targets)`
returns the mean next-token cross-entropy, computed in the last region
(capture such a model with `loss_fn=None`, since capture calls an outside
`loss_fn` outside every region):

    cfg = GPTConfig(layers=2)
    model = make_gpt(cfg)
    idx, targets = gpt_data(cfg)
    step = piper.capture(model, (idx, targets), optimizer=opt)
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

import piper
from examples.configs import GPTConfig


def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits [batch, seq, vocab] against token ids."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


class Embedding(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab, cfg.dim)
        self.pos = nn.Embedding(cfg.seq, cfg.dim)

    def forward(self, idx):
        t = idx.size(1)
        pos = torch.arange(t, device=idx.device)
        return self.tok(idx) + self.pos(pos)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.heads = cfg.heads
        # No bias on q/k/v: a key bias has an exactly zero gradient (softmax
        # ignores a shift shared by all keys), which leaves only rounding noise
        # for Adam to amplify.
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x):
        b, t, c = x.shape
        h = self.heads
        q, k, v = self.qkv(x).split(c, dim=2)
        q = q.view(b, t, h, c // h).transpose(1, 2)  # [b, h, t, c/h]
        k = k.view(b, t, h, c // h).transpose(1, 2)
        v = v.view(b, t, h, c // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // h))
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf"))
        att = torch.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, c)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.dim, 4 * cfg.dim)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * cfg.dim, cfg.dim)

    def forward(self, x):
        return self.proj(self.act(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Head(nn.Module):
    """Final LayerNorm, logits over the vocabulary, and the loss if asked."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln = nn.LayerNorm(cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.vocab, bias=False)

    def forward(self, x, targets=None):
        logits = self.proj(self.ln(x))
        return logits if targets is None else loss(logits, targets)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = Embedding(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.head = Head(cfg)
        if cfg.tied:
            self.head.proj.weight = self.embed.tok.weight
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets=None):
        last = len(self.blocks) - 1
        x = idx
        for i, block in enumerate(self.blocks):
            with piper.annotate("PP"):
                if i == 0:
                    x = self.embed(idx)
                x = block(x)
                if i == last:
                    return self.head(x, targets)


def make_gpt(cfg: GPTConfig | None = None, seed: int = 0) -> GPT:
    """A GPT with deterministic initial weights."""
    torch.manual_seed(seed)
    return GPT(cfg or GPTConfig())


def gpt_data(cfg: GPTConfig | None = None, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic token ids [batch, seq] and their next tokens as targets."""
    cfg = cfg or GPTConfig()
    g = torch.Generator().manual_seed(seed)
    stream = torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq + 1), generator=g)
    return stream[:, :-1].contiguous(), stream[:, 1:].contiguous()
