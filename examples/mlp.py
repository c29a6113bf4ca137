"""A small MLP classifier: Linear+ReLU blocks, one pipeline region each.

`MLP.forward(x)` returns logits; `MLP.forward(x, targets)` also computes the
cross-entropy loss, inside the last block's region, so that every op of the
captured training step carries a "PP" tag (capture calls an outside `loss_fn`
untagged). Capture such a model with `loss_fn=None`:

    cfg = MLPConfig(layers=3)
    model = make_mlp(cfg)
    x, y = mlp_data(cfg)
    step = piper.capture(model, (x, y), optimizer=opt)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import piper
from examples.configs import MLPConfig


def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of class logits [batch, classes] against class ids."""
    return F.cross_entropy(logits, targets)


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x))


class Head(nn.Module):
    """Class logits, and the loss when targets are given."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, classes)

    def forward(self, x, targets=None):
        logits = self.fc(x)
        return logits if targets is None else loss(logits, targets)


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(Block(cfg.dim) for _ in range(cfg.layers))
        self.head = Head(cfg.dim, cfg.classes)

    def forward(self, x, targets=None):
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            with piper.annotate("PP"):
                x = block(x)
                if i == last:
                    return self.head(x, targets)


def make_mlp(cfg: MLPConfig | None = None, seed: int = 0) -> MLP:
    """An MLP with deterministic initial weights."""
    torch.manual_seed(seed)
    return MLP(cfg or MLPConfig())


def mlp_data(cfg: MLPConfig | None = None, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic inputs [batch, dim] and class ids [batch]."""
    cfg = cfg or MLPConfig()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg.batch, cfg.dim, generator=g)
    y = torch.randint(0, cfg.classes, (cfg.batch,), generator=g)
    return x, y
