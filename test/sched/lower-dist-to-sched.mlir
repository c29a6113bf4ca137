// RUN: piper-opt %S/../dist/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},order{text="rank0: 0F0 0F1 0B0 0B1; rank1: 1F0 1B0 1F1 1B1"},lower-dist-to-sched,verify-plan' | filecheck %s

// One program per device; sends start after their producer, receives are
// waited on just before first use, buffers are freed after their last use
// (a sent buffer only after its send completes).
// CHECK-LABEL: sched.program @rank0 device 0 {
// CHECK: %a_F0, %x_F0 = sched.call @F0(%w0, %input0) task "0F0" stream "compute"
// CHECK-NEXT: sched.free %input0
// CHECK-NEXT: %[[S:.*]] = sched.send %a_F0 to 1 tag 0 stream "comm" : tensor<4xf32>
// CHECK-NEXT: sched.wait %[[S]]
// CHECK-NEXT: sched.free %a_F0
// CHECK: %[[R:.*]] = sched.recv from 1 tag {{[0-9]+}} stream "comm" : tensor<4xf32>
// CHECK-NEXT: %[[G:.*]] = sched.wait %[[R]] : tensor<4xf32>
// CHECK: sched.call @B0(%x_F0, %[[G]]) task "0B0"
// CHECK: sched.sum %w0_B0, %w0_B0_1 scale 1.0
// CHECK: sched.call @OPT0
// CHECK: sched.store "w0"
// CHECK-LABEL: sched.program @rank1 device 1 {
// CHECK: sched.recv from 0 tag 0 stream "comm"
// CHECK: sched.call @F1({{.*}}) task "1F0"
// CHECK: sched.call @B1({{.*}}) task "1B0"
// CHECK: sched.call @F1({{.*}}) task "1F1"
// CHECK: sched.store loss "loss"
// CHECK: sched.call @B1({{.*}}) task "1B1"
