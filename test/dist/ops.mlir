// RUN: piper-opt %s | filecheck %s
// RUN: piper-opt %s | piper-opt | filecheck %s
// RUN: piper-opt %s --print-debuginfo > %t && piper-opt %t --print-debuginfo > %t2 && diff %t %t2
// Round-trip of every dist op.

func.func @F0(%w: tensor<4x4xf32>, %x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  func.return %x : tensor<2x4xf32>
}

// CHECK: dist.plan @step mesh [pp = 2, dp = 2] microbatches 2 {
dist.plan @step mesh [pp = 2, dp = 2] microbatches 2 {
  // CHECK-NEXT: %w = dist.load "fc.weight" on 0 : tensor<4x4xf32>
  %w = dist.load "fc.weight" on 0 : tensor<4x4xf32>
  // CHECK-NEXT: %w1 = dist.load "fc.weight" on 2 : tensor<4x4xf32>
  %w1 = dist.load "fc.weight" on 2 : tensor<4x4xf32>
  // CHECK-NEXT: %m = dist.load "fc.weight:exp_avg" shard 1 of 2 on 2 : tensor<8xf32>
  %m = dist.load "fc.weight:exp_avg" shard 1 of 2 on 2 : tensor<8xf32>
  // CHECK-NEXT: %rw = dist.load "proj.weight" shard 1 of 2 dim 1 on 2 : tensor<4x2xf32>
  %rw = dist.load "proj.weight" shard 1 of 2 dim 1 on 2 : tensor<4x2xf32>
  // CHECK-NEXT: %x = dist.input "input0" replica 0 mb 1 on 0 : tensor<2x4xf32>
  %x = dist.input "input0" replica 0 mb 1 on 0 : tensor<2x4xf32>
  // CHECK-NEXT: %a = dist.task F stage 0 mb 1 replica 0 on 0 @F0(%w, %x) : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>)
  %a = dist.task F stage 0 mb 1 replica 0 on 0 @F0(%w, %x) : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>)
  // CHECK-NEXT: %b = dist.send %a from 0 to 1 bytes 32 : tensor<2x4xf32>
  %b = dist.send %a from 0 to 1 bytes 32 : tensor<2x4xf32>
  // CHECK-NEXT: %t = dist.fill 0.25 on 1 : tensor<f32>
  %t = dist.fill 0.25 on 1 : tensor<f32>
  // CHECK-NEXT: %s = dist.sum %b, %b scale 0.5 on 1 : tensor<2x4xf32>
  %s = dist.sum %b, %b scale 0.5 on 1 : tensor<2x4xf32>
  // CHECK-NEXT: %r, %r_1 = dist.all_reduce sum %w, %w1 group [0, 2] bytes 128 : (tensor<4x4xf32>, tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  %r:2 = dist.all_reduce sum %w, %w1 group [0, 2] bytes 128 : (tensor<4x4xf32>, tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  // CHECK-NEXT: %rs, %rs_1 = dist.reduce_scatter avg %w, %w1 group [0, 2] bytes 128 : (tensor<4x4xf32>, tensor<4x4xf32>) -> (tensor<8xf32>, tensor<8xf32>)
  %rs:2 = dist.reduce_scatter avg %w, %w1 group [0, 2] bytes 128 : (tensor<4x4xf32>, tensor<4x4xf32>) -> (tensor<8xf32>, tensor<8xf32>)
  // CHECK-NEXT: %g, %g_1 = dist.all_gather %rs, %rs_1 group [0, 2] bytes 64 : (tensor<8xf32>, tensor<8xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  %g:2 = dist.all_gather %rs#0, %rs#1 group [0, 2] bytes 64 : (tensor<8xf32>, tensor<8xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  // CHECK-NEXT: %e, %e_1 = dist.all_to_all %w, %w1 group [0, 2] bytes 128 : (tensor<4x4xf32>, tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  %e:2 = dist.all_to_all %w, %w1 group [0, 2] bytes 128 : (tensor<4x4xf32>, tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  // CHECK-NEXT: %c, %c_1 = dist.broadcast root 0 %w, %w1 group [0, 2] bytes 128 : (tensor<4x4xf32>, tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  %c:2 = dist.broadcast root 0 %w, %w1 group [0, 2] bytes 128 : (tensor<4x4xf32>, tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  // CHECK-NEXT: %ts = dist.task F stage 0 mb 0 replica 0 on 0 stream "compute1" @F0(%w, %x) : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>)
  %ts = dist.task F stage 0 mb 0 replica 0 on 0 stream "compute1" @F0(%w, %x) : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>)
  // CHECK-NEXT: %tp = dist.task F stage 0 mb 2 replica 0 on 0 pair 3 stream "compute1" @F0(%w, %x) : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>)
  %tp = dist.task F stage 0 mb 2 replica 0 on 0 pair 3 stream "compute1" @F0(%w, %x) : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>)
  // CHECK-NEXT: %rg, %rg_1 = dist.all_reduce sum %w, %w1 group [0, 2] bytes 128 stream "grads" : (tensor<4x4xf32>, tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  %rg:2 = dist.all_reduce sum %w, %w1 group [0, 2] bytes 128 stream "grads" : (tensor<4x4xf32>, tensor<4x4xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  // CHECK-NEXT: %gp, %gp_1 = dist.all_gather %rs, %rs_1 group [0, 2] bytes 64 prefetch 1 stream "gather" : (tensor<8xf32>, tensor<8xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  %gp:2 = dist.all_gather %rs#0, %rs#1 group [0, 2] bytes 64 prefetch 1 stream "gather" : (tensor<8xf32>, tensor<8xf32>) -> (tensor<4x4xf32>, tensor<4x4xf32>)
  // CHECK-NEXT: %pk = dist.pack %w, %x on 0 : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<24xf32>)
  %pk = dist.pack %w, %x on 0 : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<24xf32>)
  // CHECK-NEXT: %up, %up_1 = dist.unpack %pk on 0 : (tensor<24xf32>) -> (tensor<4x4xf32>, tensor<2x4xf32>)
  %up:2 = dist.unpack %pk on 0 : (tensor<24xf32>) -> (tensor<4x4xf32>, tensor<2x4xf32>)
  // Shard-major packing (ZeRO buckets): chunk c of every tensor, c = 0, 1.
  // CHECK-NEXT: %pks = dist.pack %w, %x on 0 shards 2 : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<24xf32>)
  %pks = dist.pack %w, %x on 0 shards 2 : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<24xf32>)
  // CHECK-NEXT: %ups, %ups_1 = dist.unpack %pks on 0 shards 2 : (tensor<24xf32>) -> (tensor<4x4xf32>, tensor<2x4xf32>)
  %ups:2 = dist.unpack %pks on 0 shards 2 : (tensor<24xf32>) -> (tensor<4x4xf32>, tensor<2x4xf32>)
  // CHECK-NEXT: dist.store "fc.weight" %g on 0 : tensor<4x4xf32>
  dist.store "fc.weight" %g#0 on 0 : tensor<4x4xf32>
  // CHECK-NEXT: dist.store "fc.weight:exp_avg" shard 1 of 2 %rs_1 on 2 : tensor<8xf32>
  dist.store "fc.weight:exp_avg" shard 1 of 2 %rs#1 on 2 : tensor<8xf32>
  // CHECK-NEXT: dist.store loss "objective" %g on 0 : tensor<4x4xf32>
  dist.store loss "objective" %g#0 on 0 : tensor<4x4xf32>
}
