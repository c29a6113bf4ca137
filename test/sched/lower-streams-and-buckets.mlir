// RUN: piper-opt %S/../dist/Inputs/two_params.mlir -p 'convert-graph-to-dist{streams="0:compute1"},replicate{n=2 bucket_bytes=32 stream="grads"},lower-dist-to-sched,verify-plan' | filecheck %s

// Streams set at the dist level reach the device programs; a gradient
// bucket's pack and unpack become calls of generated graph functions
// (aten view/cat and slice/view), shared by both devices.
// CHECK: func.func @pack0(%0: tensor<4xf32>, %1: tensor<2x2xf32>) -> tensor<8xf32> {
// CHECK-NEXT: %2 = graph.aten "aten.view.default"(%1, [4]) : (tensor<2x2xf32>) -> tensor<4xf32>
// CHECK-NEXT: %3 = graph.aten "aten.cat.default"([%0, %2], 0) : (tensor<4xf32>, tensor<4xf32>) -> tensor<8xf32>
// CHECK: func.func @unpack0(%0: tensor<8xf32>) -> (tensor<4xf32>, tensor<2x2xf32>) {
// CHECK-NEXT: graph.aten "aten.slice.Tensor"(%0, 0, 0, 4)
// CHECK-NEXT: %[[S:.*]] = graph.aten "aten.slice.Tensor"(%0, 0, 4, 8)
// CHECK-NEXT: graph.aten "aten.view.default"(%[[S]], [2, 2]) : (tensor<4xf32>) -> tensor<2x2xf32>
// CHECK-LABEL: sched.program @rank0 device 0 {
// CHECK: sched.call @F0({{.*}}) task "0F0" stream "compute1"
// CHECK: sched.call @B0({{.*}}) task "0B0" stream "compute1"
// CHECK: %[[P:.*]] = sched.call @pack0(%w_B0, %b_B0) task "pack" stream "compute"
// CHECK: %[[H:.*]] = sched.collective all_reduce sum %[[P]] group [0, 1] tag {{[0-9]+}} stream "grads" : tensor<8xf32> -> tensor<8xf32>
// CHECK: %[[R:.*]] = sched.wait %[[H]] : tensor<8xf32>
// CHECK: sched.call @unpack0(%[[R]]) task "unpack" stream "compute"
// CHECK: sched.call @OPT0({{.*}}) task "0OPT0" stream "compute1"
// CHECK-LABEL: sched.program @rank1 device 1 {
// CHECK: sched.call @pack0
// CHECK: sched.call @unpack0
