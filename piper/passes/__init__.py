"""Piper's passes: one file per pass (or small family), each a ModulePass.

`all_passes()` is the registry piper-opt and the directive API read; a pass
module is imported only when its pass is asked for.
"""

import importlib
from collections.abc import Callable

from xdsl.passes import ModulePass

# pass name -> (module, class name)
PASSES: dict[str, tuple[str, str]] = {
    "pipeline-split": ("piper.passes.pipeline_split", "PipelineSplit"),
    "split-backward": ("piper.passes.split_backward", "SplitBackward"),
    "convert-graph-to-dist": ("piper.passes.graph_to_dist", "ConvertGraphToDist"),
    "microbatch": ("piper.passes.replicate_microbatch", "Microbatch"),
    "replicate": ("piper.passes.replicate_microbatch", "Replicate"),
    "expert-parallel": ("piper.passes.expert_parallel", "ExpertParallel"),
    "schedule": ("piper.passes.schedule", "Schedule"),
    "lower-dist-to-sched": ("piper.passes.lower_dist_to_sched", "LowerDistToSched"),
    "verify-plan": ("piper.passes.verify_plan", "VerifyPlan"),
    "simulate": ("piper.passes.simulate", "Simulate"),
    "zero": ("piper.passes.zero", "Zero"),
    "recompute": ("piper.passes.recompute", "Recompute"),
    "fuse-elementwise": ("piper.passes.fuse_elementwise", "FuseElementwise"),
    "fuse-reductions": ("piper.passes.fuse_reductions", "FuseReductions"),
    "fuse-matmul-epilogue": ("piper.passes.fuse_matmul_epilogue", "FuseMatmulEpilogue"),
    "kernel-backend": ("piper.passes.kernel_backend", "KernelBackend"),
}


def all_passes() -> dict[str, Callable[[], type[ModulePass]]]:
    def loader(module: str, cls: str) -> Callable[[], type[ModulePass]]:
        return lambda: getattr(importlib.import_module(module), cls)

    return {name: loader(m, c) for name, (m, c) in PASSES.items()}
