"""Example models Piper compiles: each with a config, a constructor, data.

`EXAMPLES[name]` gives the config dataclass, `make(cfg)` (deterministic
initial weights) and `data(cfg)` (deterministic inputs and targets). Every
model's `forward(inputs, targets)` returns the scalar loss, computed inside
its last "PP" region, so capture them with `loss_fn=None`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Example:
    config: type
    make: Callable[..., Any]
    data: Callable[..., tuple]


def _examples() -> dict[str, Example]:
    from examples.gpt import GPTConfig, gpt_data, make_gpt
    from examples.mlp import MLPConfig, make_mlp, mlp_data
    from examples.moe import MoEConfig, make_moe, moe_data

    return {
        "mlp": Example(MLPConfig, make_mlp, mlp_data),
        "gpt": Example(GPTConfig, make_gpt, gpt_data),
        "moe": Example(MoEConfig, make_moe, moe_data),
    }


EXAMPLES = _examples()
