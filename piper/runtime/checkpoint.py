"""Sharded checkpoints of training state, written atomically, checked before use.

Each rank writes the state it holds (parameters, optimizer state, shards
where the plan shards them) to `rank{r}.pt`, and `rank{r}.json` with the
plan layout of each tensor (its shard, its shape) and the file's SHA-256.
Rank 0 then writes `manifest.json` (the step, the data position, the
world, every file's checksum, the model's names of the tensors) and only
then renames the directory from `.step-N.partial` to its final name: a job
killed while saving leaves a partial directory that is never read.

Periodic checkpoints (`--checkpoint-every K --checkpoint-dir D`) are
`D/step-00000010`, ...; the last `keep` complete ones stay. `latest` finds
the newest complete one (manifest present, every checksum right) for
`--resume`. Loading into the same layout reads each rank's own file;
loading into another layout reassembles full tensors from the shards and
slices them the way the new plan loads them. `verify` checks a checkpoint
before any rank starts, and `to_model_state` gives a plain `nn.Module`
its state dict (`piper.load_checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil

import torch

from piper.analysis.plan_check import programs
from piper.diagnostics import PiperError
from piper.dialects import sched

MANIFEST = "manifest.json"
NAMES = "names.json"  # in a plan directory: the model's state-dict key -> IR tensor name
PREFIX = "step-"


def _layout(module, rank: int) -> dict[str, list[int] | None]:
    out = {}
    for op in programs(module)[rank].body.block.ops:
        if isinstance(op, sched.LoadOp) or isinstance(op, sched.StoreOp) and not op.is_loss:
            out[op.tensor_name.data] = ([a.data for a in op.shard.data]
                                        if op.shard is not None else None)
    return out


def _block(full: torch.Tensor, b: int, m: int, d: int, g: int) -> torch.Tensor:
    """Block b of m along dim d, of each of dim d's g groups."""
    if g == 1:
        return full.chunk(m, dim=d)[b]
    return full.unflatten(d, (g, -1)).chunk(m, dim=d + 1)[b].flatten(d, d + 1)


def take_shard(full: torch.Tensor, shard) -> torch.Tensor:
    """Shard [k, n] (the k-th flat slice), [k, n, d] (the k-th block along
    dim d), [k, n, d, p] (flat slice k % p of block k // p of n / p along
    dim d) or [k, n, d, p, g] (the same, dim d seen as g groups, the block
    taken from each) of a full tensor."""
    k, n = shard[0], shard[1]
    if len(shard) == 2:
        return full.reshape(-1).chunk(n)[k]
    d, p, g = (list(shard[2:]) + [1, 1])[:3]
    block = _block(full, k // p, n // p, d, g)
    return block if p == 1 else block.reshape(-1).chunk(p)[k % p]


def join_shards(parts: dict[int, torch.Tensor], shard, shape) -> torch.Tensor:
    """The full tensor of `shape` from its shards {k: tensor}; `shard` is any
    one shard's [k, n], [k, n, d], [k, n, d, p] or [k, n, d, p, g]."""
    ordered = [parts[k] for k in sorted(parts)]
    if len(shard) == 2:
        return torch.cat([p.reshape(-1) for p in ordered]).reshape(shape)
    n = shard[1]
    d, p, g = (list(shard[2:]) + [1, 1])[:3]
    block = list(shape)
    block[d] //= n // p
    blocks = [torch.cat([t.reshape(-1) for t in ordered[b * p:(b + 1) * p]]).reshape(block)
              for b in range(n // p)]
    if g == 1:
        return torch.cat(blocks, dim=d).reshape(shape)
    return torch.cat([x.unflatten(d, (g, -1)) for x in blocks], dim=d + 1).flatten(d, d + 1)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: str, module, rank: int, world: int, state: dict) -> None:
    """This rank's files (every rank calls it; `commit` finishes the directory)."""
    os.makedirs(path, exist_ok=True)
    layout = _layout(module, rank)
    tensors = {k: state[k] for k in layout if k in state}
    pt = os.path.join(path, f"rank{rank}.pt")
    torch.save(tensors, pt)
    meta = {"world": world, "layout": layout, "sha256": sha256(pt),
            "shapes": {k: list(v.shape) for k, v in tensors.items()}}
    with open(os.path.join(path, f"rank{rank}.json"), "w") as f:
        json.dump(meta, f)


def step_dir(ckpt_dir: str, step: int) -> str:
    return os.path.join(ckpt_dir, f"{PREFIX}{step:08d}")


def partial_dir(final: str) -> str:
    head, tail = os.path.split(final.rstrip(os.sep))
    return os.path.join(head, f".{tail}.partial")


def commit(tmp: str, final: str, world: int, step: int, plan_dir: str,
           keep: int = 0) -> None:
    """Rank 0, once every rank's files are in `tmp`: the manifest, then the
    rename that makes the checkpoint complete; then drop all but the newest
    `keep` periodic checkpoints (0: keep all)."""
    files = {}
    for r in range(world):
        meta_path = os.path.join(tmp, f"rank{r}.json")
        with open(meta_path) as f:
            files[f"rank{r}.pt"] = json.load(f)["sha256"]
        files[f"rank{r}.json"] = sha256(meta_path)
    manifest = {"format": 1, "step": step, "data_position": step, "world": world,
                "files": files, "plan": _plan_sha(plan_dir), "names": _names(plan_dir),
                "shapes": _full_shapes(plan_dir)}
    with open(os.path.join(tmp, MANIFEST), "w") as f:
        json.dump(manifest, f)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep:
        parent = os.path.dirname(final.rstrip(os.sep))
        done = sorted(d for d in os.listdir(parent) if d.startswith(PREFIX))
        for d in done[:-keep]:
            shutil.rmtree(os.path.join(parent, d), ignore_errors=True)


def _full_shapes(plan_dir: str) -> dict[str, list[int]]:
    """Each tensor's full shape (the plan's initial state): what joins flat
    slices of blocks (`shard k of n dim d parts p`) back into a tensor."""
    path = os.path.join(plan_dir, "state.pt")
    if not os.path.exists(path):
        return {}
    state = torch.load(path, weights_only=True, mmap=True)
    return {k: list(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def _plan_sha(plan_dir: str) -> str:
    path = os.path.join(plan_dir, "plan.mlir")
    return sha256(path) if os.path.exists(path) else ""


def _names(plan_dir: str) -> dict[str, str]:
    path = os.path.join(plan_dir, NAMES)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def verify(path: str) -> dict:
    """The checkpoint's manifest, after checking that every file is there
    with its checksum; one error naming the file otherwise."""
    if not os.path.isdir(path):
        raise PiperError(f"checkpoint {path}: no such directory")
    mpath = os.path.join(path, MANIFEST)
    if not os.path.exists(mpath):
        if any(f.endswith(".json") for f in os.listdir(path)):
            raise PiperError(f"checkpoint {path}: no {MANIFEST}: the job that wrote it did "
                             f"not finish saving")
        raise PiperError(f"checkpoint {path}: not a checkpoint (no {MANIFEST}, no rank files)")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
        files = dict(manifest["files"])
        int(manifest["world"]), int(manifest["step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PiperError(f"{mpath}: not a checkpoint manifest ({type(e).__name__}: {e})") from None
    for name, want in sorted(files.items()):
        fpath = os.path.join(path, name)
        if not os.path.exists(fpath):
            raise PiperError(f"checkpoint {path}: {name} is missing")
        if sha256(fpath) != want:
            raise PiperError(f"checkpoint {path}: {name} is damaged (its checksum is not the "
                             f"one the manifest recorded)")
    return manifest


def latest(ckpt_dir: str) -> tuple[str, dict] | None:
    """The newest complete checkpoint in `ckpt_dir` and its manifest."""
    if not os.path.isdir(ckpt_dir):
        return None
    for d in sorted((d for d in os.listdir(ckpt_dir) if d.startswith(PREFIX)), reverse=True):
        path = os.path.join(ckpt_dir, d)
        try:
            return path, verify(path)
        except PiperError:
            continue  # damaged: an older one may do
    return None


def check_matches(path: str, module, state_shapes: dict[str, list[int]]) -> None:
    """Before launch: the checkpoint holds every tensor the plan loads,
    with the number of elements of the plan's full tensor."""
    numel: dict[str, int] = {}
    whole: set[str] = set()
    counted: set[tuple[str, int]] = set()  # a shard several ranks hold counts once
    for f in sorted(os.listdir(path)):
        if f.startswith("rank") and f.endswith(".json"):
            with open(os.path.join(path, f)) as fh:
                meta = json.load(fh)
            for name, shape in meta.get("shapes", {}).items():
                n = math.prod(shape)
                shard = meta["layout"].get(name)
                if shard is None:
                    numel[name] = n
                    whole.add(name)
                elif name not in whole and (name, shard[0]) not in counted:
                    counted.add((name, shard[0]))
                    numel[name] = numel.get(name, 0) + n
    wanted = {op.tensor_name.data for prog in programs(module).values()
              for op in prog.body.block.ops if isinstance(op, sched.LoadOp)}
    for name in sorted(wanted):
        if name not in numel:
            raise PiperError(f"checkpoint {path} has no tensor '{name}': it is from another "
                             f"model (or another optimizer)")
        shape = state_shapes.get(name)
        if shape is not None:
            n = math.prod(shape)
            if n != numel[name]:
                raise PiperError(f"checkpoint {path}: tensor '{name}' has {numel[name]} "
                                 f"elements; the plan's has {n} ({shape}): another model")


def load_full(path: str) -> dict[str, torch.Tensor]:
    """Full tensors reassembled from every rank's file."""
    files = sorted(f for f in os.listdir(path) if f.startswith("rank") and f.endswith(".json"))
    if not files:
        raise PiperError(f"checkpoint {path}: no rank files")
    full, parts = {}, {}
    for f in files:
        with open(os.path.join(path, f)) as fh:
            meta = json.load(fh)
        tensors = torch.load(os.path.join(path, f.replace(".json", ".pt")), weights_only=True)
        for name, shard in meta["layout"].items():
            if name not in tensors:
                continue
            if shard is None:
                full.setdefault(name, tensors[name])
            else:
                parts.setdefault(name, {})[shard[0]] = (shard, tensors[name])
    shapes = {}
    if os.path.exists(os.path.join(path, MANIFEST)):
        with open(os.path.join(path, MANIFEST)) as fh:
            shapes = json.load(fh).get("shapes", {})
    for name, ps in parts.items():
        if name in full:
            continue
        shard = next(iter(ps.values()))[0]
        n = shard[1]
        if sorted(ps) != list(range(n)):
            raise PiperError(f"checkpoint {path}: tensor '{name}' is missing shards")
        if len(shard) > 3:  # flat slices of blocks: the manifest has the shape
            if name not in shapes:
                raise PiperError(f"checkpoint {path}: tensor '{name}' is stored in flat slices "
                                 "of blocks and the manifest has no shape for it")
            full[name] = join_shards({k: t for k, (_, t) in ps.items()}, shard, shapes[name])
        elif len(shard) > 2:  # blocks along a dim: the full shape is known from them
            full[name] = torch.cat([ps[k][1] for k in range(n)], dim=shard[2])
        else:
            full[name] = torch.cat([ps[k][1].reshape(-1) for k in range(n)])
    return full


def load_checkpoint(path: str, module, rank: int, world: int) -> dict[str, torch.Tensor]:
    """This rank's state for `module`, from a checkpoint of any layout."""
    own = os.path.join(path, f"rank{rank}.json")
    layout = _layout(module, rank)
    if os.path.exists(own):
        with open(own) as f:
            meta = json.load(f)
        if meta["world"] == world and meta["layout"] == layout:
            return torch.load(os.path.join(path, f"rank{rank}.pt"), weights_only=True)
    full = load_full(path)
    state = {}
    for op in programs(module)[rank].body.block.ops:
        if not isinstance(op, sched.LoadOp):
            continue
        name = op.tensor_name.data
        if name not in full:
            raise PiperError(f"checkpoint {path} has no tensor '{name}'")
        t = full[name]
        if op.shard is not None:
            shard = [a.data for a in op.shard.data]
            if len(shard) == 3:  # full[name] has its own shape only when stored whole
                t = t.reshape(_full_shape(op.result.type.get_shape(), shard))
            t = take_shard(t, shard)
        state[name] = t.reshape(op.result.type.get_shape()).clone()
    return state


def _full_shape(local: list[int], shard: list[int]) -> list[int]:
    shape = list(local)
    shape[shard[2]] *= shard[1]
    return shape


def to_model_state(path: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of `model` (its own keys) from a checkpoint: each key
    the plan trained, reshaped to the model's tensor."""
    manifest = verify(path)
    names = manifest.get("names") or {}
    if not names:
        raise PiperError(f"checkpoint {path}: its manifest has no model names (written from a "
                         f"plan directory without {NAMES}); load it with the plan instead")
    full = load_full(path)
    own = model.state_dict()
    out = {}
    for key, ir in names.items():
        if key not in own:
            raise PiperError(f"checkpoint {path}: it holds '{key}', which this model does not "
                             f"have: it is from another model")
        if ir not in full:
            continue  # a buffer the plan did not train
        t = full[ir]
        if t.numel() != own[key].numel():
            raise PiperError(f"checkpoint {path}: '{key}' has {t.numel()} elements, this "
                             f"model's has {own[key].numel()}: it is from another model")
        out[key] = t.reshape(own[key].shape)
    missing = [k for k, _ in model.named_parameters() if k not in out]
    if missing:
        raise PiperError(f"checkpoint {path} has no '{missing[0]}' of this model")
    return out
