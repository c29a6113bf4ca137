"""place: put the pipeline stages on devices (the `place` directive).

The first directive pass: it turns the captured step into the global
training DAG. On a captured step (one @forward with PP-tagged regions) it
first splits the step into stage functions (pipeline-split, `stages=N`
merging the regions into N stages); on stage functions it builds the
dist.plan (convert-graph-to-dist). Options:

    pp=K placement="loop"|"v"   stages over K pipeline devices
    devices="0:0,1:1,2:1,3:0"   stage:device for every stage (the form the
                                Python `place({"PP": s}, devices=[d])`
                                directives compile to)
    streams="1:compute1"        stage:stream for tasks off the compute stream
    stages=N                    merge the PP regions into N stages first

    piper-opt step.mlir -p 'place{pp=2},split{n=4},order{schedule="1f1b"}'
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from piper.diagnostics import PiperError
from piper.passes.func_utils import functions
from piper.passes.graph_to_dist import ConvertGraphToDist
from piper.passes.pipeline_split import PipelineSplit


@dataclass(frozen=True)
class Place(ModulePass):
    """Stages on pipeline devices: pipeline-split if the step is not split
    yet, then convert-graph-to-dist."""

    name = "place"

    pp: int = 0  # pipeline devices; 0: one per stage
    placement: str = "loop"
    devices: str = ""  # "stage:device,...": explicit (overrides pp/placement)
    streams: str = ""  # "stage:stream,...": compute stream of those stages' tasks
    stages: int = 0  # merge the PP regions into this many stages (unsplit input only)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.pp < 0:
            raise PiperError(f"place: pp must be 0 (one device per stage) or more, got {self.pp}")
        fns = functions(op)
        if "F0" not in fns and "forward" in fns:
            PipelineSplit(stages=self.stages).apply(ctx, op)
        elif self.stages:
            raise PiperError("place: stages=N merges the regions of a captured step; this "
                             "input is already split into stage functions")
        ConvertGraphToDist(pp=self.pp, placement=self.placement, stages=self.devices,
                           streams=self.streams).apply(ctx, op)
