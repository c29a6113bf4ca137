// RUN: not piper-opt %s 2>&1 | filecheck %s
// The op declares one result per tensor the operator returns.

func.func @f(%x: tensor<3x8xf32>) -> tensor<3xf32> {
  // CHECK: {{.*}}/result-count.mlir:6:3: error: 'graph.aten' op 'aten.max.dim' produces 2 tensors, op declares 1 results
  %m = graph.aten "aten.max.dim"(%x, 1) : (tensor<3x8xf32>) -> tensor<3xf32>
  func.return %m : tensor<3xf32>
}
