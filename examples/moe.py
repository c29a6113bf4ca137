"""A small mixture-of-experts classifier with top-k routing.

Two kinds of MoE layer, chosen by `MoEConfig.routing`:

- "routed" (what MoE models train with): the experts' weights are stacked
  along dim 0 (`StackedExperts`, one parameter per projection, like
  transformers' and torchtitan's grouped experts) and each token goes only
  to its top-k experts, through static-shape slots (`piper.moe`: dropless by
  default, or a capacity per expert with `capacity_factor`). The layer adds
  Switch's load-balancing loss times `aux_loss` to the model's loss. The
  experts run inside `piper.annotate("EP")`: one region per layer, which
  `expert_parallel(n)` splits by its dim 0.
- "dense" (the default, described below):

Each MoE layer has a router (Linear dim -> experts), picks the top k experts
per token (k = 2 by default) and renormalises their probabilities. Shapes stay
static: the top-k weights are scattered into a dense gate matrix
[tokens, experts] (zero for experts not chosen), every expert runs on all
tokens, and the outputs are combined weighted by the gates. This "dense
dispatch" computes more than a capacity-based dispatch would, but has no
data-dependent shapes and no dropped tokens, so it captures as plain aten ops
and matches eager PyTorch exactly.

Regions: the input projection and layer 0 share "PP" region 0, each further
layer has its own "PP" region, and the classifier head and the loss run in
the last one. Inside a layer, expert e runs in `piper.annotate("EP", e)`,
nested in the layer's "PP" region. `MoEModel.forward(x)` returns logits;
`MoEModel.forward(x, targets)` returns the cross-entropy loss (capture it
with `loss_fn=None`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import piper
from examples.configs import MoEConfig


def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of class logits [tokens, classes] against class ids."""
    return F.cross_entropy(logits, targets)


class Expert(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.proj = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.proj(self.act(self.fc(x)))


class Router(nn.Module):
    """Dense gates [tokens, experts]: top-k probabilities, renormalised."""

    def __init__(self, dim: int, experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.fc = nn.Linear(dim, experts, bias=False)

    def forward(self, x):
        probs = torch.softmax(self.fc(x), dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return torch.zeros_like(probs).scatter(1, chosen, weights)


class MoELayer(nn.Module):
    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.ln = nn.LayerNorm(cfg.dim)
        self.router = Router(cfg.dim, cfg.experts, cfg.top_k)
        self.experts = nn.ModuleList(
            Expert(cfg.dim, cfg.hidden) for _ in range(cfg.experts)
        )

    def forward(self, x):
        h = self.ln(x)
        gates = self.router(h)
        out = x
        for e, expert in enumerate(self.experts):
            with piper.annotate("EP", e):
                out = out + gates[:, e : e + 1] * expert(h)
        return out


class StackedExperts(nn.Module):
    """All experts of a layer as one module: weights stacked along dim 0,
    run on slots [experts, capacity, dim] as batched matmuls."""

    def __init__(self, experts: int, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(experts, dim, hidden) * dim**-0.5)
        self.b1 = nn.Parameter(torch.zeros(experts, 1, hidden))
        self.w2 = nn.Parameter(torch.randn(experts, hidden, dim) * hidden**-0.5)
        self.b2 = nn.Parameter(torch.zeros(experts, 1, dim))

    def forward(self, slots):
        return torch.bmm(F.gelu(torch.bmm(slots, self.w1) + self.b1), self.w2) + self.b2


class RoutedMoELayer(nn.Module):
    """Top-k routing into stacked experts; returns (x + MoE(ln(x)), aux loss)."""

    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.ln = nn.LayerNorm(cfg.dim)
        self.router = nn.Linear(cfg.dim, cfg.experts, bias=False)
        self.experts = StackedExperts(cfg.experts, cfg.dim, cfg.hidden)

    def forward(self, x):
        cfg = self.cfg
        h = self.ln(x)
        probs = torch.softmax(self.router(h), dim=-1)
        cap = piper.moe.capacity(h.shape[0], cfg.experts, cfg.top_k, cfg.capacity_factor)
        routing = piper.moe.route(probs, cfg.top_k, cap)
        slots = piper.moe.dispatch(h, routing)  # [experts, capacity, dim]
        with piper.annotate("EP"):
            y = self.experts(slots)
        return x + piper.moe.combine(y, routing), piper.moe.load_balancing_loss(probs, routing)


class Head(nn.Module):
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, classes)

    def forward(self, x, targets=None):
        logits = self.fc(x)
        return logits if targets is None else loss(logits, targets)


class MoEModel(nn.Module):
    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(cfg.dim, cfg.dim)
        layer = RoutedMoELayer if cfg.routing == "routed" else MoELayer
        self.layers = nn.ModuleList(layer(cfg) for _ in range(cfg.layers))
        self.head = Head(cfg.dim, cfg.classes)

    def forward(self, x, targets=None):
        last = len(self.layers) - 1
        aux = None
        for i, layer in enumerate(self.layers):
            with piper.annotate("PP"):
                if i == 0:
                    x = self.inp(x)
                if self.cfg.routing == "routed":
                    x, a = layer(x)
                    aux = a if aux is None else aux + a
                else:
                    x = layer(x)
                if i == last:
                    out = self.head(x, targets)
                    if targets is not None and aux is not None and self.cfg.aux_loss:
                        out = out + self.cfg.aux_loss * aux
                    return out


def make_moe(cfg: MoEConfig | None = None, seed: int = 0) -> MoEModel:
    """A MoE model with deterministic initial weights."""
    torch.manual_seed(seed)
    return MoEModel(cfg or MoEConfig())


def moe_data(cfg: MoEConfig | None = None, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic tokens [batch, dim] and class ids [batch]."""
    cfg = cfg or MoEConfig()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.batch, cfg.dim, generator=g)
    y = torch.randint(0, cfg.classes, (cfg.batch,), generator=g)
    return x, y
