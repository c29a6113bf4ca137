// RUN: piper-opt %s | filecheck %s
// RUN: piper-opt %s | piper-opt | filecheck %s
// RUN: piper-opt %s --print-debuginfo > %t && piper-opt %t --print-debuginfo > %t2 && diff %t %t2
// Round-trip of every sched op.

func.func @F0(%w: tensor<4x4xf32>, %x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  func.return %x : tensor<2x4xf32>
}

// CHECK: sched.program @rank0 device 0 {
sched.program @rank0 device 0 {
  // CHECK-NEXT: %w = sched.load "fc.weight" : tensor<4x4xf32>
  %w = sched.load "fc.weight" : tensor<4x4xf32>
  // CHECK-NEXT: %m = sched.load "fc.weight:exp_avg" shard 0 of 2 : tensor<8xf32>
  %m = sched.load "fc.weight:exp_avg" shard 0 of 2 : tensor<8xf32>
  // CHECK-NEXT: %rw = sched.load "proj.weight" shard 0 of 2 dim 1 : tensor<4x2xf32>
  %rw = sched.load "proj.weight" shard 0 of 2 dim 1 : tensor<4x2xf32>
  // CHECK-NEXT: %x = sched.input "input0" replica 0 mb 1 : tensor<2x4xf32>
  %x = sched.input "input0" replica 0 mb 1 : tensor<2x4xf32>
  // CHECK-NEXT: %a = sched.call @F0(%w, %x) task "0F1" stream "compute" : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>)
  %a = sched.call @F0(%w, %x) task "0F1" stream "compute" : (tensor<4x4xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>)
  // CHECK-NEXT: %h = sched.send %a to 1 tag 0 stream "comm" : tensor<2x4xf32>
  %h = sched.send %a to 1 tag 0 stream "comm" : tensor<2x4xf32>
  // CHECK-NEXT: %h2 = sched.recv from 1 tag 1 stream "comm" : tensor<2x4xf32>
  %h2 = sched.recv from 1 tag 1 stream "comm" : tensor<2x4xf32>
  // CHECK-NEXT: %h3 = sched.collective all_reduce sum %w group [0, 2] tag 2 stream "comm" : tensor<4x4xf32> -> tensor<4x4xf32>
  %h3 = sched.collective all_reduce sum %w group [0, 2] tag 2 stream "comm" : tensor<4x4xf32> -> tensor<4x4xf32>
  // CHECK-NEXT: %h4 = sched.collective reduce_scatter avg %w group [0, 2] tag 3 stream "comm2" : tensor<4x4xf32> -> tensor<8xf32>
  %h4 = sched.collective reduce_scatter avg %w group [0, 2] tag 3 stream "comm2" : tensor<4x4xf32> -> tensor<8xf32>
  // CHECK-NEXT: %h5 = sched.collective all_gather %m group [0, 2] tag 4 stream "comm" : tensor<8xf32> -> tensor<4x4xf32>
  %h5 = sched.collective all_gather %m group [0, 2] tag 4 stream "comm" : tensor<8xf32> -> tensor<4x4xf32>
  // CHECK-NEXT: %h6 = sched.collective all_to_all %w group [0, 2] tag 5 stream "comm" : tensor<4x4xf32> -> tensor<4x4xf32>
  %h6 = sched.collective all_to_all %w group [0, 2] tag 5 stream "comm" : tensor<4x4xf32> -> tensor<4x4xf32>
  // CHECK-NEXT: %h7 = sched.collective broadcast root 0 %w group [0, 1] tag 6 stream "comm" : tensor<4x4xf32> -> tensor<4x4xf32>
  %h7 = sched.collective broadcast root 0 %w group [0, 1] tag 6 stream "comm" : tensor<4x4xf32> -> tensor<4x4xf32>
  // CHECK-NEXT: sched.wait %h
  sched.wait %h
  // CHECK-NEXT: %b = sched.wait %h2 : tensor<2x4xf32>
  %b = sched.wait %h2 : tensor<2x4xf32>
  %r = sched.wait %h3 : tensor<4x4xf32>
  %rs = sched.wait %h4 : tensor<8xf32>
  %g = sched.wait %h5 : tensor<4x4xf32>
  %e = sched.wait %h6 : tensor<4x4xf32>
  %c = sched.wait %h7 : tensor<4x4xf32>
  // CHECK: %t = sched.fill 0.25 : tensor<f32>
  %t = sched.fill 0.25 : tensor<f32>
  // CHECK-NEXT: %s = sched.sum %a, %b scale 1.0 : tensor<2x4xf32>
  %s = sched.sum %a, %b scale 1.0 : tensor<2x4xf32>
  // CHECK-NEXT: sched.free %a : tensor<2x4xf32>
  sched.free %a : tensor<2x4xf32>
  // CHECK-NEXT: sched.store "fc.weight" %g : tensor<4x4xf32>
  sched.store "fc.weight" %g : tensor<4x4xf32>
  // CHECK-NEXT: sched.store "fc.weight:exp_avg" shard 0 of 2 %rs : tensor<8xf32>
  sched.store "fc.weight:exp_avg" shard 0 of 2 %rs : tensor<8xf32>
  // CHECK-NEXT: sched.store loss "objective" %s : tensor<2x4xf32>
  sched.store loss "objective" %s : tensor<2x4xf32>
  // CHECK-NEXT: %ms = sched.load host "fc.weight:exp_avg" shard 0 of 2 : tensor<8xf32>
  %ms = sched.load host "fc.weight:exp_avg" shard 0 of 2 : tensor<8xf32>
  // CHECK-NEXT: %md = sched.copy %ms to "device" stream "h2d" : tensor<8xf32>
  %md = sched.copy %ms to "device" stream "h2d" : tensor<8xf32>
  // CHECK-NEXT: %mh = sched.copy %md to "host" stream "d2h" : tensor<8xf32>
  %mh = sched.copy %md to "host" stream "d2h" : tensor<8xf32>
}
