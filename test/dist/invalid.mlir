// Every verifier error of the dist dialect (and the syntax errors of its
// custom forms), one case each.
// RUN: %python %S/../kernel/Inputs/each_case.py %s | filecheck %s

// CHECK: case 0: exit 1
// CHECK-NEXT: case0.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'dist.pack' op 'dist.pack' tensors must all have element type f32, got tensor<4xf64>
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "b" on 0 : tensor<4xf64>
  %p = dist.pack %a, %b on 0 : (tensor<4xf32>, tensor<4xf64>) -> (tensor<8xf32>)
}

// -----
// CHECK: case 1: exit 1
// CHECK-NEXT: case1.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'dist.pack' op 'dist.pack' packed tensor has 6 elements, the tensors hold 8
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "b" on 0 : tensor<2x2xf32>
  %p = dist.pack %a, %b on 0 : (tensor<4xf32>, tensor<2x2xf32>) -> (tensor<6xf32>)
}

// -----
// CHECK: case 2: exit 1
// CHECK-NEXT: case2.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'dist.unpack' op 'dist.unpack' packed tensor must be rank 1, got tensor<2x4xf32>
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<2x4xf32>
  %u:2 = dist.unpack %a on 0 : (tensor<2x4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 3: exit 1
// CHECK-NEXT: case3.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'dist.all_reduce' op stream name must not be empty
dist.plan @step mesh [pp = 1, dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "a" on 1 : tensor<4xf32>
  %r:2 = dist.all_reduce sum %a, %b group [0, 1] bytes 32 stream "" : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 4: exit 1
// CHECK-NEXT: case4.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'dist.all_gather' op prefetch must be at least 0, got -1
dist.plan @step mesh [pp = 1, dp = 2] microbatches 1 {
  %a = dist.load "a" shard 0 of 2 on 0 : tensor<2xf32>
  %b = dist.load "a" shard 1 of 2 on 1 : tensor<2xf32>
  %g:2 = dist.all_gather %a, %b group [0, 1] bytes 16 prefetch -1 : (tensor<2xf32>, tensor<2xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 5: exit 1
// CHECK-NEXT: case5.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'dist.task' op stream name must not be empty
func.func @F0(%x: tensor<4xf32>) -> tensor<4xf32> {
  func.return %x : tensor<4xf32>
}
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %t = dist.task F stage 0 mb 0 replica 0 on 0 stream " " @F0(%a) : (tensor<4xf32>) -> (tensor<4xf32>)
}

// -----
// CHECK: case 6: exit 1
// CHECK-NEXT: case6.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'dist.pack' op 'dist.pack' with shards 2: tensor<3xf32> has 3 elements, which do not divide into 2 chunks
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<3xf32>
  %b = dist.load "b" on 0 : tensor<4xf32>
  %p = dist.pack %a, %b on 0 shards 2 : (tensor<3xf32>, tensor<4xf32>) -> (tensor<7xf32>)
}

// -----
// CHECK: case 7: exit 1
// CHECK-NEXT: case7.mlir:{{[0-9]+}}:{{[0-9]+}}: error: shards must be at least 2, got 1
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<8xf32>
  %u:2 = dist.unpack %a on 0 shards 1 : (tensor<8xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 8: exit 1
// CHECK-NEXT: case8.mlir:3:1: error: 'dist.plan' op mesh axes and sizes must match and be positive
dist.plan @step mesh [pp = 1, dp = 0] microbatches 1 {
}

// -----
// CHECK: case 9: exit 1
// CHECK-NEXT: case9.mlir:3:31: error: mesh axis 'pp' given twice
dist.plan @step mesh [pp = 1, pp = 2] microbatches 1 {
}

// -----
// CHECK: case 10: exit 1
// CHECK-NEXT: case10.mlir:3:1: error: 'dist.plan' op 'dist.load' uses device 2, outside the mesh of 2 devices
dist.plan @step mesh [pp = 2] microbatches 1 {
  %a = dist.load "a" on 2 : tensor<4xf32>
}

// -----
// CHECK: case 11: exit 1
// CHECK-NEXT: case11.mlir:3:1: error: 'dist.plan' op 'dist.sum' on device 1 uses a value that lives on device 0; cross-device uses need a communication op
dist.plan @step mesh [pp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "b" on 1 : tensor<4xf32>
  %s = dist.sum %a, %b scale 1.0 on 1 : tensor<4xf32>
}

// -----
// CHECK: case 12: exit 1
// CHECK-NEXT: case12.mlir:4:3: error: 'dist.load' op shard 2 of 2 is out of range
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" shard 2 of 2 on 0 : tensor<4xf32>
}

// -----
// CHECK: case 13: exit 1
// CHECK-NEXT: case13.mlir:5:3: error: 'dist.store' op shard 3 of 2 is out of range
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  dist.store "a" shard 3 of 2 %a on 0 : tensor<4xf32>
}

// -----
// CHECK: case 14: exit 1
// CHECK-NEXT: case14.mlir:4:3: error: 'dist.sum' op dist.sum needs at least one input
dist.plan @step mesh [pp = 1] microbatches 1 {
  %s = "dist.sum"() <{scale = 1.0 : f64, device = #builtin.int<0>}> : () -> tensor<4xf32>
}

// -----
// CHECK: case 15: exit 1
// CHECK-NEXT: case15.mlir:5:3: error: 'dist.sum' op dist.sum inputs must all have the result type tensor<4xf64>, got tensor<4xf32>
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %s = "dist.sum"(%a) <{scale = 1.0 : f64, device = #builtin.int<0>}> : (tensor<4xf32>) -> tensor<4xf64>
}

// -----
// CHECK: case 16: exit 1
// CHECK-NEXT: case16.mlir:5:3: error: 'dist.shard' op part 0 of 4 of a tensor of 6 elements is invalid
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<6xf32>
  %s = dist.shard %a part 0 of 4 on 0 : tensor<6xf32>
}

// -----
// CHECK: case 17: exit 1
// CHECK-NEXT: case17.mlir:5:3: error: 'dist.shard' op part 1 of 2 of tensor<8xf32> is tensor<4xf32>, not tensor<8xf32>
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<8xf32>
  %s = "dist.shard"(%a) <{part = [#builtin.int<1>, #builtin.int<2>], device = #builtin.int<0>}> : (tensor<8xf32>) -> tensor<8xf32>
}

// -----
// CHECK: case 18: exit 1
// CHECK-NEXT: case18.mlir:4:3: error: 'dist.pack' op 'dist.pack' needs at least one tensor
dist.plan @step mesh [pp = 1] microbatches 1 {
  %p = "dist.pack"() <{device = #builtin.int<0>}> : () -> tensor<0xf32>
}

// -----
// CHECK: case 19: exit 1
// CHECK-NEXT: case19.mlir:5:3: error: 'dist.task' op task calls unknown function @F0
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %t = dist.task F stage 0 mb 0 replica 0 on 0 @F0(%a) : (tensor<4xf32>) -> (tensor<4xf32>)
}

// -----
// CHECK: case 20: exit 1
// CHECK-NEXT: case20.mlir:5:3: error: 'dist.task' op task callee @step is not a function
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %t = dist.task F stage 0 mb 0 replica 0 on 0 @step(%a) : (tensor<4xf32>) -> (tensor<4xf32>)
}

// -----
// CHECK: case 21: exit 1
// CHECK-NEXT: case21.mlir:8:3: error: 'dist.task' op task types do not match the signature of @F0
func.func @F0(%x: tensor<4xf32>) -> tensor<4xf32> {
  func.return %x : tensor<4xf32>
}
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %t = dist.task F stage 0 mb 0 replica 0 on 0 @F0(%a) : (tensor<4xf32>) -> (tensor<4xf64>)
}

// -----
// CHECK: case 22: exit 1
// CHECK-NEXT: case22.mlir:8:3: error: 'dist.task' op task kind 'X' is not one of F, B, I, W, OPT
func.func @F0(%x: tensor<4xf32>) -> tensor<4xf32> {
  func.return %x : tensor<4xf32>
}
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %t = "dist.task"(%a) <{kind = "X", stage = #builtin.int<0>, mb = #builtin.int<0>, replica = #builtin.int<0>, device = #builtin.int<0>, callee = @F0}> : (tensor<4xf32>) -> tensor<4xf32>
}

// -----
// CHECK: case 23: exit 1
// CHECK-NEXT: case23.mlir:5:3: error: 'dist.send' op send from device 0 to itself
dist.plan @step mesh [pp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.send %a from 0 to 0 bytes 16 : tensor<4xf32>
}

// -----
// CHECK: case 24: exit 1
// CHECK-NEXT: case24.mlir:5:3: error: 'dist.send' op send result type must equal its operand type
dist.plan @step mesh [pp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = "dist.send"(%a) <{src = #builtin.int<0>, dst = #builtin.int<1>, bytes = #builtin.int<16>}> : (tensor<4xf32>) -> tensor<2x2xf32>
}

// -----
// CHECK: case 25: exit 1
// CHECK-NEXT: case25.mlir:5:3: error: 'dist.send' op 'dist.send' declares 8 bytes, its operands hold 16
dist.plan @step mesh [pp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.send %a from 0 to 1 bytes 8 : tensor<4xf32>
}

// -----
// CHECK: case 26: exit 1
// CHECK-NEXT: case26.mlir:5:3: error: 'dist.send' op send from device 0 of a value that lives on device 1
dist.plan @step mesh [pp = 2] microbatches 1 {
  %a = dist.load "a" on 1 : tensor<4xf32>
  %b = dist.send %a from 0 to 1 bytes 16 : tensor<4xf32>
}

// -----
// CHECK: case 27: exit 1
// CHECK-NEXT: case27.mlir:6:3: error: 'dist.all_reduce' op group [0, 0] must list distinct devices
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "a" on 0 : tensor<4xf32>
  %r:2 = dist.all_reduce sum %a, %b group [0, 0] bytes 32 : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 28: exit 1
// CHECK-NEXT: case28.mlir:5:3: error: 'dist.all_reduce' op 'dist.all_reduce' over a group of 2 needs 2 operands and results, got 1 and 2
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %r:2 = dist.all_reduce sum %a group [0, 1] bytes 16 : (tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 29: exit 1
// CHECK-NEXT: case29.mlir:6:3: error: 'dist.all_reduce' op operand 0 of 'dist.all_reduce' lives on device 1, but group member 0 is device 0
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "a" on 1 : tensor<4xf32>
  %r:2 = dist.all_reduce sum %b, %a group [0, 1] bytes 32 : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 30: exit 1
// CHECK-NEXT: case30.mlir:6:3: error: 'dist.all_reduce' op 'dist.all_reduce' declares 16 bytes, its operands hold 32
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "a" on 1 : tensor<4xf32>
  %r:2 = dist.all_reduce sum %a, %b group [0, 1] bytes 16 : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 31: exit 1
// CHECK-NEXT: case31.mlir:6:3: error: 'dist.all_reduce' op 'dist.all_reduce' operands and results must all be tensor<4xf32>
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "a" on 1 : tensor<4xf32>
  %r:2 = dist.all_reduce sum %a, %b group [0, 1] bytes 32 : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf64>)
}

// -----
// CHECK: case 32: exit 1
// CHECK-NEXT: case32.mlir:6:3: error: 'dist.reduce_scatter' op reduce_scatter of 5 elements over 2 devices does not divide
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<5xf32>
  %b = dist.load "a" on 1 : tensor<5xf32>
  %r:2 = dist.reduce_scatter sum %a, %b group [0, 1] bytes 40 : (tensor<5xf32>, tensor<5xf32>) -> (tensor<2xf32>, tensor<2xf32>)
}

// -----
// CHECK: case 33: exit 1
// CHECK-NEXT: case33.mlir:6:3: error: 'dist.reduce_scatter' op reduce_scatter operands must have one type
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "a" on 1 : tensor<2x2xf32>
  %r:2 = dist.reduce_scatter sum %a, %b group [0, 1] bytes 32 : (tensor<4xf32>, tensor<2x2xf32>) -> (tensor<2xf32>, tensor<2xf32>)
}

// -----
// CHECK: case 34: exit 1
// CHECK-NEXT: case34.mlir:6:3: error: 'dist.reduce_scatter' op reduce_scatter results must be tensor<2xf32>, got tensor<4xf32>
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "a" on 1 : tensor<4xf32>
  %r:2 = dist.reduce_scatter sum %a, %b group [0, 1] bytes 32 : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 35: exit 1
// CHECK-NEXT: case35.mlir:6:3: error: 'dist.all_gather' op all_gather operands must be flat shards (rank 1)
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<2x2xf32>
  %b = dist.load "a" on 1 : tensor<2x2xf32>
  %r:2 = dist.all_gather %a, %b group [0, 1] bytes 32 : (tensor<2x2xf32>, tensor<2x2xf32>) -> (tensor<8xf32>, tensor<8xf32>)
}

// -----
// CHECK: case 36: exit 1
// CHECK-NEXT: case36.mlir:6:3: error: 'dist.all_gather' op all_gather of 2 shards of tensor<2xf32> cannot give tensor<2xf32>
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<2xf32>
  %b = dist.load "a" on 1 : tensor<2xf32>
  %r:2 = dist.all_gather %a, %b group [0, 1] bytes 16 : (tensor<2xf32>, tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>)
}

// -----
// CHECK: case 37: exit 1
// CHECK-NEXT: case37.mlir:6:3: error: 'dist.all_gather' op all_gather operands must have one type
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<2xf32>
  %b = dist.load "a" on 1 : tensor<2xf64>
  %r:2 = dist.all_gather %a, %b group [0, 1] bytes 24 : (tensor<2xf32>, tensor<2xf64>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 38: exit 1
// CHECK-NEXT: case38.mlir:6:3: error: 'dist.all_gather' op all_gather results must have one type
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<2xf32>
  %b = dist.load "a" on 1 : tensor<2xf32>
  %r:2 = dist.all_gather %a, %b group [0, 1] bytes 16 : (tensor<2xf32>, tensor<2xf32>) -> (tensor<4xf32>, tensor<2x2xf32>)
}

// -----
// CHECK: case 39: exit 1
// CHECK-NEXT: case39.mlir:6:3: error: 'dist.all_to_all' op all_to_all dim 0 (3) must divide by 2
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<3x2xf32>
  %b = dist.load "a" on 1 : tensor<3x2xf32>
  %r:2 = dist.all_to_all %a, %b group [0, 1] bytes 48 : (tensor<3x2xf32>, tensor<3x2xf32>) -> (tensor<3x2xf32>, tensor<3x2xf32>)
}

// -----
// CHECK: case 40: exit 1
// CHECK-NEXT: case40.mlir:6:26: error: reduction must be one of sum, avg, max
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "a" on 1 : tensor<4xf32>
  %r:2 = dist.all_reduce min %a, %b group [0, 1] bytes 32 : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 41: exit 1
// CHECK-NEXT: case41.mlir:6:3: error: 'dist.all_reduce' op reduction must be one of sum, avg, max
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %b = dist.load "a" on 1 : tensor<4xf32>
  %r:2 = "dist.all_reduce"(%a, %b) <{reduce = "min", group = [#builtin.int<0>, #builtin.int<1>], bytes = #builtin.int<32>}> : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
}

// -----
// CHECK: case 42: exit 1
// CHECK-NEXT: case42.mlir:6:3: error: 'dist.all_gather' op all_gather of 2 shards of tensor<2xf32> cannot give tensor<4xf64>
dist.plan @step mesh [dp = 2] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<2xf32>
  %b = dist.load "a" on 1 : tensor<2xf32>
  %r:2 = dist.all_gather %a, %b group [0, 1] bytes 16 : (tensor<2xf32>, tensor<2xf32>) -> (tensor<4xf64>, tensor<4xf64>)
}

// -----
// CHECK: case 43: exit 1
// CHECK-NEXT: case43.mlir:3:1: error: 'dist.plan' op mesh axis names must be distinct
"dist.plan"() <{sym_name = "step", axes = ["pp", "pp"], shape = [#builtin.int<1>, #builtin.int<2>], microbatches = #builtin.int<1>}> ({
^bb0:
}) : () -> ()

// -----
// CHECK: case 44: exit 1
// CHECK-NEXT: case44.mlir:3:1: error: 'dist.plan' op microbatches must be at least 1
dist.plan @step mesh [pp = 1] microbatches 0 {
}

// -----
// CHECK: case 45: exit 1
// CHECK-NEXT: case45.mlir:5:32: error: part count must be at least 1, got 0
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %s = dist.shard %a part 0 of 0 on 0 : tensor<4xf32>
}

// -----
// A plan uses only its own values: the error points at the op that reads
// one from outside (lowering skipped such ops and crashed on the use).
// CHECK: case 46: exit 1
// CHECK-NEXT: case46.mlir:10:3: error: 'dist.plan' op 'dist.task' uses %w, which is not defined in the plan (a plan uses only its own values)
func.func @F0(%w: tensor<4xf32>) -> tensor<4xf32> {
  func.return %w : tensor<4xf32>
}
%w = dist.load "w" on 0 : tensor<4xf32>
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.task F stage 0 mb 0 replica 0 on 0 @F0(%w) : (tensor<4xf32>) -> (tensor<4xf32>)
}

// -----
// CHECK: case 47: exit 1
// CHECK-NEXT: case47.mlir:3:1: error: 'dist.load' op must be directly inside a 'dist.plan', not in 'builtin.module'
%w = dist.load "w" on 0 : tensor<4xf32>
dist.plan @step mesh [pp = 1] microbatches 1 {
}

// -----
// CHECK: case 48: exit 1
// CHECK-NEXT: case48.mlir:{{[0-9]+}}:{{[0-9]+}}: error: 'dist.task' op pair must be >= 0, got -1
func.func @F0(%x: tensor<4xf32>) -> tensor<4xf32> {
  func.return %x : tensor<4xf32>
}
dist.plan @step mesh [pp = 1] microbatches 1 {
  %a = dist.load "a" on 0 : tensor<4xf32>
  %t = dist.task F stage 0 mb 0 replica 0 on 0 pair -1 @F0(%a) : (tensor<4xf32>) -> (tensor<4xf32>)
}
