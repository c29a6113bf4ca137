// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist{stages="0:1,1:0" streams="1:side"}' | filecheck %s
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist{stages="0:0"}' 2>&1 | filecheck %s --check-prefix=MISSING
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist{stages="0:0,1:2"}' 2>&1 | filecheck %s --check-prefix=IDLE
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist{stages="0:0,0:1"}' 2>&1 | filecheck %s --check-prefix=TWICE
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist{stages="0:0,5:1"}' 2>&1 | filecheck %s --check-prefix=RANGE
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist{stages="0:0,1"}' 2>&1 | filecheck %s --check-prefix=FORM

// Explicit placement (what `place` directives compile to): stage 0 on
// device 1, stage 1 on device 0; stage 1's tasks on stream "side".
// CHECK: dist.plan @step mesh [pp = 2] microbatches 1 {
// CHECK: dist.task F stage 0 mb 0 replica 0 on 1 @F0
// CHECK: dist.send %a_F0 from 1 to 0
// CHECK: dist.task F stage 1 mb 0 replica 0 on 0 stream "side" @F1
// CHECK: dist.task B stage 1 mb 0 replica 0 on 0 stream "side" @B1
// CHECK: dist.task B stage 0 mb 0 replica 0 on 1 @B0
// CHECK: dist.task OPT stage 1 mb 0 replica 0 on 0 stream "side" @OPT1

// MISSING: error: convert-graph-to-dist: stages gives no device for stage 1
// IDLE: error: convert-graph-to-dist: device 1 runs no stage (devices must be 0..2 with a stage each)
// TWICE: error: convert-graph-to-dist: stages gives stage 0 twice
// RANGE: error: convert-graph-to-dist: stages names stage 5; the model has stages 0..1
// FORM: error: convert-graph-to-dist: stages entry '1' is not STAGE:VALUE
