// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},order{text="rank0: 0F0 0F1 0B0 0B1; rank1: 1F0 1B0 1F1 1B1"}' | filecheck %s
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},order{text="rank0: 0F0 0B0 0F1 0B1; rank1: 1F1 1B1 1F0 1B0"}' 2>&1 | filecheck %s --check-prefix=DEADLOCK
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},order{text="rank0: 0F0 0F1 0B0; rank1: 1F0 1B0 1F1 1B1"}' 2>&1 | filecheck %s --check-prefix=MISSING

// The plan follows each rank's order (1F1B on rank 1).
// CHECK: dist.task F stage 0 mb 0
// CHECK: dist.task F stage 1 mb 0
// CHECK: dist.task B stage 1 mb 0
// CHECK: dist.task F stage 1 mb 1
// CHECK: dist.task B stage 1 mb 1

// DEADLOCK: error: schedule deadlocks: device 0 at 0B0 waits for 1B0; device 1 at 1F1 waits for 0F1
// MISSING: error: order: rank 0 order does not match its tasks; missing 0B1
