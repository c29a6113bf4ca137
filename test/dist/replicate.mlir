// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,replicate{n=2}' | filecheck %s

// A dp axis is added (device = pp_rank * dp + replica); gradients are
// all-reduced across replicas before each optimizer task.
// CHECK: dist.plan @step mesh [pp = 2, dp = 2] microbatches 1 {
// CHECK-DAG: dist.task F stage 0 mb 0 replica 0 on 0 @F0
// CHECK-DAG: dist.task F stage 0 mb 0 replica 1 on 1 @F0
// CHECK-DAG: dist.task F stage 1 mb 0 replica 1 on 3 @F1
// CHECK-DAG: dist.send %{{.*}} from 1 to 3 bytes 16
// CHECK-DAG: dist.fill 0.5 on 3 : tensor<f32>
// CHECK-DAG: dist.all_reduce sum %{{.*}}, %{{.*}} group [2, 3] bytes 8 : (tensor<f32>, tensor<f32>)
// CHECK: %[[G:.*]], %[[G1:.*]] = dist.all_reduce sum %w0_B0, %w0_B0_1 group [0, 1] bytes 32
// CHECK: dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0(%w0, %[[G]])
// CHECK: dist.task OPT stage 0 mb 0 replica 1 on 1 @OPT0(%w0_1, %[[G1]])
