// A pipeline-split error about an op of the input points at its line and
// column under piper-opt (it said `graph.aten: error: ...`).

// RUN: sed '57s/tags {PP = 1}/tags {PP = 0}/' %S/../../dist/Inputs/mlp4.mlir > %t.mlir
// RUN: not piper-opt %t.mlir -p pipeline-split 2>&1 | filecheck %s
// CHECK: split-located.mlir.tmp.mlir:57:5: error: pipeline-split: the gradient of parameter 'blocks.1.fc.bias' (stage 1) is computed by the backward of stage 0
