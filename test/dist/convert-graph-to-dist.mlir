// RUN: piper-opt %S/Inputs/two_stage.mlir -p convert-graph-to-dist | filecheck %s
// RUN: piper-opt %S/Inputs/two_stage.mlir -p convert-graph-to-dist | piper-opt | filecheck %s

// CHECK: dist.plan @step mesh [pp = 2] microbatches 1 {
// CHECK-NEXT: %w0 = dist.load "w0" on 0 : tensor<4xf32>
// CHECK-NEXT: %input0 = dist.input "input0" replica 0 mb 0 on 0 : tensor<4xf32>
// CHECK-NEXT: %a_F0, %x_F0 = dist.task F stage 0 mb 0 replica 0 on 0 @F0(%w0, %input0)
// CHECK-NEXT: %w1 = dist.load "w1" on 1
// CHECK-NEXT: %[[A:.*]] = dist.send %a_F0 from 0 to 1 bytes 16 : tensor<4xf32>
// CHECK-NEXT: %loss_F1, %a_F1 = dist.task F stage 1 mb 0 replica 0 on 1 @F1(%w1, %[[A]])
// CHECK-NEXT: dist.store loss "loss" %loss_F1 on 1 : tensor<f32>
// CHECK-NEXT: %tangent = dist.fill 1.0 on 1 : tensor<f32>
// CHECK-NEXT: %a_B1, %w1_B1 = dist.task B stage 1 mb 0 replica 0 on 1 @B1(%a_F1, %w1, %tangent)
// CHECK-NEXT: %[[G:.*]] = dist.send %a_B1 from 1 to 0 bytes 16
// CHECK-NEXT: %w0_B0 = dist.task B stage 0 mb 0 replica 0 on 0 @B0(%x_F0, %[[G]])
// CHECK-NEXT: %w0_OPT0 = dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0(%w0, %w0_B0)
// CHECK-NEXT: dist.store "w0" %w0_OPT0 on 0
// CHECK-NEXT: %w1_OPT1 = dist.task OPT stage 1 mb 0 replica 0 on 1 @OPT1(%w1, %w1_B1)
// CHECK-NEXT: dist.store "w1" %w1_OPT1 on 1
