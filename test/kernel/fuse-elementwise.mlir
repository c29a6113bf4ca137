// RUN: piper-opt %s --split-input-file -p fuse-elementwise | filecheck %s
// RUN: piper-opt %s --split-input-file -p 'fuse-elementwise{min_ops=1}' | filecheck %s --check-prefix=ONE

// A chain with a broadcast bias and scalar arguments becomes one kernel;
// only the value used after the chain is written out.
// CHECK-LABEL: func.func @chain
// CHECK-NEXT:  %r = kernel.fused elementwise domain [4, 8] block [32] warps 1 (%x, %y, %b) {
// CHECK-NEXT:  ^bb0(%x_1: tensor<4x8xf32>, %y_1: tensor<4x8xf32>, %b_1: tensor<8xf32>):
// CHECK-NEXT:    %m = graph.aten "aten.mul.Tensor"(%x_1, %y_1)
// CHECK-NEXT:    %a = graph.aten "aten.add.Tensor"(%m, %b_1, "alpha" = 0.5)
// CHECK-NEXT:    %s = graph.aten "aten.mul.Tensor"(%a, 2.0)
// CHECK-NEXT:    %r_1 = graph.aten "aten.relu.default"(%s)
// CHECK-NEXT:    kernel.yield %r_1 : tensor<4x8xf32>
// CHECK-NEXT:  } : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
// CHECK-NEXT:  func.return %r : tensor<4x8xf32>
func.func @chain(%x: tensor<4x8xf32>, %y: tensor<4x8xf32>, %b: tensor<8xf32>) -> tensor<4x8xf32> {
  %m = graph.aten "aten.mul.Tensor"(%x, %y) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %a = graph.aten "aten.add.Tensor"(%m, %b, "alpha" = 0.5) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %s = graph.aten "aten.mul.Tensor"(%a, 2.0) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %r = graph.aten "aten.relu.default"(%s) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  func.return %r : tensor<4x8xf32>
}

// -----

// Values used outside the group are yielded; ops of another shape and
// non-pointwise ops stay outside.
// CHECK-LABEL: func.func @outputs
// CHECK-NEXT:  %e, %t = kernel.fused elementwise domain [4, 8] block [32] warps 1 (%x) {
// CHECK:         kernel.yield %e_1, %t_1 : tensor<4x8xf32>, tensor<4x8xf32>
// CHECK:       %sum = graph.aten "aten.sum.dim_IntList"(%e, [1])
// CHECK-NEXT:  %n = graph.aten "aten.neg.default"(%sum)
// CHECK-NEXT:  func.return %t, %n
func.func @outputs(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4xf32>) {
  %e = graph.aten "aten.exp.default"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %t = graph.aten "aten.sigmoid.default"(%e) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %sum = graph.aten "aten.sum.dim_IntList"(%e, [1]) : (tensor<4x8xf32>) -> tensor<4xf32>
  %n = graph.aten "aten.neg.default"(%sum) : (tensor<4xf32>) -> tensor<4xf32>
  func.return %t, %n : tensor<4x8xf32>, tensor<4xf32>
}

// -----

// %a is read by the sum before %c is computed: a kernel placed at %c could
// not feed it, so %a and %c stay apart (and alone, so nothing is fused).
// CHECK-LABEL: func.func @order
// CHECK-NOT:   kernel.fused
// CHECK:       func.return
func.func @order(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4xf32>) {
  %a = graph.aten "aten.neg.default"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %s = graph.aten "aten.sum.dim_IntList"(%a, [1]) : (tensor<4x8xf32>) -> tensor<4xf32>
  %v = graph.aten "aten.view.default"(%s, [4, 1]) : (tensor<4xf32>) -> tensor<4x1xf32>
  %c = graph.aten "aten.div.Tensor"(%a, %v) : (tensor<4x8xf32>, tensor<4x1xf32>) -> tensor<4x8xf32>
  func.return %c, %s : tensor<4x8xf32>, tensor<4xf32>
}

// -----

// An AdamW-style update: 0-d step scalars (f64) broadcast into the kernel,
// their own scalar arithmetic stays with aten; comparisons and where fuse.
// CHECK-LABEL: func.func @update
// CHECK:       %bc = graph.aten "aten.rsub.Scalar"(%pw, 1)
// CHECK-NEXT:  %m2, %p2 = kernel.fused elementwise domain [16] block [16] warps 1 (%g, %m, %bc, %p) {
// CHECK-NEXT:  ^bb0(%g_1: tensor<16xf32>, %m_1: tensor<16xf32>, %bc_1: tensor<f64>, %p_1: tensor<16xf32>):
// CHECK:         graph.aten "aten.where.self"
// CHECK:         kernel.yield %m2_1, %p2_1 : tensor<16xf32>, tensor<16xf32>
// CHECK-NEXT:  } : (tensor<16xf32>, tensor<16xf32>, tensor<f64>, tensor<16xf32>) -> (tensor<16xf32>, tensor<16xf32>)
// CHECK-NEXT:  func.return %p2, %m2
func.func @update(%p: tensor<16xf32>, %g: tensor<16xf32>, %m: tensor<16xf32>, %step: tensor<f64>) -> (tensor<16xf32>, tensor<16xf32>) {
  %pw = graph.aten "aten.pow.Scalar"(0.9, %step) : (tensor<f64>) -> tensor<f64>
  %bc = graph.aten "aten.rsub.Scalar"(%pw, 1) : (tensor<f64>) -> tensor<f64>
  %d = graph.aten "aten.sub.Tensor"(%g, %m) : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
  %m1 = graph.aten "aten.mul.Tensor"(%d, 0.1) : (tensor<16xf32>) -> tensor<16xf32>
  %m2 = graph.aten "aten.add.Tensor"(%m, %m1) : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
  %u = graph.aten "aten.div.Tensor"(%m2, %bc) : (tensor<16xf32>, tensor<f64>) -> tensor<16xf32>
  %pos = graph.aten "aten.gt.Scalar"(%u, 0) : (tensor<16xf32>) -> tensor<16xi1>
  %c = graph.aten "aten.where.self"(%pos, %u, %m1) : (tensor<16xi1>, tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
  %p2 = graph.aten "aten.sub.Tensor"(%p, %c) : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32>
  func.return %p2, %m2 : tensor<16xf32>, tensor<16xf32>
}

// -----

// A lone op is left alone unless min_ops=1.
// CHECK-LABEL: func.func @single
// CHECK-NOT:   kernel.fused
// ONE-LABEL:   func.func @single
// ONE-NEXT:    %y = kernel.fused elementwise domain [1024, 4] block [1024] warps 4 (%x) {
func.func @single(%x: tensor<1024x4xbf16>) -> tensor<1024x4xf32> {
  %y = graph.aten "aten._to_copy.default"(%x, "dtype" = f32) : (tensor<1024x4xbf16>) -> tensor<1024x4xf32>
  func.return %y : tensor<1024x4xf32>
}
