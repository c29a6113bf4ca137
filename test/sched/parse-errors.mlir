// RUN: piper-opt %s --split-input-file --parsing-diagnostics | filecheck %s
// Syntax errors of the sched dialect's custom forms, one per split.

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: parse-errors.mlir:[[# @LINE + 1]]:25: error: collective must be one of all_reduce, reduce_scatter, all_gather, all_to_all, broadcast
  %h = sched.collective gather %w group [0, 1] tag 0 stream "comm" : tensor<4xf32> -> tensor<8xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: parse-errors.mlir:[[# @LINE + 1]]:19: error: expected a function symbol like @F0
  %a = sched.call "F0"(%w) task "0F0" stream "compute" : (tensor<4xf32>) -> (tensor<4xf32>)
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: parse-errors.mlir:[[# @LINE + 1]]:57: error: expected 1 argument types
  %a = sched.call @F0(%w) task "0F0" stream "compute" : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>)
}

// -----

sched.program @rank0 device 0 {
  // CHECK: parse-errors.mlir:[[# @LINE + 1]]:34: error: shard count must be at least 1, got 0
  %w = sched.load "w" shard 0 of 0 : tensor<4xf32>
}
