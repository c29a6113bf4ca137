// RUN: piper-opt %s --split-input-file --verify-diagnostics | filecheck %s
// Under --verify-diagnostics every chunk runs and each error is printed to
// stdout (exit status 0), Piper's own diagnostics included.

// CHECK: verify-diagnostics.mlir:[[# @LINE + 1]]:1: error: 'func.func' op @f argument 0: graph.kind "paramm" is not one of
func.func @f(%w: tensor<3xf32> {graph.kind = "paramm"}) -> tensor<3xf32> {
  func.return %w : tensor<3xf32>
}

// -----

func.func @g(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: verify-diagnostics.mlir:[[# @LINE + 1]]:3: error: 'graph.aten' op result 0 of 'aten.relu.default' has type tensor<3x5xf32>
  %y = graph.aten "aten.relu.default"(%x) : (tensor<3x4xf32>) -> tensor<3x5xf32>
  func.return %x : tensor<3x4xf32>
}

// -----

// CHECK: func.func @ok
func.func @ok(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  func.return %x : tensor<3x4xf32>
}
