// RUN: piper-opt %s --split-input-file --verify-diagnostics | filecheck %s
// Every verifier error of the sched dialect, one case per split. Under
// --verify-diagnostics each chunk runs and its error is printed (exit 0).

// CHECK: invalid.mlir:[[# @LINE + 1]]:1: error: 'sched.program' op a handle is waited on twice
sched.program @rank0 device 0 {
  %h = sched.recv from 1 tag 0 stream "comm" : tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
  %b = sched.wait %h : tensor<4xf32>
}

// -----

// CHECK: invalid.mlir:[[# @LINE + 1]]:1: error: 'sched.program' op 'sched.send' starts a communication that is never waited on
sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  %h = sched.send %w to 1 tag 0 stream "comm" : tensor<4xf32>
}

// -----

// Buffer lifetimes: nothing uses a buffer after its sched.free, and it is
// freed once; the error points at the instruction.
sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  sched.free %w : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.program' op 'sched.store' uses %w after its sched.free (a buffer is freed once, after its last use)
  sched.store "w" %w : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  sched.free %w : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.program' op 'sched.free' frees %w after its sched.free
  sched.free %w : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.wait' op uses %h before its definition
  sched.wait %h
  %h = sched.send %w to 1 tag 0 stream "comm" : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.load' op shard 2 of 2 is out of range
  %w = sched.load "w" shard 2 of 2 : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.store' op shard -1 of 2 is out of range
  sched.store "w" shard -1 of 2 %w : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.load' op shard must be [index, count], [index, count, dim], [index, count, dim, parts] or [index, count, dim, parts, groups]
  %w = "sched.load"() <{tensor_name = "w", shard = [#builtin.int<0>, #builtin.int<2>, #builtin.int<4>, #builtin.int<1>, #builtin.int<1>, #builtin.int<1>]}> : () -> tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.load' op shard parts must divide the count 4
  %w = sched.load "w" shard 1 of 4 dim 1 parts 3 : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.sum' op sched.sum needs at least one input
  %s = "sched.sum"() <{scale = 1.0 : f64}> : () -> tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %a = sched.load "a" : tensor<4xf32>
  %b = sched.load "b" : tensor<2x2xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.sum' op sched.sum inputs must all have the result type
  %s = "sched.sum"(%a, %b) <{scale = 1.0 : f64}> : (tensor<4xf32>, tensor<2x2xf32>) -> tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.shard' op part 3 of 2 of a tensor of 4 elements is invalid
  %s = sched.shard %w part 3 of 2 : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.shard' op part 0 of 3 of a tensor of 4 elements is invalid
  %s = sched.shard %w part 0 of 3 : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.shard' op part 0 of 2 of tensor<4xf32> is tensor<2xf32>, not tensor<3xf32>
  %s = "sched.shard"(%w) <{part = [#builtin.int<0>, #builtin.int<2>]}> : (tensor<4xf32>) -> tensor<3xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.call' op call of unknown function @F0
  %a = sched.call @F0(%w) task "0F0" stream "compute" : (tensor<4xf32>) -> (tensor<4xf32>)
}

// -----

func.func @F0(%x: tensor<4xf32>) -> tensor<4xf32> {
  func.return %x : tensor<4xf32>
}
sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<2x2xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.call' op call types do not match the signature of @F0
  %a = sched.call @F0(%w) task "0F0" stream "compute" : (tensor<2x2xf32>) -> (tensor<4xf32>)
}

// -----

func.func @F0(%x: tensor<4xf32>) -> tensor<4xf32> {
  func.return %x : tensor<4xf32>
}
sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.call' op stream name must not be empty
  %a = sched.call @F0(%w) task "0F0" stream "" : (tensor<4xf32>) -> (tensor<4xf32>)
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.send' op device 0 sends to itself
  %h = sched.send %w to 0 tag 0 stream "comm" : tensor<4xf32>
  sched.wait %h
}

// -----

sched.program @rank1 device 1 {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.recv' op device 1 receives from itself
  %h = sched.recv from 1 tag 0 stream "comm" : tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank1 device 1 {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.recv' op stream name must not be empty
  %h = sched.recv from 0 tag 0 stream " " : tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op unknown collective 'gather'
  %h = "sched.collective"(%w) <{kind = "gather", group = [#builtin.int<0>, #builtin.int<1>], tag = #builtin.int<0>, stream = "comm", result_type = tensor<4xf32>}> : (tensor<4xf32>) -> !sched.handle
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op all_reduce needs reduction
  %h = "sched.collective"(%w) <{kind = "all_reduce", group = [#builtin.int<0>, #builtin.int<1>], tag = #builtin.int<0>, stream = "comm", result_type = tensor<4xf32>}> : (tensor<4xf32>) -> !sched.handle
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op all_gather takes no reduction
  %h = "sched.collective"(%w) <{kind = "all_gather", reduce = "sum", group = [#builtin.int<0>, #builtin.int<1>], tag = #builtin.int<0>, stream = "comm", result_type = tensor<8xf32>}> : (tensor<4xf32>) -> !sched.handle
  %a = sched.wait %h : tensor<8xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op reduction must be one of sum, avg, max
  %h = "sched.collective"(%w) <{kind = "all_reduce", reduce = "min", group = [#builtin.int<0>, #builtin.int<1>], tag = #builtin.int<0>, stream = "comm", result_type = tensor<4xf32>}> : (tensor<4xf32>) -> !sched.handle
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op only broadcast has a root
  %h = "sched.collective"(%w) <{kind = "all_to_all", root = #builtin.int<0>, group = [#builtin.int<0>, #builtin.int<1>], tag = #builtin.int<0>, stream = "comm", result_type = tensor<4xf32>}> : (tensor<4xf32>) -> !sched.handle
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op group [0, 0] must list distinct devices
  %h = sched.collective all_reduce sum %w group [0, 0] tag 0 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op broadcast root 2 is not in the group
  %h = sched.collective broadcast root 2 %w group [0, 1] tag 0 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op all_reduce of tensor<4xf32> over 2 devices gives tensor<4xf32>, not tensor<4xf64>
  %h = sched.collective all_reduce sum %w group [0, 1] tag 0 stream "comm" : tensor<4xf32> -> tensor<4xf64>
  %a = sched.wait %h : tensor<4xf64>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op reduce_scatter of tensor<4xf32> over 2 devices gives tensor<2xf32>, not tensor<4xf32>
  %h = sched.collective reduce_scatter sum %w group [0, 1] tag 0 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<5xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op reduce_scatter of 5 elements over 2 devices does not divide
  %h = sched.collective reduce_scatter sum %w group [0, 1] tag 0 stream "comm" : tensor<5xf32> -> tensor<2xf32>
  %a = sched.wait %h : tensor<2xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<2x2xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op all_gather operand must be a flat shard (rank 1)
  %h = sched.collective all_gather %w group [0, 1] tag 0 stream "comm" : tensor<2x2xf32> -> tensor<8xf32>
  %a = sched.wait %h : tensor<8xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op all_gather of 2 shards of tensor<4xf32> cannot give tensor<4xf32>
  %h = sched.collective all_gather %w group [0, 1] tag 0 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<3x2xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op all_to_all dim 0 (3) must divide by 2
  %h = sched.collective all_to_all %w group [0, 1] tag 0 stream "comm" : tensor<3x2xf32> -> tensor<3x2xf32>
  %a = sched.wait %h : tensor<3x2xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op stream name must not be empty
  %h = sched.collective all_reduce sum %w group [0, 1] tag 0 stream "" : tensor<4xf32> -> tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.collective' op device 0 runs a collective of group [1, 2] it is not in
  %h = sched.collective all_reduce sum %w group [1, 2] tag 0 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
}

// -----

sched.program @rank1 device 1 {
  %h = sched.recv from 0 tag 0 stream "comm" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.wait' op wait on 'sched.recv' must yield tensor<4xf32>, yields nothing
  sched.wait %h
}

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  %h = sched.send %w to 1 tag 0 stream "comm" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.wait' op wait on 'sched.send' must yield nothing, yields tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
}

// -----

func.func @f(%h: !sched.handle) {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.wait' op waits on a handle that no sched.send, recv or collective started
  sched.wait %h
  func.return
}

// -----

// A program uses only its own values, and instructions live in a program.
%w = sched.load "w" : tensor<4xf32>
sched.program @rank0 device 0 {
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.program' op 'sched.store' uses %w, which is not defined in the program (a program uses only its own values)
  sched.store "w" %w : tensor<4xf32>
}

// -----

// CHECK: invalid.mlir:[[# @LINE + 1]]:1: error: 'sched.load' op must be directly inside a 'sched.program', not in 'builtin.module'
%w = sched.load "w" : tensor<4xf32>

// -----

sched.program @rank0 device 0 {
  %w = sched.load "w" : tensor<4xf32>
  // CHECK: invalid.mlir:[[# @LINE + 1]]:3: error: 'sched.copy' op sched.copy goes to one of host, device, not 'disk'
  %c = sched.copy %w to "disk" stream "d2h" : tensor<4xf32>
}
