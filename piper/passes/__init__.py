"""Piper's passes: one file per pass (or small family), each a ModulePass.

Each directive of a strategy *is* a pass of the same name and options
(DIRECTIVE_PASSES): `piper.compile(..., strategy=[...])` builds these pass
objects from the directives, and `piper-opt -p 'place{pp=2},split{n=4}'`
parses the same ones. The other passes are the steps below the directives
(lowering, fusion parts, verification). ALIASES are old pass names kept
for one release.

`all_passes()` is the registry piper-opt and the directive API read; a pass
module is imported only when its pass is asked for.
"""

import importlib
from collections.abc import Callable

from xdsl.passes import ModulePass

# directive (and pass) name -> (module, class name), in the order they apply
DIRECTIVE_PASSES: dict[str, tuple[str, str]] = {
    "recompute": ("piper.passes.recompute", "Recompute"),
    "split_backward": ("piper.passes.split_backward", "SplitBackward"),
    "precision": ("piper.passes.precision", "Precision"),
    "place": ("piper.passes.place", "Place"),
    "split": ("piper.passes.split_replicate", "Split"),
    "replicate": ("piper.passes.split_replicate", "Replicate"),
    "shard": ("piper.passes.shard", "Shard"),
    "order": ("piper.passes.order", "Order"),
    "tensor_parallel": ("piper.passes.tensor_parallel", "TensorParallel"),
    "expert_parallel": ("piper.passes.expert_parallel", "ExpertParallel"),
    "fuse": ("piper.passes.fuse", "Fuse"),
}

# the levels below the directives
LOWERING_PASSES: dict[str, tuple[str, str]] = {
    "pipeline-split": ("piper.passes.pipeline_split", "PipelineSplit"),
    "convert-graph-to-dist": ("piper.passes.graph_to_dist", "ConvertGraphToDist"),
    "overlap-pairs": ("piper.passes.overlap_pairs", "OverlapPairs"),
    "lower-dist-to-sched": ("piper.passes.lower_dist_to_sched", "LowerDistToSched"),
    "verify-plan": ("piper.passes.verify_plan", "VerifyPlan"),
    "loss-scale": ("piper.passes.loss_scale", "LossScale"),
    "offload": ("piper.passes.offload", "Offload"),
    "simulate": ("piper.passes.simulate", "Simulate"),
    "fuse-elementwise": ("piper.passes.fuse_elementwise", "FuseElementwise"),
    "fuse-reductions": ("piper.passes.fuse_reductions", "FuseReductions"),
    "fuse-matmul-epilogue": ("piper.passes.fuse_matmul_epilogue", "FuseMatmulEpilogue"),
    "kernel-backend": ("piper.passes.kernel_backend", "KernelBackend"),
}

# old name -> (module, class name, the directive pass it stands for)
ALIASES: dict[str, tuple[str, str, str]] = {
    "microbatch": ("piper.passes.split_replicate", "Microbatch", "split"),
    "zero": ("piper.passes.shard", "Zero", "shard"),
    "schedule": ("piper.passes.order", "Schedule", "order"),
    "expert-parallel": ("piper.passes.expert_parallel", "ExpertParallelAlias", "expert_parallel"),
    "split-backward": ("piper.passes.split_backward", "SplitBackwardAlias", "split_backward"),
}

PASSES: dict[str, tuple[str, str]] = {
    **DIRECTIVE_PASSES, **LOWERING_PASSES, **{k: v[:2] for k, v in ALIASES.items()}}


def pass_class(name: str) -> type[ModulePass]:
    """The pass class registered as `name` (imports its module)."""
    module, cls = PASSES[name]
    return getattr(importlib.import_module(module), cls)


def all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    return {name: (lambda n=name: pass_class(n)) for name in PASSES}
