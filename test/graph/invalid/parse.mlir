// RUN: piper-opt %s --split-input-file --parsing-diagnostics | filecheck %s
// Syntax errors of graph.aten, one case per split of this file (with
// --parsing-diagnostics a parse error does not stop --split-input-file).

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:9:54
  // CHECK: ^^
  // CHECK-NEXT: positional argument after keyword
  %y = graph.aten "aten.add.Tensor"(%x, "alpha" = 1, %x) : (tensor<3x4xf32>, tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:19:59
  // CHECK: ^^^^^^^
  // CHECK-NEXT: positional argument after keyword
  %y = graph.aten "aten.div.Tensor_mode"(%x, "alpha" = 1, "floor") : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:28:19
  // CHECK: string literal expected for the operator name
  %y = graph.aten aten.relu.default(%x) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:37:47
  // CHECK: expected 2 operand types, got 1
  %y = graph.aten "aten.mul.Tensor"(%x, %x) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:46:49
  // CHECK: identifier expected for a tag name
  %y = graph.aten "aten.relu.default"(%x) tags {"PP" = 0} : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:55:54
  // CHECK: Expected integer literal
  %y = graph.aten "aten.relu.default"(%x) tags {PP = true} : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}
