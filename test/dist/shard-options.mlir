// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1 stages="1" gather_stream="gather" reduce_stream="reduce"}' | filecheck %s
// RUN: piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,split{n=2},replicate{n=2},shard{stage=3 prefetch=0}' | filecheck %s --check-prefix=PREFETCH
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1 prefetch=1}' 2>&1 | filecheck %s --check-prefix=STAGE
// RUN: not piper-opt %S/Inputs/two_stage.mlir -p 'convert-graph-to-dist,replicate{n=2},shard{stage=1 stages="4"}' 2>&1 | filecheck %s --check-prefix=ABSENT
// RUN: not piper-opt %S/Inputs/two_params.mlir -p 'convert-graph-to-dist,replicate{n=2 bucket_bytes=64},shard{stage=1}' 2>&1 | filecheck %s --check-prefix=BUCKETS

// Only stage 1 is sharded; its collectives run on the named streams, and
// stage 0 keeps its all_reduce and full optimizer.
// CHECK: dist.all_reduce sum %w0_B0, %w0_B0_1 group [0, 1] bytes 32 :
// CHECK: dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0(
// CHECK: dist.reduce_scatter sum %w1_B1, %w1_B1_1 group [2, 3] bytes 32 stream "reduce"
// CHECK: dist.task OPT stage 1 mb 0 replica 0 on 2 @OPT1_zero2
// CHECK: dist.all_gather {{.*}} group [2, 3] bytes 16 stream "gather"

// prefetch=0: each parameter gather is marked and starts right before the
// first task that reads it, not at the top of the step.
// PREFETCH: %[[G:.*]], %{{.*}} = dist.all_gather %w1_shard, %w1_shard_1 group [2, 3] bytes 16 prefetch 0
// PREFETCH-NEXT: dist.task F stage 1 mb 0 replica 0 on 2 @F1(%[[G]],
// PREFETCH: %[[H:.*]], %{{.*}} = dist.all_gather %w1_shard, %w1_shard_1 group [2, 3] bytes 16 prefetch 0
// PREFETCH-NEXT: dist.task F stage 1 mb 1 replica 0 on 2 @F1(%[[H]],

// STAGE: error: shard: prefetch applies to stage 3 (parameter gathering); this is stage 1
// ABSENT: error: shard: stages [4] are not in the plan (stages 0, 1)
// BUCKETS: error: shard: the gradients are bucketed (replicate bucket_bytes); ZeRO reduce-scatters each gradient itself, so drop bucket_bytes
