// RUN: not piper-opt %s 2>&1 | filecheck %s
// A result type the op's constraint rejects: the message says why.

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/result-constraint.mlir:7:3: error: 'graph.aten' op result 'outputs' at position 0 does not verify: memref<3x4xf32> should be of base attribute tensor
  // CHECK-NOT: Traceback
  %y = graph.aten "aten.relu.default"(%x) : (tensor<3x4xf32>) -> memref<3x4xf32>
  func.return %x : tensor<3x4xf32>
}
