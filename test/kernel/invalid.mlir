// Every verifier error of the kernel dialect, one case each.
// RUN: %python %S/Inputs/each_case.py %s | filecheck %s

// CHECK: case 0: exit 1
// CHECK-NEXT: case0.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op group kind must be one of elementwise, reduction, matmul, got 'pointwise'
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused pointwise domain [4] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 1: exit 1
// CHECK-NEXT: case1.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op body has 2 arguments, but the group has 1 inputs
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [4] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>, %b: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 2: exit 1
// CHECK-NEXT: case2.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op body argument 0 has type tensor<4xf64>, but input 0 has type tensor<4xf32>
func.func @f(%x: tensor<4xf32>) -> tensor<4xf64> {
  %r = kernel.fused elementwise domain [4] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf64>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf64>) -> tensor<4xf64>
    kernel.yield %0 : tensor<4xf64>
  } : (tensor<4xf32>) -> tensor<4xf64>
  func.return %r : tensor<4xf64>
}

// -----
// CHECK: case 3: exit 1
// CHECK-NEXT: case3.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op body must end with 'kernel.yield'
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [4] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 4: exit 1
// CHECK-NEXT: case4.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op body yields 2 values, but the group has 1 results
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [4] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0, %0 : tensor<4xf32>, tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 5: exit 1
// CHECK-NEXT: case5.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op yielded value 0 has type tensor<4xi1>, but result 0 has type tensor<4xf32>
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [4] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.gt.Scalar"(%a, 0) : (tensor<4xf32>) -> tensor<4xi1>
    kernel.yield %0 : tensor<4xi1>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 6: exit 1
// CHECK-NEXT: case6.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op a fused group must produce at least one result
func.func @f(%x: tensor<4xf32>) {
  kernel.fused elementwise domain [4] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield
  } : (tensor<4xf32>) -> ()
  func.return
}

// -----
// CHECK: case 7: exit 1
// CHECK-NEXT: case7.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op body may only hold graph.aten ops, found 'graph.constant'
func.func @f(%x: tensor<4xf32>) -> tensor<3xi64> {
  %r = kernel.fused elementwise domain [3] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.constant [1 : i64, 2 : i64, 3 : i64] : tensor<3xi64>
    kernel.yield %0 : tensor<3xi64>
  } : (tensor<4xf32>) -> tensor<3xi64>
  func.return %r : tensor<3xi64>
}

// -----
// CHECK: case 8: exit 1
// CHECK-NEXT: case8.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op body op 'aten.add.Tensor' uses a value defined outside the group; pass it as an input
func.func @f(%x: tensor<4xf32>, %y: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [4] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.add.Tensor"(%a, %y) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 9: exit 1
// CHECK-NEXT: case9.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op block sizes must be powers of two, got [6]
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [4] block [6] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 10: exit 1
// CHECK-NEXT: case10.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op a matmul group takes 3 block sizes, got 2
func.func @f(%x: tensor<4x8xf32>, %w: tensor<8x4xf32>) -> tensor<4x4xf32> {
  %r = kernel.fused matmul domain [4, 4, 8] block [16, 16] warps 4 (%x, %w) {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8x4xf32>):
    %0 = graph.aten "aten.mm.default"(%a, %b) : (tensor<4x8xf32>, tensor<8x4xf32>) -> tensor<4x4xf32>
    %1 = graph.aten "aten.relu.default"(%0) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    kernel.yield %1 : tensor<4x4xf32>
  } : (tensor<4x8xf32>, tensor<8x4xf32>) -> tensor<4x4xf32>
  func.return %r : tensor<4x4xf32>
}

// -----
// CHECK: case 11: exit 1
// CHECK-NEXT: case11.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op warps must be a power of two from 1 to 32, got 3
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [4] block [4] warps 3 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 12: exit 1
// CHECK-NEXT: case12.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op only matmul groups take stages
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [4] block [4] warps 1 stages 2 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 13: exit 1
// CHECK-NEXT: case13.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op domain sizes must not be negative, got [-4]
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [-4] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 14: exit 1
// CHECK-NEXT: case14.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op a reduction group needs reduce dims
func.func @f(%x: tensor<4x8xf32>) -> tensor<4xf32> {
  %r = kernel.fused reduction domain [4, 8] block [8] warps 1 (%x) {
  ^bb0(%a: tensor<4x8xf32>):
    %0 = graph.aten "aten.sum.dim_IntList"(%a, [1]) : (tensor<4x8xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4x8xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 15: exit 1
// CHECK-NEXT: case15.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op reduce dims [2] must be distinct, sorted dims of domain [4, 8]
func.func @f(%x: tensor<4x8xf32>) -> tensor<4xf32> {
  %r = kernel.fused reduction domain [4, 8] reduce [2] block [8] warps 1 (%x) {
  ^bb0(%a: tensor<4x8xf32>):
    %0 = graph.aten "aten.sum.dim_IntList"(%a, [1]) : (tensor<4x8xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4x8xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 16: exit 1
// CHECK-NEXT: case16.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op block 4 cannot hold the 8 reduced elements of a row
func.func @f(%x: tensor<4x8xf32>) -> tensor<4xf32> {
  %r = kernel.fused reduction domain [4, 8] reduce [1] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4x8xf32>):
    %0 = graph.aten "aten.sum.dim_IntList"(%a, [1]) : (tensor<4x8xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4x8xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 17: exit 1
// CHECK-NEXT: case17.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op a reduction group holds no reduction op
func.func @f(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %r = kernel.fused reduction domain [4, 8] reduce [1] block [8] warps 1 (%x) {
  ^bb0(%a: tensor<4x8xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4x8xf32>) -> tensor<4x8xf32>
    kernel.yield %0 : tensor<4x8xf32>
  } : (tensor<4x8xf32>) -> tensor<4x8xf32>
  func.return %r : tensor<4x8xf32>
}

// -----
// CHECK: case 18: exit 1
// CHECK-NEXT: case18.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op 'aten.sum.dim_IntList' reduces domain dims [0], the group reduces [1]
func.func @f(%x: tensor<4x8xf32>) -> tensor<8xf32> {
  %r = kernel.fused reduction domain [4, 8] reduce [1] block [8] warps 1 (%x) {
  ^bb0(%a: tensor<4x8xf32>):
    %0 = graph.aten "aten.sum.dim_IntList"(%a, [0]) : (tensor<4x8xf32>) -> tensor<8xf32>
    kernel.yield %0 : tensor<8xf32>
  } : (tensor<4x8xf32>) -> tensor<8xf32>
  func.return %r : tensor<8xf32>
}

// -----
// CHECK: case 19: exit 1
// CHECK-NEXT: case19.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op only reduction groups take reduce dims, this is elementwise
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [4] reduce [0] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 20: exit 1
// CHECK-NEXT: case20.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op 'aten.mm.default' is not pointwise and cannot be in an elementwise group
func.func @f(%x: tensor<4x4xf32>) -> tensor<4x4xf32> {
  %r = kernel.fused elementwise domain [4, 4] block [16] warps 1 (%x) {
  ^bb0(%a: tensor<4x4xf32>):
    %0 = graph.aten "aten.mm.default"(%a, %a) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    kernel.yield %0 : tensor<4x4xf32>
  } : (tensor<4x4xf32>) -> tensor<4x4xf32>
  func.return %r : tensor<4x4xf32>
}

// -----
// CHECK: case 21: exit 1
// CHECK-NEXT: case21.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op result 0 has shape [4], but the domain is [8]
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [8] block [8] warps 1 (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 22: exit 1
// CHECK-NEXT: case22.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op shape [4, 2] does not broadcast to [2, 4]
func.func @f(%x: tensor<4x2xf32>, %y: tensor<2x4xf32>) -> tensor<2x4xf32> {
  %r = kernel.fused elementwise domain [2, 4] block [8] warps 1 (%x, %y) {
  ^bb0(%a: tensor<4x2xf32>, %b: tensor<2x4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4x2xf32>) -> tensor<4x2xf32>
    %1 = graph.aten "aten.neg.default"(%b) : (tensor<2x4xf32>) -> tensor<2x4xf32>
    kernel.yield %1 : tensor<2x4xf32>
  } : (tensor<4x2xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
  func.return %r : tensor<2x4xf32>
}

// -----
// CHECK: case 23: exit 1
// CHECK-NEXT: case23.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op a matmul group starts with its aten.mm or aten.addmm
func.func @f(%x: tensor<4x4xf32>) -> tensor<4x4xf32> {
  %r = kernel.fused matmul domain [4, 4, 4] block [16, 16, 16] warps 4 (%x) {
  ^bb0(%a: tensor<4x4xf32>):
    %0 = graph.aten "aten.relu.default"(%a) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %1 = graph.aten "aten.mm.default"(%0, %0) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    kernel.yield %1 : tensor<4x4xf32>
  } : (tensor<4x4xf32>) -> tensor<4x4xf32>
  func.return %r : tensor<4x4xf32>
}

// -----
// CHECK: case 24: exit 1
// CHECK-NEXT: case24.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op 'aten.view.default' in a matmul epilogue must reshape the tile
func.func @f(%x: tensor<4x4xf32>, %y: tensor<16xf32>) -> tensor<4x4xf32> {
  %r = kernel.fused matmul domain [4, 4, 4] block [16, 16, 16] warps 4 (%x, %y) {
  ^bb0(%a: tensor<4x4xf32>, %b: tensor<16xf32>):
    %0 = graph.aten "aten.mm.default"(%a, %a) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %1 = graph.aten "aten.view.default"(%b, [4, 4]) : (tensor<16xf32>) -> tensor<4x4xf32>
    %2 = graph.aten "aten.add.Tensor"(%0, %1) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    kernel.yield %2 : tensor<4x4xf32>
  } : (tensor<4x4xf32>, tensor<16xf32>) -> tensor<4x4xf32>
  func.return %r : tensor<4x4xf32>
}

// -----
// CHECK: case 25: exit 1
// CHECK-NEXT: case25.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op 'aten.sum.dim_IntList' cannot be fused into a matmul epilogue
func.func @f(%x: tensor<4x4xf32>) -> tensor<4xf32> {
  %r = kernel.fused matmul domain [4, 4, 4] block [16, 16, 16] warps 4 (%x) {
  ^bb0(%a: tensor<4x4xf32>):
    %0 = graph.aten "aten.mm.default"(%a, %a) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %1 = graph.aten "aten.sum.dim_IntList"(%0, [1]) : (tensor<4x4xf32>) -> tensor<4xf32>
    kernel.yield %1 : tensor<4xf32>
  } : (tensor<4x4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 26: exit 1
// CHECK-NEXT: case26.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op epilogue value of shape [2, 8] is not a [4, 4] tile
func.func @f(%x: tensor<4x4xf32>) -> tensor<2x8xf32> {
  %r = kernel.fused matmul domain [4, 4, 4] block [16, 16, 16] warps 4 (%x) {
  ^bb0(%a: tensor<4x4xf32>):
    %0 = graph.aten "aten.mm.default"(%a, %a) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %1 = graph.aten "aten.view.default"(%0, [2, 8]) : (tensor<4x4xf32>) -> tensor<2x8xf32>
    kernel.yield %1 : tensor<2x8xf32>
  } : (tensor<4x4xf32>) -> tensor<2x8xf32>
  func.return %r : tensor<2x8xf32>
}

// -----
// CHECK: case 27: exit 1
// CHECK-NEXT: case27.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op matmul domain must be [M, N, K] = [4, 2, 8], got [4, 8, 2]
func.func @f(%x: tensor<4x8xf32>, %w: tensor<8x2xf32>) -> tensor<4x2xf32> {
  %r = kernel.fused matmul domain [4, 8, 2] block [16, 16, 16] warps 4 (%x, %w) {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8x2xf32>):
    %0 = graph.aten "aten.mm.default"(%a, %b) : (tensor<4x8xf32>, tensor<8x2xf32>) -> tensor<4x2xf32>
    %1 = graph.aten "aten.relu.default"(%0) : (tensor<4x2xf32>) -> tensor<4x2xf32>
    kernel.yield %1 : tensor<4x2xf32>
  } : (tensor<4x8xf32>, tensor<8x2xf32>) -> tensor<4x2xf32>
  func.return %r : tensor<4x2xf32>
}

// -----
// CHECK: case 28: exit 1
// CHECK-NEXT: case28.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.yield' op 'kernel.yield' expects parent op 'kernel.fused'
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  kernel.yield %x : tensor<4xf32>
}

// -----
// CHECK: case 29: exit 1
// CHECK-NEXT: case29.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op only the input gradient of native_layer_norm_backward can be fused (output mask [true, false, false])
func.func @f(%dy: tensor<4x8xf32>, %x: tensor<4x8xf32>, %m: tensor<4x1xf32>, %r: tensor<4x1xf32>, %w: tensor<8xf32>) -> tensor<4x8xf32> {
  %dx, %dw = kernel.fused reduction domain [4, 8] reduce [1] block [8] warps 1 (%dy, %x, %m, %r, %w) {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %c: tensor<4x1xf32>, %d: tensor<4x1xf32>, %e: tensor<8xf32>):
    %0, %1 = graph.aten "aten.native_layer_norm_backward.default"(%a, %b, [8], %c, %d, %e, none, [true, true, false]) : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x1xf32>, tensor<4x1xf32>, tensor<8xf32>) -> (tensor<4x8xf32>, tensor<8xf32>)
    kernel.yield %0, %1 : tensor<4x8xf32>, tensor<8xf32>
  } : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x1xf32>, tensor<4x1xf32>, tensor<8xf32>) -> (tensor<4x8xf32>, tensor<8xf32>)
  func.return %dx : tensor<4x8xf32>
}

// -----
// CHECK: case 30: exit 1
// CHECK-NEXT: case30.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op 'aten.view.default' reshapes more than size-1 dims
func.func @f(%x: tensor<4x4xf32>) -> tensor<16xf32> {
  %r = kernel.fused reduction domain [4, 4] reduce [1] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4x4xf32>):
    %0 = graph.aten "aten._softmax.default"(%a, 1, false) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %1 = graph.aten "aten.view.default"(%0, [16]) : (tensor<4x4xf32>) -> tensor<16xf32>
    kernel.yield %1 : tensor<16xf32>
  } : (tensor<4x4xf32>) -> tensor<16xf32>
  func.return %r : tensor<16xf32>
}

// -----
// CHECK: case 31: exit 1
// CHECK-NEXT: case31.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op 'aten.mm.default' cannot be fused
func.func @f(%x: tensor<4x4xf32>) -> tensor<4xf32> {
  %r = kernel.fused reduction domain [4, 4] reduce [1] block [4] warps 1 (%x) {
  ^bb0(%a: tensor<4x4xf32>):
    %0 = graph.aten "aten.mm.default"(%a, %a) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %1 = graph.aten "aten.sum.dim_IntList"(%0, [1]) : (tensor<4x4xf32>) -> tensor<4xf32>
    kernel.yield %1 : tensor<4xf32>
  } : (tensor<4x4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// A per-row sum (placed on dim 0) added to a per-column weight (dim 1).
// CHECK: case 32: exit 1
// CHECK-NEXT: case32.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op 'aten.add.Tensor' combines values placed on different dims of the domain
func.func @f(%x: tensor<4x4xf32>, %w: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused reduction domain [4, 4] reduce [1] block [4] warps 1 (%x, %w) {
  ^bb0(%a: tensor<4x4xf32>, %b: tensor<4xf32>):
    %0 = graph.aten "aten.mul.Tensor"(%a, %b) : (tensor<4x4xf32>, tensor<4xf32>) -> tensor<4x4xf32>
    %1 = graph.aten "aten.sum.dim_IntList"(%0, [1]) : (tensor<4x4xf32>) -> tensor<4xf32>
    %2 = graph.aten "aten.add.Tensor"(%1, %b) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %2 : tensor<4xf32>
  } : (tensor<4x4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}

// -----
// CHECK: case 33: exit 1
// CHECK-NEXT: case33.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op a value of shape [4] is placed at two different places of domain [4, 4]
func.func @f(%x: tensor<4x4xf32>, %w: tensor<4xf32>) -> (tensor<4xf32>, tensor<4x4xf32>) {
  %r, %y = kernel.fused reduction domain [4, 4] reduce [1] block [4] warps 1 (%x, %w) {
  ^bb0(%a: tensor<4x4xf32>, %b: tensor<4xf32>):
    %0 = graph.aten "aten.sum.dim_IntList"(%a, [1]) : (tensor<4x4xf32>) -> tensor<4xf32>
    %1 = graph.aten "aten.add.Tensor"(%0, %b) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %2, %3, %4 = graph.aten "aten.native_layer_norm.default"(%a, [4], %b, none, 1.0e-05) : (tensor<4x4xf32>, tensor<4xf32>) -> (tensor<4x4xf32>, tensor<4x1xf32>, tensor<4x1xf32>)
    kernel.yield %1, %2 : tensor<4xf32>, tensor<4x4xf32>
  } : (tensor<4x4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4x4xf32>)
  func.return %r, %y : tensor<4xf32>, tensor<4x4xf32>
}

// -----
// CHECK: case 34: exit 1
// CHECK-NEXT: case34.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op nll_loss_backward with class weights cannot be fused
func.func @f(%g: tensor<f32>, %lp: tensor<4x5xf32>, %t: tensor<4xi64>, %w: tensor<5xf32>, %tw: tensor<f32>) -> tensor<4x5xf32> {
  %r = kernel.fused reduction domain [4, 5] reduce [1] block [8] warps 1 (%g, %lp, %t, %w, %tw) {
  ^bb0(%a: tensor<f32>, %b: tensor<4x5xf32>, %c: tensor<4xi64>, %d: tensor<5xf32>, %e: tensor<f32>):
    %0 = graph.aten "aten.nll_loss_backward.default"(%a, %b, %c, %d, 1, -100, %e) : (tensor<f32>, tensor<4x5xf32>, tensor<4xi64>, tensor<5xf32>, tensor<f32>) -> tensor<4x5xf32>
    %1 = graph.aten "aten._log_softmax_backward_data.default"(%0, %b, 1, f32) : (tensor<4x5xf32>, tensor<4x5xf32>) -> tensor<4x5xf32>
    kernel.yield %1 : tensor<4x5xf32>
  } : (tensor<f32>, tensor<4x5xf32>, tensor<4xi64>, tensor<5xf32>, tensor<f32>) -> tensor<4x5xf32>
  func.return %r : tensor<4x5xf32>
}

// -----
// CHECK: case 35: exit 1
// CHECK-NEXT: case35.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'kernel.fused' op backend must be one of triton, aten, got 'cuda'
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %r = kernel.fused elementwise domain [4] block [4] warps 1 backend cuda (%x) {
  ^bb0(%a: tensor<4xf32>):
    %0 = graph.aten "aten.neg.default"(%a) : (tensor<4xf32>) -> tensor<4xf32>
    kernel.yield %0 : tensor<4xf32>
  } : (tensor<4xf32>) -> tensor<4xf32>
  func.return %r : tensor<4xf32>
}
