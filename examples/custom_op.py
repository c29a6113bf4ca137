"""A model with an operator of its own, registered with `torch.library`.

`piper_examples::scaled_silu(x, scale)` computes `x * sigmoid(x) * scale`
in one call: a stand-in for the fused kernels models bring (Triton kernels
wrapped with `torch.library.triton_op`, the ops transformers registers).
It has a fake kernel (so capture knows its result's shape without running
it) and an autograd formula (its backward is a second custom op). Piper
keeps both as opaque `graph.aten` ops named `piper_examples.*`, runs them
through `torch.ops`, and never fuses them.

`CustomOpMLP` is plain PyTorch with no Piper annotation inside: annotate
its blocks from outside (`piper.annotate("PP", model.blocks)`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


@torch.library.custom_op("piper_examples::scaled_silu", mutates_args=())
def scaled_silu(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x * torch.sigmoid(x) * scale


@scaled_silu.register_fake
def _(x, scale):
    return torch.empty_like(x)


@torch.library.custom_op("piper_examples::scaled_silu_backward", mutates_args=())
def scaled_silu_backward(grad: torch.Tensor, x: torch.Tensor, scale: float) -> torch.Tensor:
    s = torch.sigmoid(x)
    return grad * scale * (s + x * s * (1 - s))


@scaled_silu_backward.register_fake
def _(grad, x, scale):
    return torch.empty_like(x)


def _setup(ctx, inputs, output):
    x, scale = inputs
    ctx.save_for_backward(x)
    ctx.scale = scale


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return scaled_silu_backward(grad, x, ctx.scale), None


scaled_silu.register_autograd(_backward, setup_context=_setup)


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        return scaled_silu(self.fc(x), 0.5)


class CustomOpMLP(nn.Module):
    """Blocks of Linear + the custom activation, a head and the loss."""

    def __init__(self, dim: int = 16, layers: int = 2, classes: int = 8):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim) for _ in range(layers))
        self.head = nn.Linear(dim, classes)

    def forward(self, x, targets):
        for b in self.blocks:
            x = b(x)
        return F.cross_entropy(self.head(x), targets)
