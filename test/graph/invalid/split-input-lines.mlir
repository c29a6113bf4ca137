// RUN: not piper-opt %s --split-input-file 2>&1 | filecheck %s
// With --split-input-file, a verifier error in a later chunk names its line
// in the file, not in the chunk.

func.func @ok(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  func.return %x : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/split-input-lines.mlir:13:3: error: 'graph.aten' op result 0 of 'aten.relu.default' has type tensor<3x5xf32>, but the operands give tensor<3x4xf32>
  %y = graph.aten "aten.relu.default"(%x) : (tensor<3x4xf32>) -> tensor<3x5xf32>
  func.return %x : tensor<3x4xf32>
}
