// RUN: piper-opt %S/Inputs/gpt1_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 plan="embed.tok:vocab"}' | filecheck %s
// RUN: piper-opt %S/Inputs/gpt1_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 plan="embed.tok:vocab"},lower-dist-to-sched,verify-plan' | filecheck %s --check-prefix=SCHED
// RUN: not piper-opt %S/Inputs/gpt1_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 plan="embed.tok:diagonal"}' 2>&1 | filecheck %s --check-prefix=STYLE
// RUN: piper-opt %S/Inputs/gpt1_sgd.mlir -p 'place{pp=1 stages=1},convert-graph-to-dist,tensor_parallel{n=2 plan="head.proj:loss"}' | filecheck %s --check-prefix=LOSS

// Input: a captured GPT step (see tensor_parallel_sequence.mlir), its token
// embedding [16, 8] split over its rows (the vocabulary) on tp = 2.

// Each rank looks up the ids in its 8 rows, starting at %vocab_start (a
// task operand: 0 on rank 0, 8 on rank 1), and gives zero for the others:
// a partial sum, returned for the all_reduce.
// CHECK-LABEL: func.func @F0_tp_p0(
// CHECK-SAME: %vocab_start: tensor<i64> {graph.name = "vocab_start", graph.kind = "act"}
// CHECK-SAME: %embed_tok_weight: tensor<8x8xf32> {graph.name = "embed.tok.weight", graph.kind = "param"}
// CHECK-SAME: -> (tensor<2x4x8xf32> {graph.name = "embedding", graph.kind = "partial"}
// CHECK: %input0_local = graph.aten "aten.sub.Tensor"(%input0, %vocab_start) tags {PP = 0} : (tensor<2x4xi64>, tensor<i64>) -> tensor<2x4xi64>
// CHECK-NEXT: %input0_below = graph.aten "aten.lt.Scalar"(%input0_local, 0)
// CHECK-NEXT: %input0_above = graph.aten "aten.ge.Scalar"(%input0_local, 8)
// CHECK-NEXT: %input0_outside = graph.aten "aten.bitwise_or.Tensor"(%input0_below, %input0_above)
// CHECK-NEXT: %input0_row = graph.aten "aten.masked_fill.Scalar"(%input0_local, %input0_outside, 0)
// CHECK-NEXT: %embedding_rows = graph.aten "aten.embedding.default"(%embed_tok_weight, %input0_row) tags {PP = 0} : (tensor<8x8xf32>, tensor<2x4xi64>) -> tensor<2x4x8xf32>
// CHECK-NEXT: %input0_outside_3d = graph.aten "aten.unsqueeze.default"(%input0_outside, -1)
// CHECK-NEXT: %embedding = graph.aten "aten.masked_fill.Scalar"(%embedding_rows, %input0_outside_3d, 0.0) tags {PP = 0} : (tensor<2x4x8xf32>, tensor<2x4x1xi1>) -> tensor<2x4x8xf32>
// CHECK-LABEL: func.func @F0_tp_p1(
// CHECK-SAME: %embedding_sum: tensor<2x4x8xf32> {graph.name = "embedding_sum", graph.kind = "reduced"}

// The backward accumulates the gradients of the rank's ids (the others'
// masked to zero) into its [8, 8] block: no communication.
// CHECK-LABEL: func.func @B0_tp(
// CHECK: %add_rows = graph.aten "aten.masked_fill.Scalar"(%add_4, %input0_outside_3d, 0.0)
// CHECK-NEXT: graph.aten "aten.embedding_dense_backward.default"(%add_rows, %input0_row, 8, -1, false) tags {PP = 0} : (tensor<2x4x8xf32>, tensor<2x4xi64>) -> tensor<8x8xf32>

// CHECK-LABEL: dist.plan @step mesh [pp = 1, tp = 2] microbatches 1 {
// CHECK: dist.load "embed.tok.weight" shard 0 of 2 on 0 : tensor<8x8xf32>
// CHECK: dist.load "embed.tok.weight" shard 1 of 2 on 1 : tensor<8x8xf32>
// CHECK: %vocab_start = dist.fill 0.0 on 0 : tensor<i64>
// CHECK-NEXT: %vocab_start_1 = dist.fill 8.0 on 1 : tensor<i64>
// CHECK: dist.all_reduce sum %embedding, %embedding_2 group [0, 1] bytes 512 : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> (tensor<2x4x8xf32>, tensor<2x4x8xf32>)
// CHECK-NOT: dist.all_reduce

// SCHED: sched.collective all_reduce sum %embedding group [0, 1]

// STYLE: style must be one of colwise, rowwise, vocab, loss, got 'diagonal'

// The loss layout: the head [16, 8] split over the vocabulary (colwise),
// logits [8, 8] a rank, and the cross entropy computed on them: the row
// max (all_reduce max), the sum of exponentials (all_reduce sum), the
// target's log-probability from the rank holding it (all_reduce sum); then
// the mean over the targets. The logits are never gathered.
// LOSS: %_log_softmax_max = graph.aten "aten.amax.default"(%view_14, [1], true) tags {PP = 0} : (tensor<8x8xf32>) -> tensor<8x1xf32>
// LOSS: %_log_softmax_shifted = graph.aten "aten.sub.Tensor"(%view, %_log_softmax_max_max)
// LOSS: %_log_softmax_sumexp = graph.aten "aten.sum.dim_IntList"(%_log_softmax_exp, [1], true)
// LOSS: %_log_softmax = graph.aten "aten.sub.Tensor"(%_log_softmax_shifted, %_log_softmax_logsumexp) tags {PP = 0} : (tensor<8x8xf32>, tensor<8x1xf32>) -> tensor<8x8xf32>
// LOSS: %loss_target = graph.aten "aten.masked_fill.Scalar"(%loss_picked, %loss_outside, 0.0)
// LOSS: graph.aten "aten.nll_loss_forward.default"(%loss_target_sum, %loss_class0, none, 1, -100) tags {PP = 0} : (tensor<8x1xf32>, tensor<8xi64>) -> (tensor<f32>, tensor<f32>)

// The backward: the rank's targets only (the others ignored), the sum of
// the log-softmax's gradient over the vocabulary all-reduced.
// LOSS: %view_15_mine = graph.aten "aten.masked_fill.Scalar"(%view_15_row, %view_15_outside, -100)
// LOSS-NEXT: graph.aten "aten.nll_loss_backward.default"(%loss, %_log_softmax, %view_15_mine, none, 1, -100, %nll_loss_forward) tags {PP = 0} : (tensor<f32>, tensor<8x8xf32>, tensor<8xi64>, tensor<f32>) -> tensor<8x8xf32>
// LOSS: %_log_softmax_backward_data = graph.aten "aten.sub.Tensor"(%nll_loss_backward, %_log_softmax_backward_data_part)

// LOSS: dist.load "head.proj.weight" shard 0 of 2 on 0 : tensor<8x8xf32>
// LOSS: dist.all_reduce max %_log_softmax_max, %_log_softmax_max_1 group [0, 1] bytes 64 : (tensor<8x1xf32>, tensor<8x1xf32>) -> (tensor<8x1xf32>, tensor<8x1xf32>)
// LOSS: dist.all_reduce sum %_log_softmax_sumexp, %_log_softmax_sumexp_1 group [0, 1]
// LOSS: dist.all_reduce sum %loss_target, %loss_target_1 group [0, 1]
// LOSS: dist.all_reduce sum %_log_softmax_backward_data_sum, %_log_softmax_backward_data_sum_1 group [0, 1]
