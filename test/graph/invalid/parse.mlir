// RUN: piper-opt %s --split-input-file --parsing-diagnostics | filecheck %s
// Syntax errors of graph.aten, one per split of this file (with --parsing-
// diagnostics none stops --split-input-file; each is file:line:col: message).

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:[[# @LINE + 2]]:54: error: positional argument after keyword
  // CHECK: ^^
  %y = graph.aten "aten.add.Tensor"(%x, "alpha" = 1, %x) : (tensor<3x4xf32>, tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:[[# @LINE + 2]]:59: error: positional argument after keyword
  // CHECK: ^^^^^^^
  %y = graph.aten "aten.div.Tensor_mode"(%x, "alpha" = 1, "floor") : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:[[# @LINE + 1]]:19: error: string literal expected for the operator name
  %y = graph.aten aten.relu.default(%x) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:[[# @LINE + 1]]:47: error: expected 2 operand types, got 1
  %y = graph.aten "aten.mul.Tensor"(%x, %x) : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:[[# @LINE + 1]]:49: error: identifier expected for a tag name
  %y = graph.aten "aten.relu.default"(%x) tags {"PP" = 0} : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:[[# @LINE + 1]]:54: error: Expected integer literal
  %y = graph.aten "aten.relu.default"(%x) tags {PP = true} : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

// A string left open: one error at its quote, at once (xDSL's string pattern
// took 2^n steps on the n characters after it on the line).
func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:[[# @LINE + 1]]:75: error: a string literal is not closed on its line (a missing '"')
  %y = graph.aten "aten.relu.default"(%x) : (tensor<3x4xf32>) -> tensor<3x"4xf32> // and the rest of a line long enough to take hours
  func.return %y : tensor<3x4xf32>
}

// -----

// A value an op's own attribute checks reject while it is parsed: a syntax
// error at the op (it was an unlocated "error: Integer value ...").
func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:[[# @LINE + 1]]:3: error: Integer value 99999999999999999999999999 is out of range for type i64
  %y = graph.aten "aten.relu.default"(%x) tags {PP = 99999999999999999999999999} : (tensor<3x4xf32>) -> tensor<3x4xf32>
  func.return %y : tensor<3x4xf32>
}

// -----

// A sigil with no name after it (xDSL says "Expected suffix identifier
// after {first_char}", unformatted).
func.func @f(%x: tensor<3x4xf32>) -> tensor<3x4xf32> {
  // CHECK: {{.*}}/parse.mlir:[[# @LINE + 1]]:15: error: expected a name after '%'
  func.return % : tensor<3x4xf32>
}
