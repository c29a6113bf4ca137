// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2}' | filecheck %s

// Every per-microbatch op is cloned; gradients are summed before the
// optimizer; the tangent is 1/n and the loss the mean of the microbatches.
// CHECK: dist.plan @step mesh [pp = 2] microbatches 2 {
// CHECK-DAG: dist.input "input0" replica 0 mb 0 on 0
// CHECK-DAG: dist.input "input0" replica 0 mb 1 on 0
// CHECK-DAG: dist.task F stage 0 mb 0 replica 0 on 0 @F0
// CHECK-DAG: dist.task F stage 0 mb 1 replica 0 on 0 @F0
// CHECK-DAG: dist.task B stage 1 mb 1 replica 0 on 1 @B1
// CHECK-DAG: dist.fill 0.5 on 1 : tensor<f32>
// CHECK: %[[L:.*]] = dist.sum %loss_F1, %loss_F1_1 scale 0.5 on 1 : tensor<f32>
// CHECK: dist.store loss "loss" %[[L]] on 1
// CHECK: %[[G:.*]] = dist.sum %w0_B0, %w0_B0_1 scale 1.0 on 0 : tensor<4xf32>
// CHECK: dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0(%w0, %[[G]])
