// RUN: piper-opt %S/../dist/Inputs/mlp4.mlir -p 'pipeline-split{stages=2}' | filecheck %s
// RUN: not piper-opt %S/../dist/Inputs/mlp4.mlir -p 'pipeline-split{stages=-1}' 2>&1 | filecheck %s --check-prefix=NEG

// Four PP regions (blocks 0-3) spread evenly over 2 stages, consecutive
// regions together: blocks 0 and 1 in stage 0, blocks 2, 3 and the head
// in stage 1.
// CHECK-LABEL: func.func @F0(
// CHECK-SAME: graph.name = "blocks.0.fc.weight"
// CHECK-SAME: graph.name = "blocks.1.fc.weight"
// CHECK-NOT: graph.name = "blocks.2.fc.weight"
// CHECK-LABEL: func.func @F1(
// CHECK-SAME: graph.name = "blocks.2.fc.weight"
// CHECK-SAME: graph.name = "blocks.3.fc.weight"
// CHECK-SAME: graph.name = "head.fc.weight"
// CHECK-SAME: graph.kind = "act", graph.from = "F0#0"
// CHECK-NOT: func.func @F2

// NEG: pipeline-split: stages must be 0 or more, got -1
