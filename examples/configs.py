"""The example models' configs: sizes only, no torch, so a tool can check
the sizes a user gives before it imports torch to build the model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MLPConfig:
    dim: int = 16  # features in and width of every block
    layers: int = 3  # Linear+ReLU blocks, one "PP" region each
    classes: int = 8
    batch: int = 8

    def __post_init__(self):
        for name in ("dim", "layers", "classes", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"mlp: {name} must be at least 1")


@dataclass(frozen=True)
class GPTConfig:
    vocab: int = 32
    seq: int = 8  # tokens per sequence (also the number of positions)
    dim: int = 16
    heads: int = 2
    layers: int = 2
    batch: int = 2
    tied: bool = True  # the head's weight is the token embedding's

    def __post_init__(self):
        for name in ("vocab", "seq", "dim", "heads", "layers", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"gpt: {name} must be at least 1")
        if self.dim % self.heads:
            raise ValueError(
                f"gpt: dim {self.dim} is not divisible by heads {self.heads}"
            )


@dataclass(frozen=True)
class MoEConfig:
    dim: int = 16  # features in and model width
    hidden: int = 32  # hidden width of each expert
    experts: int = 4
    top_k: int = 2
    layers: int = 2
    classes: int = 8
    batch: int = 16  # tokens
    routing: str = "dense"  # or "routed": stacked experts, tokens sent only where routed
    capacity_factor: float | None = None  # routed: None = dropless
    aux_loss: float = 0.0  # routed: weight of the load-balancing loss

    def __post_init__(self):
        for name in ("dim", "hidden", "experts", "top_k", "layers", "classes", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"moe: {name} must be at least 1")
        if self.routing not in ("dense", "routed"):
            raise ValueError(f"moe: routing must be 'dense' or 'routed', got {self.routing!r}")
        if self.top_k > self.experts:
            raise ValueError(
                f"moe: top_k {self.top_k} exceeds the number of experts {self.experts}"
            )
