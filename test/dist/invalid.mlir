// Verifier errors of the dist ops this file covers, one case each.
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
