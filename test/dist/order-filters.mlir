// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},order{text="rank0: [PASS=F] [PASS=B]; rank1: [MB=0] 1F1&[PP=1 PASS=B MB=1]"}' | filecheck %s
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},order{text="rank0: [PASS=F] [PASS=B] [PASS=F]; rank1: [*]"}' 2>&1 | filecheck %s --check-prefix=REPEAT
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},order{text="rank0: [*] 0F7; rank1: [*]"}' 2>&1 | filecheck %s --check-prefix=NONE
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},order{text="rank0: [*]; rank1: [PASS=Q]"}' 2>&1 | filecheck %s --check-prefix=KIND
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},order{text="rank0: [*]; rank1: [*]; rank2: [*]"}' 2>&1 | filecheck %s --check-prefix=RANK

// Entries are filters: rank 0 runs every forward, then every backward;
// rank 1 runs microbatch 0 (F then B), then 1F1 overlapped with 1B1.
// CHECK: dist.task F stage 0 mb 0
// CHECK: dist.task F stage 0 mb 1
// CHECK: dist.task F stage 1 mb 0
// CHECK: dist.task B stage 1 mb 0
// CHECK: dist.task B stage 0 mb 0
// CHECK: dist.task F stage 1 mb 1
// CHECK: dist.task B stage 1 mb 1
// CHECK: dist.task B stage 0 mb 1

// REPEAT: error: order: rank 0 order repeats [PASS=F] (entry 2; entry 0 already ordered it)
// NONE: error: order: rank 0 order entry 1 (0F7) matches no task of device 0
// KIND: error: order: rank 1: filter: PASS 'Q' is not one of F, B, BI, BW, OPT (I and W are accepted for BI and BW)
// RANK: error: order: an order for rank 2, but the plan's pipeline ranks are 0..1
