"""Sharded checkpoints of training state.

Each rank writes the state it holds (parameters, optimizer state, shards
where the plan shards them) to `rank{r}.pt`, with a manifest describing the
plan layout. Loading into the same layout reads each rank's own file;
loading into another layout reassembles full tensors from the shards and
slices them the way the new plan loads them.
"""

from __future__ import annotations

import json
import os

import torch

from piper.diagnostics import PiperError


def _layout(module, rank: int) -> dict[str, list[int] | None]:
    from piper.analysis.plan_check import programs
    from piper.dialects import sched

    out = {}
    for op in programs(module)[rank].body.block.ops:
        if isinstance(op, sched.LoadOp) or isinstance(op, sched.StoreOp) and not op.is_loss:
            out[op.tensor_name.data] = ([a.data for a in op.shard.data]
                                        if op.shard is not None else None)
    return out


def save_checkpoint(path: str, module, rank: int, world: int, state: dict) -> None:
    os.makedirs(path, exist_ok=True)
    layout = _layout(module, rank)
    torch.save({k: state[k] for k in layout if k in state}, os.path.join(path, f"rank{rank}.pt"))
    with open(os.path.join(path, f"rank{rank}.json"), "w") as f:
        json.dump({"world": world, "layout": layout}, f)


def load_full(path: str) -> dict[str, torch.Tensor]:
    """Full tensors reassembled from every rank's file."""
    files = sorted(f for f in os.listdir(path) if f.endswith(".json"))
    if not files:
        raise PiperError(f"checkpoint {path}: no rank files")
    full, parts = {}, {}
    for f in files:
        meta = json.load(open(os.path.join(path, f)))
        tensors = torch.load(os.path.join(path, f.replace(".json", ".pt")))
        for name, shard in meta["layout"].items():
            if name not in tensors:
                continue
            if shard is None:
                full.setdefault(name, tensors[name])
            else:
                parts.setdefault(name, {})[shard[0]] = (shard[1], tensors[name])
    for name, ps in parts.items():
        if name in full:
            continue
        n = next(iter(ps.values()))[0]
        if sorted(ps) != list(range(n)):
            raise PiperError(f"checkpoint {path}: tensor '{name}' is missing shards")
        full[name] = torch.cat([ps[k][1].reshape(-1) for k in range(n)])
    return full


def load_checkpoint(path: str, module, rank: int, world: int) -> dict[str, torch.Tensor]:
    """This rank's state for `module`, from a checkpoint of any layout."""
    own = os.path.join(path, f"rank{rank}.json")
    layout = _layout(module, rank)
    if os.path.exists(own):
        meta = json.load(open(own))
        if meta["world"] == world and meta["layout"] == layout:
            return torch.load(os.path.join(path, f"rank{rank}.pt"))
    from piper.analysis.plan_check import programs
    from piper.dialects import sched

    full = load_full(path)
    state = {}
    for op in programs(module)[rank].body.block.ops:
        if not isinstance(op, sched.LoadOp):
            continue
        name = op.tensor_name.data
        if name not in full:
            raise PiperError(f"checkpoint {path} has no tensor '{name}'")
        t = full[name].reshape(-1)
        if op.shard is not None:
            k, n = (a.data for a in op.shard.data)
            t = t.chunk(n)[k]
        state[name] = t.reshape(op.result.type.get_shape()).clone()
    return state
