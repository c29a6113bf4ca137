"""Token routing for mixture-of-experts layers with static shapes.

The usual way to write a top-k MoE, `for e in experts: idx = (chosen ==
e).nonzero(); out.index_add_(0, idx, expert(x[idx]))`, has data-dependent
shapes (`nonzero`), so a whole training step with it cannot be captured.
These functions route the same tokens with shapes fixed at capture time:
every expert gets a buffer of `capacity` token slots, filled by a scatter
whose slot indices come from a running count (cumsum) of the tokens that
chose the expert, and emptied by a gather. Experts then run as batched
matmuls over a tensor [experts, capacity, dim], which is what
`expert_parallel` splits over devices by its dim 0: each ep rank receives
only the slots of its own experts.

    routing = piper.moe.route(probs, top_k=2, capacity=c)   # probs [T, E]
    slots = piper.moe.dispatch(x, routing)                  # [E, c, dim]
    y = experts(slots)                                      # [E, c, dim]
    out = piper.moe.combine(y, routing)                     # [T, dim]

`capacity(tokens, experts, top_k, capacity_factor)` sizes the buffers:
`capacity_factor=None` is dropless (every expert can hold every token, so
no token is ever dropped and the result is what an eager loop over
`nonzero` computes), a float is GShard/Switch's capacity per expert
(ceil(tokens * top_k / experts * factor)): a token routed to a full expert
is dropped (its contribution is zero; the residual carries it). First
choices fill the slots before second choices, in token order.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass

import torch

from piper.diagnostics import PiperError
from piper.frontend.annotate import annotate


def capacity(tokens: int, experts: int, top_k: int, capacity_factor: float | None = None) -> int:
    """Token slots per expert: `tokens` when dropless (factor None), else
    ceil(tokens * top_k / experts * capacity_factor), at least 1."""
    for name, v in (("tokens", tokens), ("experts", experts), ("top_k", top_k)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise PiperError(f"moe.capacity: {name} must be an integer of at least 1, got {v!r}")
    if top_k > experts:
        raise PiperError(f"moe.capacity: top_k {top_k} exceeds the number of experts {experts}")
    if capacity_factor is None:
        return tokens
    if isinstance(capacity_factor, bool) or not isinstance(capacity_factor, int | float) \
            or not math.isfinite(capacity_factor) or capacity_factor <= 0:
        raise PiperError(f"moe.capacity: capacity_factor must be a positive number or None "
                         f"(dropless), got {capacity_factor!r}")
    return max(1, min(tokens, math.ceil(tokens * top_k / experts * capacity_factor)))


@dataclass(frozen=True)
class Routing:
    """Where each (choice, token) pair goes: `slot` [top_k * T] indexes the
    flattened [experts * capacity + 1] buffer (the last slot holds the
    dropped ones), `weights` [top_k * T] scales the expert's output."""

    slot: torch.Tensor
    weights: torch.Tensor
    expert: torch.Tensor  # [top_k * T]: the expert each pair chose
    experts: int
    capacity: int
    top_k: int


def route(probs: torch.Tensor, top_k: int, capacity: int, normalize: bool = True) -> Routing:
    """Top-k routing of router probabilities `probs` [T, E] into `capacity`
    slots per expert. `normalize` rescales each token's k weights to sum to 1."""
    if probs.dim() != 2:
        raise PiperError(f"moe.route: probs must be [tokens, experts], got shape "
                         f"{list(probs.shape)}")
    tokens, experts = probs.shape
    if not 1 <= top_k <= experts:
        raise PiperError(f"moe.route: top_k {top_k} must be between 1 and the number of "
                         f"experts {experts}")
    if capacity < 1:
        raise PiperError(f"moe.route: capacity must be at least 1, got {capacity}")
    weights, chosen = probs.topk(top_k, dim=-1)  # [T, k]
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return route_chosen(chosen, weights, experts, capacity)


def route_chosen(chosen: torch.Tensor, weights: torch.Tensor, experts: int,
                 capacity: int) -> Routing:
    """Routing of tokens whose experts a router already chose: `chosen` [T, k]
    expert ids, `weights` [T, k] their weights."""
    top_k = chosen.shape[-1]
    # choice-major order: every token's first choice before any second choice
    expert = chosen.t().reshape(-1)  # [k*T]
    onehot = (expert.unsqueeze(1) == torch.arange(experts, device=chosen.device)).long()
    position = ((onehot.cumsum(0) - 1) * onehot).sum(1)  # rank of the pair in its expert
    slot = torch.where(position < capacity, expert * capacity + position,
                       torch.full_like(position, experts * capacity))
    return Routing(slot, weights.t().reshape(-1), expert, experts, capacity, top_k)


def dispatch(x: torch.Tensor, routing: Routing) -> torch.Tensor:
    """The token rows of `x` [T, dim] in their experts' slots: [E, capacity, dim]
    (zero where a slot is empty)."""
    e, c, k = routing.experts, routing.capacity, routing.top_k
    rows = x.repeat(k, 1)  # [k*T, dim], choice-major like routing.slot
    buf = x.new_zeros(e * c + 1, x.shape[1]).index_add(0, routing.slot, rows)
    return buf[: e * c].view(e, c, x.shape[1])


def combine(y: torch.Tensor, routing: Routing) -> torch.Tensor:
    """Each token's weighted sum of its experts' outputs: y [E, capacity, dim]
    back to [T, dim] (a dropped pair contributes zero)."""
    e, c, k = routing.experts, routing.capacity, routing.top_k
    flat = torch.cat([y.reshape(e * c, y.shape[2]), y.new_zeros(1, y.shape[2])])
    picked = flat.index_select(0, routing.slot) * routing.weights.unsqueeze(1)
    return picked.view(k, -1, y.shape[2]).sum(0)


def load_balancing_loss(probs: torch.Tensor, routing: Routing) -> torch.Tensor:
    """Switch Transformer's auxiliary loss E * sum_e f_e * P_e over the tokens
    of `probs` [T, E]: f_e the fraction of routed (choice, token) pairs that
    chose expert e (dropped ones included), P_e the mean router probability
    of e. Its gradient reaches the router through P_e."""
    e = routing.experts
    onehot = routing.expert.unsqueeze(1) == torch.arange(e, device=probs.device)
    frac = onehot.to(probs.dtype).mean(0)
    return e * (frac * probs.mean(0)).sum()


def route_through_slots(model: torch.nn.Module, capacity_factor: float | None = None) -> list[str]:
    """Run the stacked experts of a transformers MoE model (Qwen3-MoE,
    Mixtral, ... : modules holding `gate_up_proj` [E, 2I, H] and `down_proj`
    [E, H, I]) through slots instead of their grouped matmul, and mark the
    experts' matmuls as an "EP" region, so `expert_parallel` splits them.
    Dropless by default (the same result as the model's own experts up to
    rounding); a `capacity_factor` drops tokens over capacity. Only these
    modules' `forward` changes (on the instances, not the class); the
    weights, their names and the router stay the model's. Returns the paths
    of the modules it changed."""
    capacity(1, 1, 1, capacity_factor)  # checks the factor
    paths = []
    for path, m in model.named_modules():
        if not (isinstance(getattr(m, "gate_up_proj", None), torch.nn.Parameter)
                and isinstance(getattr(m, "down_proj", None), torch.nn.Parameter)
                and m.gate_up_proj.dim() == 3):
            continue
        unsupported = [a for a in ("is_transposed", "has_bias", "has_post_expert_norm")
                       if getattr(m, a, False)] + [
            a for a in ("has_gate", "is_concatenated") if not getattr(m, a, True)]
        if unsupported:
            raise PiperError(f"moe.route_through_slots: '{path}' ({type(m).__name__}) has "
                             f"{', '.join(unsupported)}; slots run experts with a concatenated "
                             "gate/up projection, no bias, not transposed")
        m._piper_capacity_factor = capacity_factor
        m.forward = types.MethodType(_slot_experts_forward, m)
        paths.append(path)
    if not paths:
        raise PiperError(f"moe.route_through_slots: {type(model).__name__} has no stacked "
                         "experts (modules with 3-d gate_up_proj and down_proj parameters)")
    return paths


def _slot_experts_forward(self, hidden_states, top_k_index, top_k_weights):
    tokens, k = top_k_index.shape
    experts = self.gate_up_proj.shape[0]
    cap = capacity(tokens, experts, k, self._piper_capacity_factor)
    routing = route_chosen(top_k_index, top_k_weights, experts, cap)
    slots = dispatch(hidden_states, routing)
    with annotate("EP"):
        gate_up = torch.bmm(slots, self.gate_up_proj.transpose(1, 2))
        y = torch.bmm(self._apply_gate(gate_up), self.down_proj.transpose(1, 2))
    return combine(y, routing).to(hidden_states.dtype)
