// RUN: piper-opt %s --split-input-file -p fuse-reductions | filecheck %s
// RUN: piper-opt %s --split-input-file -p 'fuse-reductions{max_block=8}' | filecheck %s --check-prefix=SMALL

// Attention softmax: the scaling before it and the mask after it fuse into
// one row kernel (one program per row of 16, all 16 in one block).
// CHECK-LABEL: func.func @softmax
// CHECK-NEXT:  %p = kernel.fused reduction domain [2, 4, 16] reduce [2] block [16] warps 1 (%s, %keep) {
// CHECK-NEXT:  ^bb0(%s_1: tensor<2x4x16xf32>, %keep_1: tensor<4x16xi1>):
// CHECK-NEXT:    %d = graph.aten "aten.div.Tensor"(%s_1, 4.0)
// CHECK-NEXT:    %sm = graph.aten "aten._softmax.default"(%d, -1, false)
// CHECK-NEXT:    %p_1 = graph.aten "aten.masked_fill.Scalar"(%sm, %keep_1, 0.0)
// CHECK-NEXT:    kernel.yield %p_1 : tensor<2x4x16xf32>
// SMALL-LABEL: func.func @softmax
// SMALL-NOT:   kernel.fused
func.func @softmax(%s: tensor<2x4x16xf32>, %keep: tensor<4x16xi1>) -> tensor<2x4x16xf32> {
  %d = graph.aten "aten.div.Tensor"(%s, 4.0) : (tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  %sm = graph.aten "aten._softmax.default"(%d, -1, false) : (tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  %p = graph.aten "aten.masked_fill.Scalar"(%sm, %keep, 0.0) : (tensor<2x4x16xf32>, tensor<4x16xi1>) -> tensor<2x4x16xf32>
  func.return %p : tensor<2x4x16xf32>
}

// -----

// LayerNorm forward with the residual add that feeds it; the sum is also
// written out for the next residual.
// CHECK-LABEL: func.func @layer_norm
// CHECK-NEXT:  %h, %y, %mean, %rstd = kernel.fused reduction domain [8, 16] reduce [1] block [16] warps 1 (%x, %r, %w, %b) {
// CHECK:         %h_1 = graph.aten "aten.add.Tensor"
// CHECK-NEXT:    %y_1, %mean_1, %rstd_1 = graph.aten "aten.native_layer_norm.default"(%h_1, [16], %w_1, %b_1, 1.0e-05)
// CHECK-NEXT:    kernel.yield %h_1, %y_1, %mean_1, %rstd_1
func.func @layer_norm(%x: tensor<8x16xf32>, %r: tensor<8x16xf32>, %w: tensor<16xf32>, %b: tensor<16xf32>) -> (tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x1xf32>, tensor<8x1xf32>) {
  %h = graph.aten "aten.add.Tensor"(%x, %r) : (tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<8x16xf32>
  %y, %mean, %rstd = graph.aten "aten.native_layer_norm.default"(%h, [16], %w, %b, 1.0e-05) : (tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> (tensor<8x16xf32>, tensor<8x1xf32>, tensor<8x1xf32>)
  func.return %h, %y, %mean, %rstd : tensor<8x16xf32>, tensor<8x16xf32>, tensor<8x1xf32>, tensor<8x1xf32>
}

// -----

// LayerNorm backward: the input gradient is a row kernel; the weight and
// bias gradients are split off as sums over the rows and share one
// column kernel.
// CHECK-LABEL: func.func @layer_norm_backward
// CHECK-NEXT:  %dx = kernel.fused reduction domain [2, 4, 16] reduce [2] block [16] warps 1 (%dy, %x, %mean, %rstd, %w, %b) {
// CHECK:         graph.aten "aten.native_layer_norm_backward.default"({{.*}}, [true, false, false])
// CHECK:       %dw, %db = kernel.fused reduction domain [2, 4, 16] reduce [0, 1] block [8] warps 1 (%x, %mean, %rstd, %dy) {
// CHECK-NEXT:  ^bb0
// CHECK-NEXT:    graph.aten "aten.sub.Tensor"
// CHECK-NEXT:    graph.aten "aten.mul.Tensor"
// CHECK-NEXT:    graph.aten "aten.mul.Tensor"
// CHECK-NEXT:    %dw_1 = graph.aten "aten.sum.dim_IntList"(%{{.*}}, [0, 1], false)
// CHECK-NEXT:    %db_1 = graph.aten "aten.sum.dim_IntList"(%dy_2, [0, 1], false)
// CHECK-NEXT:    kernel.yield %dw_1, %db_1
// CHECK:       func.return %dx, %dw, %db
// With rows limited to 8 elements only the column sums (8 rows each) fuse.
// SMALL-LABEL: func.func @layer_norm_backward
// SMALL-NOT:   reduce [2]
// SMALL:       kernel.fused reduction domain [2, 4, 16] reduce [0, 1] block [8]
func.func @layer_norm_backward(%dy: tensor<2x4x16xf32>, %x: tensor<2x4x16xf32>, %mean: tensor<2x4x1xf32>, %rstd: tensor<2x4x1xf32>, %w: tensor<16xf32>, %b: tensor<16xf32>) -> (tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32>) {
  %dx, %dw, %db = graph.aten "aten.native_layer_norm_backward.default"(%dy, %x, [16], %mean, %rstd, %w, %b, [true, true, true]) : (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4x1xf32>, tensor<2x4x1xf32>, tensor<16xf32>, tensor<16xf32>) -> (tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32>)
  func.return %dx, %dw, %db : tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32>
}

// -----

// Cross-entropy backward: nll_loss_backward (a scatter of -1/N into the
// target column) fuses into the log-softmax backward row kernel.
// CHECK-LABEL: func.func @cross_entropy_backward
// CHECK-NEXT:  %g = kernel.fused reduction domain [8, 10] reduce [1] block [16] warps 1 (%tangent, %logp, %target, %total) {
// CHECK-NEXT:  ^bb0
// CHECK-NEXT:    graph.aten "aten.nll_loss_backward.default"
// CHECK-NEXT:    graph.aten "aten._log_softmax_backward_data.default"
// CHECK-NEXT:    kernel.yield
func.func @cross_entropy_backward(%tangent: tensor<f32>, %logp: tensor<8x10xf32>, %target: tensor<8xi64>, %total: tensor<f32>) -> tensor<8x10xf32> {
  %nb = graph.aten "aten.nll_loss_backward.default"(%tangent, %logp, %target, none, 1, -100, %total) : (tensor<f32>, tensor<8x10xf32>, tensor<8xi64>, tensor<f32>) -> tensor<8x10xf32>
  %g = graph.aten "aten._log_softmax_backward_data.default"(%nb, %logp, 1, f32) : (tensor<8x10xf32>, tensor<8x10xf32>) -> tensor<8x10xf32>
  func.return %g : tensor<8x10xf32>
}

// -----

// A LayerNorm written out by hand: both means reduce the same dim, so the
// whole decomposition is one kernel.
// CHECK-LABEL: func.func @decomposed_layer_norm
// CHECK-NEXT:  %y = kernel.fused reduction domain [8, 32] reduce [1] block [32] warps 1 (%x, %w) {
// CHECK-COUNT-2: graph.aten "aten.mean.dim"
// CHECK:         kernel.yield %y_1 : tensor<8x32xf32>
// CHECK-NEXT:  } : (tensor<8x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
// CHECK-NEXT:  func.return %y
// SMALL-LABEL: func.func @decomposed_layer_norm
// SMALL-NOT:   kernel.fused
func.func @decomposed_layer_norm(%x: tensor<8x32xf32>, %w: tensor<32xf32>) -> tensor<8x32xf32> {
  %mu = graph.aten "aten.mean.dim"(%x, [-1], true) : (tensor<8x32xf32>) -> tensor<8x1xf32>
  %c = graph.aten "aten.sub.Tensor"(%x, %mu) : (tensor<8x32xf32>, tensor<8x1xf32>) -> tensor<8x32xf32>
  %sq = graph.aten "aten.pow.Tensor_Scalar"(%c, 2) : (tensor<8x32xf32>) -> tensor<8x32xf32>
  %var = graph.aten "aten.mean.dim"(%sq, [-1], true) : (tensor<8x32xf32>) -> tensor<8x1xf32>
  %ve = graph.aten "aten.add.Tensor"(%var, 1.0e-05) : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %rs = graph.aten "aten.rsqrt.default"(%ve) : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %n = graph.aten "aten.mul.Tensor"(%c, %rs) : (tensor<8x32xf32>, tensor<8x1xf32>) -> tensor<8x32xf32>
  %y = graph.aten "aten.mul.Tensor"(%n, %w) : (tensor<8x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
  func.return %y : tensor<8x32xf32>
}

// -----

// A bias gradient: a column sum (over dim 0) with its reshape.
// CHECK-LABEL: func.func @bias_grad
// CHECK-NEXT:  %v = kernel.fused reduction domain [8, 10] reduce [0] block [8] warps 1 (%g) {
// CHECK:         graph.aten "aten.sum.dim_IntList"(%g_1, [0], true)
// CHECK-NEXT:    %v_1 = graph.aten "aten.view.default"(%s, [10])
// CHECK-NEXT:    kernel.yield %v_1 : tensor<10xf32>
// SMALL-LABEL: func.func @bias_grad
// SMALL-NEXT:  kernel.fused reduction domain [8, 10] reduce [0] block [8]
func.func @bias_grad(%g: tensor<8x10xf32>) -> tensor<10xf32> {
  %s = graph.aten "aten.sum.dim_IntList"(%g, [0], true) : (tensor<8x10xf32>) -> tensor<1x10xf32>
  %v = graph.aten "aten.view.default"(%s, [10]) : (tensor<1x10xf32>) -> tensor<10xf32>
  func.return %v : tensor<10xf32>
}

// -----

// Attention softmax backward: the row reduction of softmax's gradient, the
// masked_fill backward (masked scores get no gradient) and the scale of the
// scores' gradient are one row kernel.
// CHECK-LABEL: func.func @softmax_backward
// CHECK-NEXT:  %ds = kernel.fused reduction domain [2, 4, 16] reduce [2] block [16] warps 1 (%g, %p, %masked) {
// CHECK-NEXT:  ^bb0
// CHECK-NEXT:    graph.aten "aten._softmax_backward_data.default"
// CHECK-NEXT:    graph.aten "aten.masked_fill.Scalar"
// CHECK-NEXT:    %ds_1 = graph.aten "aten.mul.Tensor"
// CHECK-NEXT:    kernel.yield %ds_1 : tensor<2x4x16xf32>
// SMALL-LABEL: func.func @softmax_backward
// SMALL-NOT:   kernel.fused
func.func @softmax_backward(%g: tensor<2x4x16xf32>, %p: tensor<2x4x16xf32>, %masked: tensor<4x16xi1>) -> tensor<2x4x16xf32> {
  %d = graph.aten "aten._softmax_backward_data.default"(%g, %p, -1, f32) : (tensor<2x4x16xf32>, tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  %m = graph.aten "aten.masked_fill.Scalar"(%d, %masked, 0.0) : (tensor<2x4x16xf32>, tensor<4x16xi1>) -> tensor<2x4x16xf32>
  %ds = graph.aten "aten.mul.Tensor"(%m, 0.25) : (tensor<2x4x16xf32>) -> tensor<2x4x16xf32>
  func.return %ds : tensor<2x4x16xf32>
}

// -----

// Cross-entropy forward: the log-softmax row kernel takes the logits'
// bias add; nll_loss_forward (a gather of one column per row, then a mean
// over rows) is not a row reduction and stays an aten op after the group.
// CHECK-LABEL: func.func @cross_entropy_forward
// CHECK-NEXT:  %logp = kernel.fused reduction domain [8, 10] reduce [1] block [16] warps 1 (%z, %b) {
// CHECK-NEXT:  ^bb0
// CHECK-NEXT:    graph.aten "aten.add.Tensor"
// CHECK-NEXT:    graph.aten "aten._log_softmax.default"({{.*}}, 1, false)
// CHECK-NEXT:    kernel.yield
// CHECK:       graph.aten "aten.nll_loss_forward.default"(%logp, %target, none, 1, -100)
// SMALL-LABEL: func.func @cross_entropy_forward
// SMALL-NOT:   kernel.fused
func.func @cross_entropy_forward(%z: tensor<8x10xf32>, %b: tensor<10xf32>, %target: tensor<8xi64>) -> tensor<f32> {
  %l = graph.aten "aten.add.Tensor"(%z, %b) : (tensor<8x10xf32>, tensor<10xf32>) -> tensor<8x10xf32>
  %logp = graph.aten "aten._log_softmax.default"(%l, 1, false) : (tensor<8x10xf32>) -> tensor<8x10xf32>
  %loss, %total = graph.aten "aten.nll_loss_forward.default"(%logp, %target, none, 1, -100) : (tensor<8x10xf32>, tensor<8xi64>) -> (tensor<f32>, tensor<f32>)
  func.return %loss : tensor<f32>
}
