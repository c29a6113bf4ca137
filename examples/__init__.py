"""Example models Piper compiles: each with a config, a constructor, data.

`EXAMPLES[name]` gives the config dataclass, `make(cfg)` (deterministic
initial weights) and `data(cfg)` (deterministic inputs and targets). Every
model's `forward(inputs, targets)` returns the scalar loss, computed inside
its last "PP" region, so capture them with `loss_fn=None`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from examples.configs import GPTConfig, MLPConfig, MoEConfig


@dataclass(frozen=True)
class Example:
    """One example: its config class (no torch) and the module that builds
    it, imported on first use of `make` or `data` (it imports torch)."""

    config: type
    module: str
    make_name: str
    data_name: str

    def make(self, *args, **kwargs):
        return getattr(importlib.import_module(self.module), self.make_name)(*args, **kwargs)

    def data(self, *args, **kwargs):
        return getattr(importlib.import_module(self.module), self.data_name)(*args, **kwargs)


EXAMPLES = {
    "mlp": Example(MLPConfig, "examples.mlp", "make_mlp", "mlp_data"),
    "gpt": Example(GPTConfig, "examples.gpt", "make_gpt", "gpt_data"),
    "moe": Example(MoEConfig, "examples.moe", "make_moe", "moe_data"),
}
