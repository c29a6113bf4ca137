// pipeline-split reads a captured step's values by kind: an argument or
// result of @forward, @backward or @optimizer of a kind capture never gives
// it is one located error (a gradient marked "tangent" was an internal
// error: "%add is not available").

// RUN: sed 's/graph.kind = "grad"} loc(unknown)) -> /graph.kind = "tangent"} loc(unknown)) -> /' %S/../Inputs/tied_two_stage.mlir > %t.opt.mlir
// RUN: not piper-opt %t.opt.mlir -p pipeline-split 2>&1 | filecheck %s --check-prefix=OPT
// OPT: opt.mlir:39:3: error: pipeline-split: @optimizer argument 3 has graph.kind 'tangent'; a captured step's @optimizer arguments are param, grad, state
// OPT-NOT: internal error

// RUN: sed 's/graph.name = "loss", graph.kind = "loss"/graph.name = "loss", graph.kind = "act"/' %S/../Inputs/tied_two_stage.mlir > %t.fwd.mlir
// RUN: not piper-opt %t.fwd.mlir -p pipeline-split 2>&1 | filecheck %s --check-prefix=FWD
// FWD: fwd.mlir:{{[0-9]+}}:3: error: pipeline-split: @forward result 0 has graph.kind 'act'; a captured step's @forward results are loss, saved
