// RUN: piper-opt %s --split-input-file -p fuse-matmul-epilogue | filecheck %s

// A Linear + ReLU: the bias and the activation are the epilogue of one
// tiled tl.dot kernel; the transposed weight view stays outside (the kernel
// reads it through its strides).
// CHECK-LABEL: func.func @linear_relu
// CHECK-NEXT:  %t = graph.aten "aten.t.default"(%w)
// CHECK-NEXT:  %r = kernel.fused matmul domain [16, 32, 8] block [16, 32, 16] warps 4 stages 3 (%b, %x, %t) {
// CHECK-NEXT:  ^bb0(%b_1: tensor<32xf32>, %x_1: tensor<16x8xf32>, %t_1: tensor<8x32xf32>):
// CHECK-NEXT:    %y = graph.aten "aten.addmm.default"(%b_1, %x_1, %t_1)
// CHECK-NEXT:    %r_1 = graph.aten "aten.relu.default"(%y)
// CHECK-NEXT:    kernel.yield %r_1 : tensor<16x32xf32>
// CHECK-NEXT:  } : (tensor<32xf32>, tensor<16x8xf32>, tensor<8x32xf32>) -> tensor<16x32xf32>
func.func @linear_relu(%x: tensor<16x8xf32>, %w: tensor<32x8xf32>, %b: tensor<32xf32>) -> tensor<16x32xf32> {
  %t = graph.aten "aten.t.default"(%w) : (tensor<32x8xf32>) -> tensor<8x32xf32>
  %y = graph.aten "aten.addmm.default"(%b, %x, %t) : (tensor<32xf32>, tensor<16x8xf32>, tensor<8x32xf32>) -> tensor<16x32xf32>
  %r = graph.aten "aten.relu.default"(%y) : (tensor<16x32xf32>) -> tensor<16x32xf32>
  func.return %r : tensor<16x32xf32>
}

// -----

// A transformer MLP's first layer: the epilogue reaches through the
// [B*T, N] -> [B, T, N] view; the pre-activation is saved for backward, so
// both it and the GELU are written out.
// CHECK-LABEL: func.func @mlp_up
// CHECK-NEXT:  %h, %g = kernel.fused matmul domain [8, 64, 16] block [16, 64, 16] warps 4 stages 3 (%b, %x, %w) {
// CHECK:         graph.aten "aten.addmm.default"
// CHECK-NEXT:    %h_1 = graph.aten "aten.view.default"(%{{.*}}, [2, 4, 64])
// CHECK-NEXT:    %g_1 = graph.aten "aten.gelu.default"(%h_1)
// CHECK-NEXT:    kernel.yield %h_1, %g_1 : tensor<2x4x64xf32>, tensor<2x4x64xf32>
func.func @mlp_up(%b: tensor<64xf32>, %x: tensor<8x16xf32>, %w: tensor<16x64xf32>) -> (tensor<2x4x64xf32>, tensor<2x4x64xf32>) {
  %a = graph.aten "aten.addmm.default"(%b, %x, %w) : (tensor<64xf32>, tensor<8x16xf32>, tensor<16x64xf32>) -> tensor<8x64xf32>
  %h = graph.aten "aten.view.default"(%a, [2, 4, 64]) : (tensor<8x64xf32>) -> tensor<2x4x64xf32>
  %g = graph.aten "aten.gelu.default"(%h) : (tensor<2x4x64xf32>) -> tensor<2x4x64xf32>
  func.return %h, %g : tensor<2x4x64xf32>, tensor<2x4x64xf32>
}

// -----

// Backward through GELU: the input-gradient matmul with gelu_backward (and
// the saved pre-activation) as epilogue; a residual add joins in.
// CHECK-LABEL: func.func @gelu_backward
// CHECK-NEXT:  %s = kernel.fused matmul domain [8, 64, 16] block [16, 64, 16] warps 4 stages 3 (%dy, %w, %pre, %res) {
// CHECK-NEXT:  ^bb0
// CHECK-NEXT:    graph.aten "aten.mm.default"
// CHECK-NEXT:    graph.aten "aten.view.default"
// CHECK-NEXT:    graph.aten "aten.gelu_backward.default"
// CHECK-NEXT:    %s_1 = graph.aten "aten.add.Tensor"
// CHECK-NEXT:    kernel.yield %s_1 : tensor<2x4x64xf32>
func.func @gelu_backward(%dy: tensor<8x16xf32>, %w: tensor<16x64xf32>, %pre: tensor<2x4x64xf32>, %res: tensor<2x4x64xf32>) -> tensor<2x4x64xf32> {
  %m = graph.aten "aten.mm.default"(%dy, %w) : (tensor<8x16xf32>, tensor<16x64xf32>) -> tensor<8x64xf32>
  %v = graph.aten "aten.view.default"(%m, [2, 4, 64]) : (tensor<8x64xf32>) -> tensor<2x4x64xf32>
  %gb = graph.aten "aten.gelu_backward.default"(%v, %pre) : (tensor<2x4x64xf32>, tensor<2x4x64xf32>) -> tensor<2x4x64xf32>
  %s = graph.aten "aten.add.Tensor"(%gb, %res) : (tensor<2x4x64xf32>, tensor<2x4x64xf32>) -> tensor<2x4x64xf32>
  func.return %s : tensor<2x4x64xf32>
}

// -----

// A matmul with no pointwise consumer is left to aten (cuBLAS), as is a
// reduction of its result.
// CHECK-LABEL: func.func @plain
// CHECK-NOT:   kernel.fused
// CHECK:       func.return
func.func @plain(%a: tensor<8x16xf32>, %b: tensor<16x4xf32>) -> (tensor<8x4xf32>, tensor<4xf32>) {
  %m = graph.aten "aten.mm.default"(%a, %b) : (tensor<8x16xf32>, tensor<16x4xf32>) -> tensor<8x4xf32>
  %s = graph.aten "aten.sum.dim_IntList"(%m, [0]) : (tensor<8x4xf32>) -> tensor<4xf32>
  func.return %m, %s : tensor<8x4xf32>, tensor<4xf32>
}

// -----

// Integer matmuls are not tiled with tl.dot here.
// CHECK-LABEL: func.func @integer
// CHECK-NOT:   kernel.fused
func.func @integer(%a: tensor<8x16xi64>, %b: tensor<16x4xi64>) -> tensor<8x4xi64> {
  %m = graph.aten "aten.mm.default"(%a, %b) : (tensor<8x16xi64>, tensor<16x4xi64>) -> tensor<8x4xi64>
  %r = graph.aten "aten.neg.default"(%m) : (tensor<8x4xi64>) -> tensor<8x4xi64>
  func.return %r : tensor<8x4xi64>
}
