// RUN: piper-opt %S/Inputs/two_params.mlir -p 'convert-graph-to-dist,replicate{n=2 bucket_bytes=32 stream="grads"}' | filecheck %s
// RUN: piper-opt %S/Inputs/two_params.mlir -p 'convert-graph-to-dist,replicate{n=2 bucket_bytes=16}' | filecheck %s --check-prefix=SMALL
// RUN: not piper-opt %S/Inputs/two_params.mlir -p 'convert-graph-to-dist,replicate{n=2 bucket_bytes=-1}' 2>&1 | filecheck %s --check-prefix=NEG

// The stage's two gradients (16 B each) fit one 32 B bucket: each replica
// packs them, one all_reduce on stream "grads" sums the buckets, each
// replica unpacks the sum for its optimizer.
// CHECK: %[[P0:.*]] = dist.pack %w_B0, %b_B0 on 0 : (tensor<4xf32>, tensor<2x2xf32>) -> (tensor<8xf32>)
// CHECK: %[[P1:.*]] = dist.pack %w_B0_1, %b_B0_1 on 1
// CHECK: %[[R0:.*]], %[[R1:.*]] = dist.all_reduce sum %[[P0]], %[[P1]] group [0, 1] bytes 64 stream "grads" : (tensor<8xf32>, tensor<8xf32>)
// CHECK: %[[W:.*]], %[[B:.*]] = dist.unpack %[[R0]] on 0 : (tensor<8xf32>) -> (tensor<4xf32>, tensor<2x2xf32>)
// CHECK: dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0(%w, %b, %[[W]], %[[B]])

// A bucket smaller than two gradients: one all_reduce each, nothing packed.
// SMALL-NOT: dist.pack
// SMALL: dist.all_reduce sum %w_B0, %w_B0_1 group [0, 1] bytes 32 : (tensor<4xf32>
// SMALL: dist.all_reduce sum %b_B0, %b_B0_1 group [0, 1] bytes 32 : (tensor<2x2xf32>

// NEG: error: replicate: bucket_bytes must be at least 0, got -1
