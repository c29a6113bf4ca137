// RUN: piper-opt %S/Inputs/moe_routed_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,split{n=2},order{text="rank0: 0F0 0F1&0B0 0B1"},expert_parallel{n=2},overlap-pairs' | filecheck %s
// RUN: piper-opt %S/Inputs/moe_routed_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,split{n=2},order{text="rank0: 0F0 0F1&0B0 0B1"},expert_parallel{n=2},overlap-pairs,lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=SCHED
// RUN: piper-opt %S/Inputs/moe_routed_one_layer.mlir -p 'pipeline-split,convert-graph-to-dist,split{n=2},order{text="rank0: 0F0 0F1 0B0 0B1"},expert_parallel{n=2},overlap-pairs' | filecheck %s --check-prefix=NOPAIR

// Input: a captured routed MoE step (one stage, 2 stacked experts), two
// microbatches, expert parallel over 2 devices. The order pairs the forward
// of microbatch 1 with the backward of microbatch 0 (`0F1&0B0`): both tasks
// get `pair 1` (the entry's index), and expert_parallel cuts each into
// pre / experts / post pieces around its dispatch and combine all_to_all,
// the pieces keeping the pair. overlap-pairs alternates the two tasks'
// pieces, so each all_to_all travels while the other task computes.

// An unpaired task keeps its pieces in a row.
// CHECK: dist.task F stage 0 mb 0 replica 0 on 0 @F0_pre(
// CHECK: dist.task F stage 0 mb 0 replica 0 on 0 @F0_experts0(
// CHECK: dist.task F stage 0 mb 0 replica 0 on 0 @F0_post(
// The pair: F pre, B pre, F experts, B experts, F post, B post.
// CHECK: dist.task F stage 0 mb 1 replica 0 on 0 pair 1 @F0_pre(
// CHECK: dist.all_to_all
// CHECK: dist.task B stage 0 mb 0 replica 0 on 0 pair 1 @B0_pre(
// CHECK: dist.task F stage 0 mb 1 replica 0 on 0 pair 1 @F0_experts0(
// CHECK: dist.task B stage 0 mb 0 replica 0 on 0 pair 1 @B0_experts0(
// CHECK: dist.task F stage 0 mb 1 replica 0 on 0 pair 1 @F0_post(
// CHECK: dist.task B stage 0 mb 0 replica 0 on 0 pair 1 @B0_post(
// CHECK: dist.task B stage 0 mb 1 replica 0 on 0 @B0_pre(

// Device 0's program: the forward's dispatch starts, the backward's first
// piece runs, and only then is the dispatch waited for; likewise the
// backward's dispatch is in flight during the forward's experts.
// SCHED-LABEL: sched.program @rank0 device 0
// SCHED: sched.call @F0_post(
// SCHED: sched.call @F0_pre(
// SCHED-NEXT: %[[FD:.*]] = sched.collective all_to_all
// SCHED-NOT: sched.wait %[[FD]]
// SCHED: sched.call @B0_pre(
// SCHED-NOT: sched.wait %[[FD]]
// SCHED: %[[BD:.*]] = sched.collective all_to_all
// SCHED-NEXT: sched.wait %[[FD]]
// SCHED-NOT: sched.call @B0
// SCHED: sched.call @F0_experts0(
// SCHED-NEXT: %[[FC:.*]] = sched.collective all_to_all
// SCHED-NOT: sched.call @F0
// SCHED: sched.wait %[[BD]]
// SCHED-NOT: sched.call @F0
// SCHED: sched.call @B0_experts0(
// SCHED: sched.wait %[[FC]]
// SCHED-NOT: sched.call @B0
// SCHED: sched.call @F0_post(

// Without a pair, the same plan keeps each task's pieces together.
// NOPAIR-NOT: pair
// NOPAIR: dist.task F stage 0 mb 1 replica 0 on 0 @F0_pre(
// NOPAIR-NEXT: dist.task F stage 0 mb 1 replica 1 on 1 @F0_pre(
// NOPAIR-NEXT: dist.all_to_all
// NOPAIR-NEXT: dist.task F stage 0 mb 1 replica 0 on 0 @F0_experts0(
