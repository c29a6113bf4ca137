"""Optimizers as pure per-parameter updates that capture can trace.

Each spec knows its state tensors and writes one update as plain torch ops
(no in-place, no Python-side step count), so the traced update is a chain of
elementwise aten ops per parameter: shardable as it stands (ZeRO) and exact
against torch.optim up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SGD:
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    uses_step = False

    def update(self, p, g, states, step):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if not self.momentum:
            return p - self.lr * g, ()
        (buf,) = states
        # torch starts the buffer at the first gradient; with dampening 0
        # that equals a zero-initialised buffer updated once.
        buf = self.momentum * buf + g
        d = g + self.momentum * buf if self.nesterov else buf
        return p - self.lr * d, (buf,)


@dataclass(frozen=True)
class AdamW:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-2

    state_names = ("exp_avg", "exp_avg_sq")
    uses_step = True

    def update(self, p, g, states, step):
        b1, b2 = self.betas
        m, v = states
        if self.weight_decay:
            p = p * (1 - self.lr * self.weight_decay)
        m = torch.lerp(m, g, 1 - b1)
        v = torch.addcmul(v * b2, g, g, value=1 - b2)
        bc1 = 1 - torch.pow(b1, step)
        s2 = torch.sqrt(1 - torch.pow(b2, step))
        # torch's p - lr/bc1 * m / (sqrt(v)/s2 + eps), with the per-step
        # scalars folded into the denominator: four passes over the
        # parameter (sqrt, add, mul, addcdiv) instead of six
        denom = (torch.sqrt(v) + self.eps * s2) * (bc1 / (self.lr * s2))
        p = torch.addcdiv(p, m, denom, value=-1)
        return p, (m, v)


def from_torch(opt) -> SGD | AdamW:
    """The spec matching a torch.optim optimizer (one param group)."""
    if isinstance(opt, SGD | AdamW):
        return opt
    if len(opt.param_groups) != 1:
        raise ValueError("capture supports optimizers with a single param group")
    g = opt.param_groups[0]
    if g.get("maximize"):
        raise ValueError("maximize=True is not supported")
    if isinstance(opt, torch.optim.SGD):
        if g.get("dampening", 0):
            raise ValueError("SGD with dampening != 0 is not supported")
        return SGD(
            lr=float(g["lr"]),
            momentum=float(g["momentum"]),
            weight_decay=float(g["weight_decay"]),
            nesterov=bool(g["nesterov"]),
        )
    if isinstance(opt, torch.optim.AdamW):
        if g.get("amsgrad"):
            raise ValueError("AdamW with amsgrad is not supported")
        return AdamW(
            lr=float(g["lr"]),
            betas=tuple(g["betas"]),
            eps=float(g["eps"]),
            weight_decay=float(g["weight_decay"]),
        )
    raise ValueError(
        f"optimizer {type(opt).__name__} is not supported (SGD or AdamW)"
    )
