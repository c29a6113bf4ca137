// RUN: piper-opt %s | filecheck %s
// RUN: piper-opt %s | piper-opt | filecheck %s
// RUN: piper-opt %s --print-debuginfo | piper-opt --print-debuginfo | filecheck %s --check-prefix=LOC
// RUN: piper-opt %s --print-debuginfo > %t && piper-opt %t --print-debuginfo > %t2 && diff %t %t2
// Round-trip of kernel.fused (each kind) and kernel.yield.

// CHECK-LABEL: func.func @elementwise
func.func @elementwise(%x: tensor<4x8xf32>, %b: tensor<8xf32>, %s: tensor<f64>) -> (tensor<4x8xf32>, tensor<4x8xi1>) {
  // CHECK:      %r, %m = kernel.fused elementwise domain [4, 8] block [32] warps 1 (%x, %b, %s) {
  // CHECK-NEXT: ^bb0(%xa: tensor<4x8xf32>, %ba: tensor<8xf32>, %sa: tensor<f64>):
  // CHECK-NEXT:   %0 = graph.aten "aten.add.Tensor"(%xa, %ba, "alpha" = 2.0) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  // CHECK-NEXT:   %1 = graph.aten "aten.mul.Tensor"(%sa, %0) : (tensor<f64>, tensor<4x8xf32>) -> tensor<4x8xf32>
  // CHECK-NEXT:   %2 = graph.aten "aten.gt.Scalar"(%1, 0) : (tensor<4x8xf32>) -> tensor<4x8xi1>
  // CHECK-NEXT:   kernel.yield %1, %2 : tensor<4x8xf32>, tensor<4x8xi1>
  // CHECK-NEXT: } : (tensor<4x8xf32>, tensor<8xf32>, tensor<f64>) -> (tensor<4x8xf32>, tensor<4x8xi1>)
  // LOC: } : (tensor<4x8xf32>, tensor<8xf32>, tensor<f64>) -> (tensor<4x8xf32>, tensor<4x8xi1>) loc("fc")
  %r, %m = kernel.fused elementwise domain [4, 8] block [32] warps 1 (%x, %b, %s) {
  ^bb0(%xa: tensor<4x8xf32>, %ba: tensor<8xf32>, %sa: tensor<f64>):
    %0 = graph.aten "aten.add.Tensor"(%xa, %ba, "alpha" = 2.0) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
    %1 = graph.aten "aten.mul.Tensor"(%sa, %0) : (tensor<f64>, tensor<4x8xf32>) -> tensor<4x8xf32>
    %2 = graph.aten "aten.gt.Scalar"(%1, 0) : (tensor<4x8xf32>) -> tensor<4x8xi1>
    kernel.yield %1, %2 : tensor<4x8xf32>, tensor<4x8xi1>
  } : (tensor<4x8xf32>, tensor<8xf32>, tensor<f64>) -> (tensor<4x8xf32>, tensor<4x8xi1>) loc("fc")
  func.return %r, %m : tensor<4x8xf32>, tensor<4x8xi1>
}

// CHECK-LABEL: func.func @layer_norm
func.func @layer_norm(%x: tensor<2x4x16xf32>, %w: tensor<16xf32>, %b: tensor<16xf32>) -> (tensor<2x4x16xf32>, tensor<2x4x1xf32>, tensor<2x4x1xf32>) {
  // CHECK: %y, %mean, %rstd = kernel.fused reduction domain [2, 4, 16] reduce [2] block [16] warps 1 (%x, %w, %b) {
  // CHECK: graph.aten "aten.native_layer_norm.default"(%{{.*}}, [16], %{{.*}}, %{{.*}}, 1.0e-05)
  // CHECK: kernel.yield %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x4x16xf32>, tensor<2x4x1xf32>, tensor<2x4x1xf32>
  // CHECK-NEXT: } : (tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32>) -> (tensor<2x4x16xf32>, tensor<2x4x1xf32>, tensor<2x4x1xf32>)
  %y, %mean, %rstd = kernel.fused reduction domain [2, 4, 16] reduce [2] block [16] warps 1 (%x, %w, %b) {
  ^bb0(%xa: tensor<2x4x16xf32>, %wa: tensor<16xf32>, %ba: tensor<16xf32>):
    %0, %1, %2 = graph.aten "aten.native_layer_norm.default"(%xa, [16], %wa, %ba, 1.0e-05) : (tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32>) -> (tensor<2x4x16xf32>, tensor<2x4x1xf32>, tensor<2x4x1xf32>)
    kernel.yield %0, %1, %2 : tensor<2x4x16xf32>, tensor<2x4x1xf32>, tensor<2x4x1xf32>
  } : (tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32>) -> (tensor<2x4x16xf32>, tensor<2x4x1xf32>, tensor<2x4x1xf32>)
  func.return %y, %mean, %rstd : tensor<2x4x16xf32>, tensor<2x4x1xf32>, tensor<2x4x1xf32>
}

// A column reduction (over dim 0), with extra attributes kept.
// CHECK-LABEL: func.func @column_sum
func.func @column_sum(%g: tensor<8x10xf32>) -> tensor<10xf32> {
  // CHECK: %s = kernel.fused reduction domain [8, 10] reduce [0] block [8] warps 1 (%g) attributes {note = "bias grad"} {
  %s = kernel.fused reduction domain [8, 10] reduce [0] block [8] warps 1 (%g) attributes {note = "bias grad"} {
  ^bb0(%ga: tensor<8x10xf32>):
    %0 = graph.aten "aten.sum.dim_IntList"(%ga, [0], false) : (tensor<8x10xf32>) -> tensor<10xf32>
    kernel.yield %0 : tensor<10xf32>
  } : (tensor<8x10xf32>) -> tensor<10xf32>
  func.return %s : tensor<10xf32>
}

// CHECK-LABEL: func.func @matmul
func.func @matmul(%b: tensor<32xf32>, %x: tensor<16x8xf32>, %w: tensor<8x32xf32>) -> tensor<2x8x32xf32> {
  // CHECK:      %h = kernel.fused matmul domain [16, 32, 8] block [16, 32, 16] warps 4 stages 3 (%b, %x, %w) {
  // CHECK-NEXT: ^bb0(%ba: tensor<32xf32>, %xa: tensor<16x8xf32>, %wa: tensor<8x32xf32>):
  // CHECK-NEXT:   %0 = graph.aten "aten.addmm.default"(%ba, %xa, %wa) : (tensor<32xf32>, tensor<16x8xf32>, tensor<8x32xf32>) -> tensor<16x32xf32>
  // CHECK-NEXT:   %1 = graph.aten "aten.view.default"(%0, [2, 8, 32]) : (tensor<16x32xf32>) -> tensor<2x8x32xf32>
  // CHECK-NEXT:   %2 = graph.aten "aten.gelu.default"(%1) : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  // CHECK-NEXT:   kernel.yield %2 : tensor<2x8x32xf32>
  // CHECK-NEXT: } : (tensor<32xf32>, tensor<16x8xf32>, tensor<8x32xf32>) -> tensor<2x8x32xf32>
  %h = kernel.fused matmul domain [16, 32, 8] block [16, 32, 16] warps 4 stages 3 (%b, %x, %w) {
  ^bb0(%ba: tensor<32xf32>, %xa: tensor<16x8xf32>, %wa: tensor<8x32xf32>):
    %0 = graph.aten "aten.addmm.default"(%ba, %xa, %wa) : (tensor<32xf32>, tensor<16x8xf32>, tensor<8x32xf32>) -> tensor<16x32xf32>
    %1 = graph.aten "aten.view.default"(%0, [2, 8, 32]) : (tensor<16x32xf32>) -> tensor<2x8x32xf32>
    %2 = graph.aten "aten.gelu.default"(%1) : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
    kernel.yield %2 : tensor<2x8x32xf32>
  } : (tensor<32xf32>, tensor<16x8xf32>, tensor<8x32xf32>) -> tensor<2x8x32xf32>
  func.return %h : tensor<2x8x32xf32>
}

// The backend a plan chose for a group (kernel-backend, piper.fuse).
// CHECK-LABEL: func.func @backends
func.func @backends(%x: tensor<16xf32>) -> (tensor<16xf32>, tensor<16xf32>) {
  // CHECK:      %a = kernel.fused elementwise domain [16] block [16] warps 1 backend aten (%x) {
  // CHECK:      %t = kernel.fused elementwise domain [16] block [16] warps 1 backend triton (%a) {
  %a = kernel.fused elementwise domain [16] block [16] warps 1 backend aten (%x) {
  ^bb0(%xa: tensor<16xf32>):
    %0 = graph.aten "aten.neg.default"(%xa) : (tensor<16xf32>) -> tensor<16xf32>
    kernel.yield %0 : tensor<16xf32>
  } : (tensor<16xf32>) -> tensor<16xf32>
  %t = kernel.fused elementwise domain [16] block [16] warps 1 backend triton (%a) {
  ^bb0(%aa: tensor<16xf32>):
    %0 = graph.aten "aten.exp.default"(%aa) : (tensor<16xf32>) -> tensor<16xf32>
    kernel.yield %0 : tensor<16xf32>
  } : (tensor<16xf32>) -> tensor<16xf32>
  func.return %a, %t : tensor<16xf32>, tensor<16xf32>
}
