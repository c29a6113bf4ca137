// dp=2 x tp=2 plan of test/dist/Inputs/mlp3_sgd.mlir (place{pp=1 stages=1},
// convert-graph-to-dist, replicate{n=2}, tensor_parallel{n=2 plan="blocks.1.fc:colwise,
// blocks.2.fc:rowwise"}, lower-dist-to-sched), broken by hand: on device 3 the tags of
// tp group [2, 3]'s forward (1) and backward (5) all_reduces are swapped.
builtin.module {
  func.func @F0(%blocks_0_fc_weight: tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "param"}, %blocks_0_fc_bias: tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "param"}, %blocks_1_fc_weight: tensor<4x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "param"}, %blocks_1_fc_bias: tensor<4xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "param"}, %blocks_2_fc_weight: tensor<4x4xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "param"}, %blocks_2_fc_bias: tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "param"}, %head_fc_weight: tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "param"}, %head_fc_bias: tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "param"}, %input0: tensor<2x4xf32> {graph.name = "input0", graph.kind = "input"}, %input1: tensor<2xi64> {graph.name = "input1", graph.kind = "input"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<2x2xf32> {graph.name = "_log_softmax", graph.kind = "saved"}, tensor<f32> {graph.name = "nll_loss_forward_1", graph.kind = "saved"}, tensor<4x2xf32> {graph.name = "t_3", graph.kind = "saved"}, tensor<2x4xf32> {graph.name = "relu_2", graph.kind = "saved"}, tensor<4x4xf32> {graph.name = "t_2", graph.kind = "saved"}, tensor<2x4xf32> {graph.name = "relu_1", graph.kind = "saved"}, tensor<4x4xf32> {graph.name = "t_1", graph.kind = "saved"}, tensor<2x4xf32> {graph.name = "relu", graph.kind = "saved"}) {
    %t = graph.aten "aten.t.default"(%blocks_0_fc_weight) tags {PP = 0} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %addmm = graph.aten "aten.addmm.default"(%blocks_0_fc_bias, %input0, %t) tags {PP = 0} : (tensor<4xf32>, tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
    %relu = graph.aten "aten.relu.default"(%addmm) tags {PP = 0} : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_1 = graph.aten "aten.t.default"(%blocks_1_fc_weight) tags {PP = 1} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %addmm_1 = graph.aten "aten.addmm.default"(%blocks_1_fc_bias, %relu, %t_1) tags {PP = 1} : (tensor<4xf32>, tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
    %relu_1 = graph.aten "aten.relu.default"(%addmm_1) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_2 = graph.aten "aten.t.default"(%blocks_2_fc_weight) tags {PP = 2} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %addmm_2 = graph.aten "aten.addmm.default"(%blocks_2_fc_bias, %relu_1, %t_2) tags {PP = 2} : (tensor<4xf32>, tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
    %relu_2 = graph.aten "aten.relu.default"(%addmm_2) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_3 = graph.aten "aten.t.default"(%head_fc_weight) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %addmm_3 = graph.aten "aten.addmm.default"(%head_fc_bias, %relu_2, %t_3) tags {PP = 2} : (tensor<2xf32>, tensor<2x4xf32>, tensor<4x2xf32>) -> tensor<2x2xf32>
    %_log_softmax = graph.aten "aten._log_softmax.default"(%addmm_3, 1, false) tags {PP = 2} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %0, %1 = graph.aten "aten.nll_loss_forward.default"(%_log_softmax, %input1, none, 1, -100) tags {PP = 2} : (tensor<2x2xf32>, tensor<2xi64>) -> (tensor<f32>, tensor<f32>)
    func.return %0, %_log_softmax, %1, %t_3, %relu_2, %t_2, %relu_1, %t_1, %relu : tensor<f32>, tensor<2x2xf32>, tensor<f32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<4x4xf32>, tensor<2x4xf32>, tensor<4x4xf32>, tensor<2x4xf32>
  }
  func.func @B0(%_log_softmax: tensor<2x2xf32> {graph.name = "_log_softmax", graph.kind = "saved", graph.from = "F0#1"}, %nll_loss_forward: tensor<f32> {graph.name = "nll_loss_forward_1", graph.kind = "saved", graph.from = "F0#2"}, %t: tensor<4x2xf32> {graph.name = "t_3", graph.kind = "saved", graph.from = "F0#3"}, %relu: tensor<2x4xf32> {graph.name = "relu_2", graph.kind = "saved", graph.from = "F0#4"}, %t_1: tensor<4x4xf32> {graph.name = "t_2", graph.kind = "saved", graph.from = "F0#5"}, %relu_1: tensor<2x4xf32> {graph.name = "relu_1", graph.kind = "saved", graph.from = "F0#6"}, %t_2: tensor<4x4xf32> {graph.name = "t_1", graph.kind = "saved", graph.from = "F0#7"}, %relu_2: tensor<2x4xf32> {graph.name = "relu", graph.kind = "saved", graph.from = "F0#8"}, %input0: tensor<2x4xf32> {graph.name = "input0", graph.kind = "input"}, %input1: tensor<2xi64> {graph.name = "input1", graph.kind = "input"}, %tangent: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}) -> (tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "grad"}, tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "grad"}, tensor<4x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "grad"}, tensor<4xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "grad"}, tensor<4x4xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "grad"}, tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "grad"}, tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "grad"}, tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "grad"}) {
    %nll_loss_backward = graph.aten "aten.nll_loss_backward.default"(%tangent, %_log_softmax, %input1, none, 1, -100, %nll_loss_forward) tags {PP = 2} : (tensor<f32>, tensor<2x2xf32>, tensor<2xi64>, tensor<f32>) -> tensor<2x2xf32>
    %_log_softmax_backward_data = graph.aten "aten._log_softmax_backward_data.default"(%nll_loss_backward, %_log_softmax, 1, f32) tags {PP = 2} : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
    %t_3 = graph.aten "aten.t.default"(%t) tags {PP = 2} : (tensor<4x2xf32>) -> tensor<2x4xf32>
    %mm = graph.aten "aten.mm.default"(%_log_softmax_backward_data, %t_3) tags {PP = 2} : (tensor<2x2xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_4 = graph.aten "aten.t.default"(%_log_softmax_backward_data) tags {PP = 2} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %mm_1 = graph.aten "aten.mm.default"(%t_4, %relu) tags {PP = 2} : (tensor<2x2xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_5 = graph.aten "aten.t.default"(%mm_1) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %sum = graph.aten "aten.sum.dim_IntList"(%_log_softmax_backward_data, [0], true) tags {PP = 2} : (tensor<2x2xf32>) -> tensor<1x2xf32>
    %view = graph.aten "aten.view.default"(%sum, [2]) tags {PP = 2} : (tensor<1x2xf32>) -> tensor<2xf32>
    %t_6 = graph.aten "aten.t.default"(%t_5) tags {PP = 2} : (tensor<4x2xf32>) -> tensor<2x4xf32>
    %threshold_backward = graph.aten "aten.threshold_backward.default"(%mm, %relu, 0) tags {PP = 2} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_7 = graph.aten "aten.t.default"(%t_1) tags {PP = 2} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %mm_2 = graph.aten "aten.mm.default"(%threshold_backward, %t_7) tags {PP = 2} : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
    %t_8 = graph.aten "aten.t.default"(%threshold_backward) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %mm_3 = graph.aten "aten.mm.default"(%t_8, %relu_1) tags {PP = 2} : (tensor<4x2xf32>, tensor<2x4xf32>) -> tensor<4x4xf32>
    %t_9 = graph.aten "aten.t.default"(%mm_3) tags {PP = 2} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %sum_1 = graph.aten "aten.sum.dim_IntList"(%threshold_backward, [0], true) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<1x4xf32>
    %view_1 = graph.aten "aten.view.default"(%sum_1, [4]) tags {PP = 2} : (tensor<1x4xf32>) -> tensor<4xf32>
    %t_10 = graph.aten "aten.t.default"(%t_9) tags {PP = 2} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %threshold_backward_1 = graph.aten "aten.threshold_backward.default"(%mm_2, %relu_1, 0) tags {PP = 1} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_11 = graph.aten "aten.t.default"(%t_2) tags {PP = 1} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %mm_4 = graph.aten "aten.mm.default"(%threshold_backward_1, %t_11) tags {PP = 1} : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
    %t_12 = graph.aten "aten.t.default"(%threshold_backward_1) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %mm_5 = graph.aten "aten.mm.default"(%t_12, %relu_2) tags {PP = 1} : (tensor<4x2xf32>, tensor<2x4xf32>) -> tensor<4x4xf32>
    %t_13 = graph.aten "aten.t.default"(%mm_5) tags {PP = 1} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %sum_2 = graph.aten "aten.sum.dim_IntList"(%threshold_backward_1, [0], true) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<1x4xf32>
    %view_2 = graph.aten "aten.view.default"(%sum_2, [4]) tags {PP = 1} : (tensor<1x4xf32>) -> tensor<4xf32>
    %t_14 = graph.aten "aten.t.default"(%t_13) tags {PP = 1} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %threshold_backward_2 = graph.aten "aten.threshold_backward.default"(%mm_4, %relu_2, 0) tags {PP = 0} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_15 = graph.aten "aten.t.default"(%threshold_backward_2) tags {PP = 0} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %mm_6 = graph.aten "aten.mm.default"(%t_15, %input0) tags {PP = 0} : (tensor<4x2xf32>, tensor<2x4xf32>) -> tensor<4x4xf32>
    %t_16 = graph.aten "aten.t.default"(%mm_6) tags {PP = 0} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %sum_3 = graph.aten "aten.sum.dim_IntList"(%threshold_backward_2, [0], true) tags {PP = 0} : (tensor<2x4xf32>) -> tensor<1x4xf32>
    %view_3 = graph.aten "aten.view.default"(%sum_3, [4]) tags {PP = 0} : (tensor<1x4xf32>) -> tensor<4xf32>
    %t_17 = graph.aten "aten.t.default"(%t_16) tags {PP = 0} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    func.return %t_17, %view_3, %t_14, %view_2, %t_10, %view_1, %t_6, %view : tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>
  }
  func.func @OPT0(%blocks_0_fc_weight: tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "param"}, %blocks_0_fc_bias: tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "param"}, %blocks_1_fc_weight: tensor<4x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "param"}, %blocks_1_fc_bias: tensor<4xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "param"}, %blocks_2_fc_weight: tensor<4x4xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "param"}, %blocks_2_fc_bias: tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "param"}, %head_fc_weight: tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "param"}, %head_fc_bias: tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "param"}, %blocks_0_fc_weight_grad: tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "grad", graph.from = "B0#0"}, %blocks_0_fc_bias_grad: tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "grad", graph.from = "B0#1"}, %blocks_1_fc_weight_grad: tensor<4x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "grad", graph.from = "B0#2"}, %blocks_1_fc_bias_grad: tensor<4xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "grad", graph.from = "B0#3"}, %blocks_2_fc_weight_grad: tensor<4x4xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "grad", graph.from = "B0#4"}, %blocks_2_fc_bias_grad: tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "grad", graph.from = "B0#5"}, %head_fc_weight_grad: tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "grad", graph.from = "B0#6"}, %head_fc_bias_grad: tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "grad", graph.from = "B0#7"}, %blocks_0_fc_weight_momentum_buffer: tensor<4x4xf32> {graph.name = "blocks.0.fc.weight:momentum_buffer", graph.kind = "state"}, %blocks_0_fc_bias_momentum_buffer: tensor<4xf32> {graph.name = "blocks.0.fc.bias:momentum_buffer", graph.kind = "state"}, %blocks_1_fc_weight_momentum_buffer: tensor<4x4xf32> {graph.name = "blocks.1.fc.weight:momentum_buffer", graph.kind = "state"}, %blocks_1_fc_bias_momentum_buffer: tensor<4xf32> {graph.name = "blocks.1.fc.bias:momentum_buffer", graph.kind = "state"}, %blocks_2_fc_weight_momentum_buffer: tensor<4x4xf32> {graph.name = "blocks.2.fc.weight:momentum_buffer", graph.kind = "state"}, %blocks_2_fc_bias_momentum_buffer: tensor<4xf32> {graph.name = "blocks.2.fc.bias:momentum_buffer", graph.kind = "state"}, %head_fc_weight_momentum_buffer: tensor<2x4xf32> {graph.name = "head.fc.weight:momentum_buffer", graph.kind = "state"}, %head_fc_bias_momentum_buffer: tensor<2xf32> {graph.name = "head.fc.bias:momentum_buffer", graph.kind = "state"}) -> (tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "param"}, tensor<4x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "param"}, tensor<4x4xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "param"}, tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "param"}, tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "param"}, tensor<4x4xf32> {graph.name = "blocks.0.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<4xf32> {graph.name = "blocks.0.fc.bias:momentum_buffer", graph.kind = "state"}, tensor<4x4xf32> {graph.name = "blocks.1.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<4xf32> {graph.name = "blocks.1.fc.bias:momentum_buffer", graph.kind = "state"}, tensor<4x4xf32> {graph.name = "blocks.2.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<4xf32> {graph.name = "blocks.2.fc.bias:momentum_buffer", graph.kind = "state"}, tensor<2x4xf32> {graph.name = "head.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<2xf32> {graph.name = "head.fc.bias:momentum_buffer", graph.kind = "state"}) {
    %mul = graph.aten "aten.mul.Tensor"(%blocks_0_fc_weight_momentum_buffer, 0.9) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %add = graph.aten "aten.add.Tensor"(%mul, %blocks_0_fc_weight_grad) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %mul_1 = graph.aten "aten.mul.Tensor"(%add, 0.01) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %sub = graph.aten "aten.sub.Tensor"(%blocks_0_fc_weight, %mul_1) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %mul_2 = graph.aten "aten.mul.Tensor"(%blocks_0_fc_bias_momentum_buffer, 0.9) : (tensor<4xf32>) -> tensor<4xf32>
    %add_1 = graph.aten "aten.add.Tensor"(%mul_2, %blocks_0_fc_bias_grad) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %mul_3 = graph.aten "aten.mul.Tensor"(%add_1, 0.01) : (tensor<4xf32>) -> tensor<4xf32>
    %sub_1 = graph.aten "aten.sub.Tensor"(%blocks_0_fc_bias, %mul_3) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %mul_4 = graph.aten "aten.mul.Tensor"(%blocks_1_fc_weight_momentum_buffer, 0.9) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %add_2 = graph.aten "aten.add.Tensor"(%mul_4, %blocks_1_fc_weight_grad) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %mul_5 = graph.aten "aten.mul.Tensor"(%add_2, 0.01) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %sub_2 = graph.aten "aten.sub.Tensor"(%blocks_1_fc_weight, %mul_5) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %mul_6 = graph.aten "aten.mul.Tensor"(%blocks_1_fc_bias_momentum_buffer, 0.9) : (tensor<4xf32>) -> tensor<4xf32>
    %add_3 = graph.aten "aten.add.Tensor"(%mul_6, %blocks_1_fc_bias_grad) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %mul_7 = graph.aten "aten.mul.Tensor"(%add_3, 0.01) : (tensor<4xf32>) -> tensor<4xf32>
    %sub_3 = graph.aten "aten.sub.Tensor"(%blocks_1_fc_bias, %mul_7) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %mul_8 = graph.aten "aten.mul.Tensor"(%blocks_2_fc_weight_momentum_buffer, 0.9) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %add_4 = graph.aten "aten.add.Tensor"(%mul_8, %blocks_2_fc_weight_grad) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %mul_9 = graph.aten "aten.mul.Tensor"(%add_4, 0.01) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %sub_4 = graph.aten "aten.sub.Tensor"(%blocks_2_fc_weight, %mul_9) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %mul_10 = graph.aten "aten.mul.Tensor"(%blocks_2_fc_bias_momentum_buffer, 0.9) : (tensor<4xf32>) -> tensor<4xf32>
    %add_5 = graph.aten "aten.add.Tensor"(%mul_10, %blocks_2_fc_bias_grad) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %mul_11 = graph.aten "aten.mul.Tensor"(%add_5, 0.01) : (tensor<4xf32>) -> tensor<4xf32>
    %sub_5 = graph.aten "aten.sub.Tensor"(%blocks_2_fc_bias, %mul_11) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %mul_12 = graph.aten "aten.mul.Tensor"(%head_fc_weight_momentum_buffer, 0.9) : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %add_6 = graph.aten "aten.add.Tensor"(%mul_12, %head_fc_weight_grad) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %mul_13 = graph.aten "aten.mul.Tensor"(%add_6, 0.01) : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %sub_6 = graph.aten "aten.sub.Tensor"(%head_fc_weight, %mul_13) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %mul_14 = graph.aten "aten.mul.Tensor"(%head_fc_bias_momentum_buffer, 0.9) : (tensor<2xf32>) -> tensor<2xf32>
    %add_7 = graph.aten "aten.add.Tensor"(%mul_14, %head_fc_bias_grad) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    %mul_15 = graph.aten "aten.mul.Tensor"(%add_7, 0.01) : (tensor<2xf32>) -> tensor<2xf32>
    %sub_7 = graph.aten "aten.sub.Tensor"(%head_fc_bias, %mul_15) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    func.return %sub, %sub_1, %sub_2, %sub_3, %sub_4, %sub_5, %sub_6, %sub_7, %add, %add_1, %add_2, %add_3, %add_4, %add_5, %add_6, %add_7 : tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>
  }
  func.func @train_step(%blocks_0_fc_weight: tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "param"}, %blocks_0_fc_bias: tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "param"}, %blocks_1_fc_weight: tensor<4x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "param"}, %blocks_1_fc_bias: tensor<4xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "param"}, %blocks_2_fc_weight: tensor<4x4xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "param"}, %blocks_2_fc_bias: tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "param"}, %head_fc_weight: tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "param"}, %head_fc_bias: tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "param"}, %blocks_0_fc_weight_momentum_buffer: tensor<4x4xf32> {graph.name = "blocks.0.fc.weight:momentum_buffer", graph.kind = "state"}, %blocks_0_fc_bias_momentum_buffer: tensor<4xf32> {graph.name = "blocks.0.fc.bias:momentum_buffer", graph.kind = "state"}, %blocks_1_fc_weight_momentum_buffer: tensor<4x4xf32> {graph.name = "blocks.1.fc.weight:momentum_buffer", graph.kind = "state"}, %blocks_1_fc_bias_momentum_buffer: tensor<4xf32> {graph.name = "blocks.1.fc.bias:momentum_buffer", graph.kind = "state"}, %blocks_2_fc_weight_momentum_buffer: tensor<4x4xf32> {graph.name = "blocks.2.fc.weight:momentum_buffer", graph.kind = "state"}, %blocks_2_fc_bias_momentum_buffer: tensor<4xf32> {graph.name = "blocks.2.fc.bias:momentum_buffer", graph.kind = "state"}, %head_fc_weight_momentum_buffer: tensor<2x4xf32> {graph.name = "head.fc.weight:momentum_buffer", graph.kind = "state"}, %head_fc_bias_momentum_buffer: tensor<2xf32> {graph.name = "head.fc.bias:momentum_buffer", graph.kind = "state"}, %input0: tensor<2x4xf32> {graph.name = "input0", graph.kind = "input"}, %input1: tensor<2xi64> {graph.name = "input1", graph.kind = "input"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "param"}, tensor<4x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "param"}, tensor<4x4xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "param"}, tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "param"}, tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "param"}, tensor<4x4xf32> {graph.name = "blocks.0.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<4xf32> {graph.name = "blocks.0.fc.bias:momentum_buffer", graph.kind = "state"}, tensor<4x4xf32> {graph.name = "blocks.1.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<4xf32> {graph.name = "blocks.1.fc.bias:momentum_buffer", graph.kind = "state"}, tensor<4x4xf32> {graph.name = "blocks.2.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<4xf32> {graph.name = "blocks.2.fc.bias:momentum_buffer", graph.kind = "state"}, tensor<2x4xf32> {graph.name = "head.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<2xf32> {graph.name = "head.fc.bias:momentum_buffer", graph.kind = "state"}) {
    %loss, %_log_softmax, %nll_loss_forward, %t, %relu, %t_1, %relu_1, %t_2, %relu_2 = func.call @F0(%blocks_0_fc_weight, %blocks_0_fc_bias, %blocks_1_fc_weight, %blocks_1_fc_bias, %blocks_2_fc_weight, %blocks_2_fc_bias, %head_fc_weight, %head_fc_bias, %input0, %input1) : (tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<2x4xf32>, tensor<2xi64>) -> (tensor<f32>, tensor<2x2xf32>, tensor<f32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<4x4xf32>, tensor<2x4xf32>, tensor<4x4xf32>, tensor<2x4xf32>)
    %0 = graph.aten "aten.ones_like.default"(%loss) : (tensor<f32>) -> tensor<f32>
    %blocks_0_fc_weight_grad, %blocks_0_fc_bias_grad, %blocks_1_fc_weight_grad, %blocks_1_fc_bias_grad, %blocks_2_fc_weight_grad, %blocks_2_fc_bias_grad, %head_fc_weight_grad, %head_fc_bias_grad = func.call @B0(%_log_softmax, %nll_loss_forward, %t, %relu, %t_1, %relu_1, %t_2, %relu_2, %input0, %input1, %0) : (tensor<2x2xf32>, tensor<f32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<4x4xf32>, tensor<2x4xf32>, tensor<4x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xi64>, tensor<f32>) -> (tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>)
    %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16 = func.call @OPT0(%blocks_0_fc_weight, %blocks_0_fc_bias, %blocks_1_fc_weight, %blocks_1_fc_bias, %blocks_2_fc_weight, %blocks_2_fc_bias, %head_fc_weight, %head_fc_bias, %blocks_0_fc_weight_grad, %blocks_0_fc_bias_grad, %blocks_1_fc_weight_grad, %blocks_1_fc_bias_grad, %blocks_2_fc_weight_grad, %blocks_2_fc_bias_grad, %head_fc_weight_grad, %head_fc_bias_grad, %blocks_0_fc_weight_momentum_buffer, %blocks_0_fc_bias_momentum_buffer, %blocks_1_fc_weight_momentum_buffer, %blocks_1_fc_bias_momentum_buffer, %blocks_2_fc_weight_momentum_buffer, %blocks_2_fc_bias_momentum_buffer, %head_fc_weight_momentum_buffer, %head_fc_bias_momentum_buffer) : (tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>) -> (tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>)
    func.return %loss, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16 : tensor<f32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>
  }
  func.func @F0_tp_p0(%blocks_0_fc_weight: tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "param"}, %blocks_0_fc_bias: tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "param"}, %input0: tensor<2x4xf32> {graph.name = "input0", graph.kind = "input"}, %blocks_1_fc_weight: tensor<2x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "param"}, %blocks_1_fc_bias: tensor<2xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "param"}, %blocks_2_fc_weight: tensor<4x2xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "param"}, %head_fc_weight: tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "param"}) -> (tensor<2x4xf32> {graph.name = "addmm", graph.kind = "partial"}, tensor<4x2xf32> {graph.name = "t_3", graph.kind = "saved"}, tensor<2x4xf32> {graph.name = "t_2", graph.kind = "saved"}, tensor<2x2xf32> {graph.name = "relu_1", graph.kind = "saved"}, tensor<4x2xf32> {graph.name = "t_1", graph.kind = "saved"}, tensor<2x4xf32> {graph.name = "relu", graph.kind = "saved"}) {
    %t = graph.aten "aten.t.default"(%blocks_0_fc_weight) tags {PP = 0} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %addmm = graph.aten "aten.addmm.default"(%blocks_0_fc_bias, %input0, %t) tags {PP = 0} : (tensor<4xf32>, tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32>
    %relu = graph.aten "aten.relu.default"(%addmm) tags {PP = 0} : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_1 = graph.aten "aten.t.default"(%blocks_1_fc_weight) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %addmm_1 = graph.aten "aten.addmm.default"(%blocks_1_fc_bias, %relu, %t_1) tags {PP = 1} : (tensor<2xf32>, tensor<2x4xf32>, tensor<4x2xf32>) -> tensor<2x2xf32>
    %relu_1 = graph.aten "aten.relu.default"(%addmm_1) tags {PP = 1} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %t_2 = graph.aten "aten.t.default"(%blocks_2_fc_weight) tags {PP = 2} : (tensor<4x2xf32>) -> tensor<2x4xf32>
    %addmm_2 = graph.aten "aten.mm.default"(%relu_1, %t_2) tags {PP = 2} : (tensor<2x2xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_3 = graph.aten "aten.t.default"(%head_fc_weight) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    func.return %addmm_2, %t_3, %t_2, %relu_1, %t_1, %relu : tensor<2x4xf32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<2x2xf32>, tensor<4x2xf32>, tensor<2x4xf32>
  }
  func.func @F0_tp_p1(%addmm_sum: tensor<2x4xf32> {graph.name = "addmm_sum", graph.kind = "reduced"}, %blocks_2_fc_bias: tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "param"}, %head_fc_bias: tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "param"}, %t: tensor<4x2xf32> {graph.name = "t", graph.kind = "act"}, %input1: tensor<2xi64> {graph.name = "input1", graph.kind = "input"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<2x2xf32> {graph.name = "_log_softmax", graph.kind = "saved"}, tensor<f32> {graph.name = "nll_loss_forward_1", graph.kind = "saved"}, tensor<2x4xf32> {graph.name = "relu_2", graph.kind = "saved"}) {
    %addmm = graph.aten "aten.add.Tensor"(%addmm_sum, %blocks_2_fc_bias) tags {PP = 2} : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
    %relu = graph.aten "aten.relu.default"(%addmm) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %addmm_1 = graph.aten "aten.addmm.default"(%head_fc_bias, %relu, %t) tags {PP = 2} : (tensor<2xf32>, tensor<2x4xf32>, tensor<4x2xf32>) -> tensor<2x2xf32>
    %_log_softmax = graph.aten "aten._log_softmax.default"(%addmm_1, 1, false) tags {PP = 2} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %0, %1 = graph.aten "aten.nll_loss_forward.default"(%_log_softmax, %input1, none, 1, -100) tags {PP = 2} : (tensor<2x2xf32>, tensor<2xi64>) -> (tensor<f32>, tensor<f32>)
    func.return %0, %_log_softmax, %1, %relu : tensor<f32>, tensor<2x2xf32>, tensor<f32>, tensor<2x4xf32>
  }
  func.func @B0_tp_p0(%loss: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}, %_log_softmax: tensor<2x2xf32> {graph.name = "_log_softmax", graph.kind = "saved"}, %input1: tensor<2xi64> {graph.name = "input1", graph.kind = "input"}, %nll_loss_forward: tensor<f32> {graph.name = "nll_loss_forward_1", graph.kind = "saved"}, %t: tensor<4x2xf32> {graph.name = "t_3", graph.kind = "saved"}, %relu: tensor<2x4xf32> {graph.name = "relu_2", graph.kind = "saved"}, %t_1: tensor<2x4xf32> {graph.name = "t_2", graph.kind = "saved"}, %relu_1: tensor<2x2xf32> {graph.name = "relu_1", graph.kind = "saved"}, %t_2: tensor<4x2xf32> {graph.name = "t_1", graph.kind = "saved"}, %relu_2: tensor<2x4xf32> {graph.name = "relu", graph.kind = "saved"}) -> (tensor<2x4xf32> {graph.name = "mm", graph.kind = "partial"}, tensor<2x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "grad"}, tensor<2xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "grad"}, tensor<4x2xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "grad"}, tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "grad"}, tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "grad"}, tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "grad"}) {
    %nll_loss_backward = graph.aten "aten.nll_loss_backward.default"(%loss, %_log_softmax, %input1, none, 1, -100, %nll_loss_forward) tags {PP = 2} : (tensor<f32>, tensor<2x2xf32>, tensor<2xi64>, tensor<f32>) -> tensor<2x2xf32>
    %_log_softmax_backward_data = graph.aten "aten._log_softmax_backward_data.default"(%nll_loss_backward, %_log_softmax, 1, f32) tags {PP = 2} : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
    %t_3 = graph.aten "aten.t.default"(%t) tags {PP = 2} : (tensor<4x2xf32>) -> tensor<2x4xf32>
    %mm = graph.aten "aten.mm.default"(%_log_softmax_backward_data, %t_3) tags {PP = 2} : (tensor<2x2xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_4 = graph.aten "aten.t.default"(%_log_softmax_backward_data) tags {PP = 2} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %mm_1 = graph.aten "aten.mm.default"(%t_4, %relu) tags {PP = 2} : (tensor<2x2xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_5 = graph.aten "aten.t.default"(%mm_1) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %sum = graph.aten "aten.sum.dim_IntList"(%_log_softmax_backward_data, [0], true) tags {PP = 2} : (tensor<2x2xf32>) -> tensor<1x2xf32>
    %view = graph.aten "aten.view.default"(%sum, [2]) tags {PP = 2} : (tensor<1x2xf32>) -> tensor<2xf32>
    %t_6 = graph.aten "aten.t.default"(%t_5) tags {PP = 2} : (tensor<4x2xf32>) -> tensor<2x4xf32>
    %threshold_backward = graph.aten "aten.threshold_backward.default"(%mm, %relu, 0) tags {PP = 2} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_7 = graph.aten "aten.t.default"(%t_1) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %mm_2 = graph.aten "aten.mm.default"(%threshold_backward, %t_7) tags {PP = 2} : (tensor<2x4xf32>, tensor<4x2xf32>) -> tensor<2x2xf32>
    %t_8 = graph.aten "aten.t.default"(%threshold_backward) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %mm_3 = graph.aten "aten.mm.default"(%t_8, %relu_1) tags {PP = 2} : (tensor<4x2xf32>, tensor<2x2xf32>) -> tensor<4x2xf32>
    %t_9 = graph.aten "aten.t.default"(%mm_3) tags {PP = 2} : (tensor<4x2xf32>) -> tensor<2x4xf32>
    %sum_1 = graph.aten "aten.sum.dim_IntList"(%threshold_backward, [0], true) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<1x4xf32>
    %view_1 = graph.aten "aten.view.default"(%sum_1, [4]) tags {PP = 2} : (tensor<1x4xf32>) -> tensor<4xf32>
    %t_10 = graph.aten "aten.t.default"(%t_9) tags {PP = 2} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %threshold_backward_1 = graph.aten "aten.threshold_backward.default"(%mm_2, %relu_1, 0) tags {PP = 1} : (tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<2x2xf32>
    %t_11 = graph.aten "aten.t.default"(%t_2) tags {PP = 1} : (tensor<4x2xf32>) -> tensor<2x4xf32>
    %mm_4 = graph.aten "aten.mm.default"(%threshold_backward_1, %t_11) tags {PP = 1} : (tensor<2x2xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_12 = graph.aten "aten.t.default"(%threshold_backward_1) tags {PP = 1} : (tensor<2x2xf32>) -> tensor<2x2xf32>
    %mm_5 = graph.aten "aten.mm.default"(%t_12, %relu_2) tags {PP = 1} : (tensor<2x2xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t_13 = graph.aten "aten.t.default"(%mm_5) tags {PP = 1} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %sum_2 = graph.aten "aten.sum.dim_IntList"(%threshold_backward_1, [0], true) tags {PP = 1} : (tensor<2x2xf32>) -> tensor<1x2xf32>
    %view_2 = graph.aten "aten.view.default"(%sum_2, [2]) tags {PP = 1} : (tensor<1x2xf32>) -> tensor<2xf32>
    %t_14 = graph.aten "aten.t.default"(%t_13) tags {PP = 1} : (tensor<4x2xf32>) -> tensor<2x4xf32>
    func.return %mm_4, %t_14, %view_2, %t_10, %view_1, %t_6, %view : tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>
  }
  func.func @B0_tp_p1(%mm_sum: tensor<2x4xf32> {graph.name = "mm_sum", graph.kind = "reduced"}, %relu: tensor<2x4xf32> {graph.name = "relu", graph.kind = "saved"}, %input0: tensor<2x4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "grad"}, tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "grad"}) {
    %threshold_backward = graph.aten "aten.threshold_backward.default"(%mm_sum, %relu, 0) tags {PP = 0} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %t = graph.aten "aten.t.default"(%threshold_backward) tags {PP = 0} : (tensor<2x4xf32>) -> tensor<4x2xf32>
    %mm = graph.aten "aten.mm.default"(%t, %input0) tags {PP = 0} : (tensor<4x2xf32>, tensor<2x4xf32>) -> tensor<4x4xf32>
    %t_1 = graph.aten "aten.t.default"(%mm) tags {PP = 0} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %sum = graph.aten "aten.sum.dim_IntList"(%threshold_backward, [0], true) tags {PP = 0} : (tensor<2x4xf32>) -> tensor<1x4xf32>
    %view = graph.aten "aten.view.default"(%sum, [4]) tags {PP = 0} : (tensor<1x4xf32>) -> tensor<4xf32>
    %t_2 = graph.aten "aten.t.default"(%t_1) tags {PP = 0} : (tensor<4x4xf32>) -> tensor<4x4xf32>
    func.return %t_2, %view : tensor<4x4xf32>, tensor<4xf32>
  }
  func.func @OPT0_tp(%blocks_0_fc_weight_momentum_buffer: tensor<4x4xf32> {graph.name = "blocks.0.fc.weight:momentum_buffer", graph.kind = "state"}, %blocks_0_fc_weight: tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "grad"}, %blocks_0_fc_weight_1: tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "param"}, %blocks_0_fc_bias_momentum_buffer: tensor<4xf32> {graph.name = "blocks.0.fc.bias:momentum_buffer", graph.kind = "state"}, %blocks_0_fc_bias: tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "grad"}, %blocks_0_fc_bias_1: tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "param"}, %blocks_1_fc_weight_momentum_buffer: tensor<2x4xf32> {graph.name = "blocks.1.fc.weight:momentum_buffer", graph.kind = "state"}, %blocks_1_fc_weight: tensor<2x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "grad"}, %blocks_1_fc_weight_1: tensor<2x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "param"}, %blocks_1_fc_bias_momentum_buffer: tensor<2xf32> {graph.name = "blocks.1.fc.bias:momentum_buffer", graph.kind = "state"}, %blocks_1_fc_bias: tensor<2xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "grad"}, %blocks_1_fc_bias_1: tensor<2xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "param"}, %blocks_2_fc_weight_momentum_buffer: tensor<4x2xf32> {graph.name = "blocks.2.fc.weight:momentum_buffer", graph.kind = "state"}, %blocks_2_fc_weight: tensor<4x2xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "grad"}, %blocks_2_fc_weight_1: tensor<4x2xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "param"}, %blocks_2_fc_bias_momentum_buffer: tensor<4xf32> {graph.name = "blocks.2.fc.bias:momentum_buffer", graph.kind = "state"}, %blocks_2_fc_bias: tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "grad"}, %blocks_2_fc_bias_1: tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "param"}, %head_fc_weight_momentum_buffer: tensor<2x4xf32> {graph.name = "head.fc.weight:momentum_buffer", graph.kind = "state"}, %head_fc_weight: tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "grad"}, %head_fc_weight_1: tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "param"}, %head_fc_bias_momentum_buffer: tensor<2xf32> {graph.name = "head.fc.bias:momentum_buffer", graph.kind = "state"}, %head_fc_bias: tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "grad"}, %head_fc_bias_1: tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "param"}) -> (tensor<4x4xf32> {graph.name = "blocks.0.fc.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "blocks.0.fc.bias", graph.kind = "param"}, tensor<2x4xf32> {graph.name = "blocks.1.fc.weight", graph.kind = "param"}, tensor<2xf32> {graph.name = "blocks.1.fc.bias", graph.kind = "param"}, tensor<4x2xf32> {graph.name = "blocks.2.fc.weight", graph.kind = "param"}, tensor<4xf32> {graph.name = "blocks.2.fc.bias", graph.kind = "param"}, tensor<2x4xf32> {graph.name = "head.fc.weight", graph.kind = "param"}, tensor<2xf32> {graph.name = "head.fc.bias", graph.kind = "param"}, tensor<4x4xf32> {graph.name = "blocks.0.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<4xf32> {graph.name = "blocks.0.fc.bias:momentum_buffer", graph.kind = "state"}, tensor<2x4xf32> {graph.name = "blocks.1.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<2xf32> {graph.name = "blocks.1.fc.bias:momentum_buffer", graph.kind = "state"}, tensor<4x2xf32> {graph.name = "blocks.2.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<4xf32> {graph.name = "blocks.2.fc.bias:momentum_buffer", graph.kind = "state"}, tensor<2x4xf32> {graph.name = "head.fc.weight:momentum_buffer", graph.kind = "state"}, tensor<2xf32> {graph.name = "head.fc.bias:momentum_buffer", graph.kind = "state"}) {
    %mul = graph.aten "aten.mul.Tensor"(%blocks_0_fc_weight_momentum_buffer, 0.9) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %add = graph.aten "aten.add.Tensor"(%mul, %blocks_0_fc_weight) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %mul_1 = graph.aten "aten.mul.Tensor"(%add, 0.01) : (tensor<4x4xf32>) -> tensor<4x4xf32>
    %sub = graph.aten "aten.sub.Tensor"(%blocks_0_fc_weight_1, %mul_1) : (tensor<4x4xf32>, tensor<4x4xf32>) -> tensor<4x4xf32>
    %mul_2 = graph.aten "aten.mul.Tensor"(%blocks_0_fc_bias_momentum_buffer, 0.9) : (tensor<4xf32>) -> tensor<4xf32>
    %add_1 = graph.aten "aten.add.Tensor"(%mul_2, %blocks_0_fc_bias) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %mul_3 = graph.aten "aten.mul.Tensor"(%add_1, 0.01) : (tensor<4xf32>) -> tensor<4xf32>
    %sub_1 = graph.aten "aten.sub.Tensor"(%blocks_0_fc_bias_1, %mul_3) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %mul_4 = graph.aten "aten.mul.Tensor"(%blocks_1_fc_weight_momentum_buffer, 0.9) : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %add_2 = graph.aten "aten.add.Tensor"(%mul_4, %blocks_1_fc_weight) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %mul_5 = graph.aten "aten.mul.Tensor"(%add_2, 0.01) : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %sub_2 = graph.aten "aten.sub.Tensor"(%blocks_1_fc_weight_1, %mul_5) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %mul_6 = graph.aten "aten.mul.Tensor"(%blocks_1_fc_bias_momentum_buffer, 0.9) : (tensor<2xf32>) -> tensor<2xf32>
    %add_3 = graph.aten "aten.add.Tensor"(%mul_6, %blocks_1_fc_bias) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    %mul_7 = graph.aten "aten.mul.Tensor"(%add_3, 0.01) : (tensor<2xf32>) -> tensor<2xf32>
    %sub_3 = graph.aten "aten.sub.Tensor"(%blocks_1_fc_bias_1, %mul_7) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    %mul_8 = graph.aten "aten.mul.Tensor"(%blocks_2_fc_weight_momentum_buffer, 0.9) : (tensor<4x2xf32>) -> tensor<4x2xf32>
    %add_4 = graph.aten "aten.add.Tensor"(%mul_8, %blocks_2_fc_weight) : (tensor<4x2xf32>, tensor<4x2xf32>) -> tensor<4x2xf32>
    %mul_9 = graph.aten "aten.mul.Tensor"(%add_4, 0.01) : (tensor<4x2xf32>) -> tensor<4x2xf32>
    %sub_4 = graph.aten "aten.sub.Tensor"(%blocks_2_fc_weight_1, %mul_9) : (tensor<4x2xf32>, tensor<4x2xf32>) -> tensor<4x2xf32>
    %mul_10 = graph.aten "aten.mul.Tensor"(%blocks_2_fc_bias_momentum_buffer, 0.9) : (tensor<4xf32>) -> tensor<4xf32>
    %add_5 = graph.aten "aten.add.Tensor"(%mul_10, %blocks_2_fc_bias) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %mul_11 = graph.aten "aten.mul.Tensor"(%add_5, 0.01) : (tensor<4xf32>) -> tensor<4xf32>
    %sub_5 = graph.aten "aten.sub.Tensor"(%blocks_2_fc_bias_1, %mul_11) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %mul_12 = graph.aten "aten.mul.Tensor"(%head_fc_weight_momentum_buffer, 0.9) : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %add_6 = graph.aten "aten.add.Tensor"(%mul_12, %head_fc_weight) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %mul_13 = graph.aten "aten.mul.Tensor"(%add_6, 0.01) : (tensor<2x4xf32>) -> tensor<2x4xf32>
    %sub_6 = graph.aten "aten.sub.Tensor"(%head_fc_weight_1, %mul_13) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
    %mul_14 = graph.aten "aten.mul.Tensor"(%head_fc_bias_momentum_buffer, 0.9) : (tensor<2xf32>) -> tensor<2xf32>
    %add_7 = graph.aten "aten.add.Tensor"(%mul_14, %head_fc_bias) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    %mul_15 = graph.aten "aten.mul.Tensor"(%add_7, 0.01) : (tensor<2xf32>) -> tensor<2xf32>
    %sub_7 = graph.aten "aten.sub.Tensor"(%head_fc_bias_1, %mul_15) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    func.return %sub, %sub_1, %sub_2, %sub_3, %sub_4, %sub_5, %sub_6, %sub_7, %add, %add_1, %add_2, %add_3, %add_4, %add_5, %add_6, %add_7 : tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>
  }
  sched.program @rank0 device 0 {
    %blocks_0_fc_weight = sched.load "blocks.0.fc.weight" : tensor<4x4xf32>
    %blocks_0_fc_bias = sched.load "blocks.0.fc.bias" : tensor<4xf32>
    %blocks_1_fc_weight = sched.load "blocks.1.fc.weight" shard 0 of 2 : tensor<2x4xf32>
    %blocks_1_fc_bias = sched.load "blocks.1.fc.bias" shard 0 of 2 : tensor<2xf32>
    %blocks_2_fc_weight = sched.load "blocks.2.fc.weight" shard 0 of 2 dim 1 : tensor<4x2xf32>
    %blocks_2_fc_bias = sched.load "blocks.2.fc.bias" : tensor<4xf32>
    %head_fc_weight = sched.load "head.fc.weight" : tensor<2x4xf32>
    %head_fc_bias = sched.load "head.fc.bias" : tensor<2xf32>
    %input0 = sched.input "input0" replica 0 mb 0 : tensor<2x4xf32>
    %input1 = sched.input "input1" replica 0 mb 0 : tensor<2xi64>
    %addmm, %t, %t_1, %relu, %t_2, %relu_1 = sched.call @F0_tp_p0(%blocks_0_fc_weight, %blocks_0_fc_bias, %input0, %blocks_1_fc_weight, %blocks_1_fc_bias, %blocks_2_fc_weight, %head_fc_weight) task "0F0" stream "compute" : (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<2x2xf32>, tensor<4x2xf32>, tensor<2x4xf32>)
    %0 = sched.collective all_reduce sum %addmm group [0, 1] tag 0 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %addmm_sum = sched.wait %0 : tensor<2x4xf32>
    sched.free %addmm : tensor<2x4xf32>
    %1, %_log_softmax, %2, %relu_2 = sched.call @F0_tp_p1(%addmm_sum, %blocks_2_fc_bias, %head_fc_bias, %t, %input1) task "0F0" stream "compute" : (tensor<2x4xf32>, tensor<4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<2xi64>) -> (tensor<f32>, tensor<2x2xf32>, tensor<f32>, tensor<2x4xf32>)
    sched.free %addmm_sum : tensor<2x4xf32>
    %loss_part = sched.sum %1 scale 0.5 : tensor<f32>
    sched.free %1 : tensor<f32>
    %3 = sched.collective all_reduce sum %loss_part group [0, 2] tag 2 stream "comm" : tensor<f32> -> tensor<f32>
    %tangent = sched.fill 0.5 : tensor<f32>
    %mm, %t_3, %view, %t_4, %view_1, %t_5, %view_2 = sched.call @B0_tp_p0(%tangent, %_log_softmax, %input1, %2, %t, %relu_2, %t_1, %relu, %t_2, %relu_1) task "0B0" stream "compute" : (tensor<f32>, tensor<2x2xf32>, tensor<2xi64>, tensor<f32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x2xf32>, tensor<4x2xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>)
    sched.free %tangent : tensor<f32>
    sched.free %relu_2 : tensor<2x4xf32>
    sched.free %2 : tensor<f32>
    sched.free %_log_softmax : tensor<2x2xf32>
    sched.free %t_2 : tensor<4x2xf32>
    sched.free %relu : tensor<2x2xf32>
    sched.free %t_1 : tensor<2x4xf32>
    sched.free %t : tensor<4x2xf32>
    sched.free %input1 : tensor<2xi64>
    %4 = sched.collective all_reduce sum %mm group [0, 1] tag 4 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %mm_sum = sched.wait %4 : tensor<2x4xf32>
    sched.free %mm : tensor<2x4xf32>
    %t_6, %view_3 = sched.call @B0_tp_p1(%mm_sum, %relu_1, %input0) task "0B0" stream "compute" : (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> (tensor<4x4xf32>, tensor<4xf32>)
    sched.free %mm_sum : tensor<2x4xf32>
    sched.free %relu_1 : tensor<2x4xf32>
    sched.free %input0 : tensor<2x4xf32>
    %5 = sched.collective all_reduce sum %t_6 group [0, 2] tag 6 stream "comm" : tensor<4x4xf32> -> tensor<4x4xf32>
    %6 = sched.collective all_reduce sum %view_3 group [0, 2] tag 8 stream "comm" : tensor<4xf32> -> tensor<4xf32>
    %7 = sched.collective all_reduce sum %t_3 group [0, 2] tag 10 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %8 = sched.collective all_reduce sum %view group [0, 2] tag 12 stream "comm" : tensor<2xf32> -> tensor<2xf32>
    %9 = sched.collective all_reduce sum %t_4 group [0, 2] tag 14 stream "comm" : tensor<4x2xf32> -> tensor<4x2xf32>
    %10 = sched.collective all_reduce sum %view_1 group [0, 2] tag 16 stream "comm" : tensor<4xf32> -> tensor<4xf32>
    %11 = sched.collective all_reduce sum %t_5 group [0, 2] tag 18 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %12 = sched.collective all_reduce sum %view_2 group [0, 2] tag 20 stream "comm" : tensor<2xf32> -> tensor<2xf32>
    %blocks_0_fc_weight_momentum_buffer = sched.load "blocks.0.fc.weight:momentum_buffer" : tensor<4x4xf32>
    %blocks_0_fc_bias_momentum_buffer = sched.load "blocks.0.fc.bias:momentum_buffer" : tensor<4xf32>
    %blocks_1_fc_weight_momentum_buffer = sched.load "blocks.1.fc.weight:momentum_buffer" shard 0 of 2 : tensor<2x4xf32>
    %blocks_1_fc_bias_momentum_buffer = sched.load "blocks.1.fc.bias:momentum_buffer" shard 0 of 2 : tensor<2xf32>
    %blocks_2_fc_weight_momentum_buffer = sched.load "blocks.2.fc.weight:momentum_buffer" shard 0 of 2 dim 1 : tensor<4x2xf32>
    %blocks_2_fc_bias_momentum_buffer = sched.load "blocks.2.fc.bias:momentum_buffer" : tensor<4xf32>
    %head_fc_weight_momentum_buffer = sched.load "head.fc.weight:momentum_buffer" : tensor<2x4xf32>
    %head_fc_bias_momentum_buffer = sched.load "head.fc.bias:momentum_buffer" : tensor<2xf32>
    %blocks_0_fc_weight_B0_ar = sched.wait %5 : tensor<4x4xf32>
    sched.free %t_6 : tensor<4x4xf32>
    %blocks_0_fc_bias_B0_ar = sched.wait %6 : tensor<4xf32>
    sched.free %view_3 : tensor<4xf32>
    %blocks_1_fc_weight_B0_ar = sched.wait %7 : tensor<2x4xf32>
    sched.free %t_3 : tensor<2x4xf32>
    %blocks_1_fc_bias_B0_ar = sched.wait %8 : tensor<2xf32>
    sched.free %view : tensor<2xf32>
    %blocks_2_fc_weight_B0_ar = sched.wait %9 : tensor<4x2xf32>
    sched.free %t_4 : tensor<4x2xf32>
    %blocks_2_fc_bias_B0_ar = sched.wait %10 : tensor<4xf32>
    sched.free %view_1 : tensor<4xf32>
    %head_fc_weight_B0_ar = sched.wait %11 : tensor<2x4xf32>
    sched.free %t_5 : tensor<2x4xf32>
    %head_fc_bias_B0_ar = sched.wait %12 : tensor<2xf32>
    sched.free %view_2 : tensor<2xf32>
    %sub, %sub_1, %sub_2, %sub_3, %sub_4, %sub_5, %sub_6, %sub_7, %add, %add_1, %add_2, %add_3, %add_4, %add_5, %add_6, %add_7 = sched.call @OPT0_tp(%blocks_0_fc_weight_momentum_buffer, %blocks_0_fc_weight_B0_ar, %blocks_0_fc_weight, %blocks_0_fc_bias_momentum_buffer, %blocks_0_fc_bias_B0_ar, %blocks_0_fc_bias, %blocks_1_fc_weight_momentum_buffer, %blocks_1_fc_weight_B0_ar, %blocks_1_fc_weight, %blocks_1_fc_bias_momentum_buffer, %blocks_1_fc_bias_B0_ar, %blocks_1_fc_bias, %blocks_2_fc_weight_momentum_buffer, %blocks_2_fc_weight_B0_ar, %blocks_2_fc_weight, %blocks_2_fc_bias_momentum_buffer, %blocks_2_fc_bias_B0_ar, %blocks_2_fc_bias, %head_fc_weight_momentum_buffer, %head_fc_weight_B0_ar, %head_fc_weight, %head_fc_bias_momentum_buffer, %head_fc_bias_B0_ar, %head_fc_bias) task "0OPT0" stream "compute" : (tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>)
    sched.free %head_fc_bias_B0_ar : tensor<2xf32>
    sched.free %head_fc_weight_B0_ar : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_B0_ar : tensor<4xf32>
    sched.free %blocks_2_fc_weight_B0_ar : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_B0_ar : tensor<2xf32>
    sched.free %blocks_1_fc_weight_B0_ar : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_B0_ar : tensor<4xf32>
    sched.free %blocks_0_fc_weight_B0_ar : tensor<4x4xf32>
    sched.free %head_fc_bias_momentum_buffer : tensor<2xf32>
    sched.free %head_fc_weight_momentum_buffer : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_momentum_buffer : tensor<4xf32>
    sched.free %blocks_2_fc_weight_momentum_buffer : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_momentum_buffer : tensor<2xf32>
    sched.free %blocks_1_fc_weight_momentum_buffer : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_momentum_buffer : tensor<4xf32>
    sched.free %blocks_0_fc_weight_momentum_buffer : tensor<4x4xf32>
    sched.free %head_fc_bias : tensor<2xf32>
    sched.free %head_fc_weight : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias : tensor<4xf32>
    sched.free %blocks_2_fc_weight : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias : tensor<2xf32>
    sched.free %blocks_1_fc_weight : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias : tensor<4xf32>
    sched.free %blocks_0_fc_weight : tensor<4x4xf32>
    sched.store "blocks.0.fc.weight" %sub : tensor<4x4xf32>
    sched.free %sub : tensor<4x4xf32>
    sched.store "blocks.0.fc.bias" %sub_1 : tensor<4xf32>
    sched.free %sub_1 : tensor<4xf32>
    sched.store "blocks.1.fc.weight" shard 0 of 2 %sub_2 : tensor<2x4xf32>
    sched.free %sub_2 : tensor<2x4xf32>
    sched.store "blocks.1.fc.bias" shard 0 of 2 %sub_3 : tensor<2xf32>
    sched.free %sub_3 : tensor<2xf32>
    sched.store "blocks.2.fc.weight" shard 0 of 2 dim 1 %sub_4 : tensor<4x2xf32>
    sched.free %sub_4 : tensor<4x2xf32>
    sched.store "blocks.2.fc.bias" %sub_5 : tensor<4xf32>
    sched.free %sub_5 : tensor<4xf32>
    sched.store "head.fc.weight" %sub_6 : tensor<2x4xf32>
    sched.free %sub_6 : tensor<2x4xf32>
    sched.store "head.fc.bias" %sub_7 : tensor<2xf32>
    sched.free %sub_7 : tensor<2xf32>
    sched.store "blocks.0.fc.weight:momentum_buffer" %add : tensor<4x4xf32>
    sched.free %add : tensor<4x4xf32>
    sched.store "blocks.0.fc.bias:momentum_buffer" %add_1 : tensor<4xf32>
    sched.free %add_1 : tensor<4xf32>
    sched.store "blocks.1.fc.weight:momentum_buffer" shard 0 of 2 %add_2 : tensor<2x4xf32>
    sched.free %add_2 : tensor<2x4xf32>
    sched.store "blocks.1.fc.bias:momentum_buffer" shard 0 of 2 %add_3 : tensor<2xf32>
    sched.free %add_3 : tensor<2xf32>
    sched.store "blocks.2.fc.weight:momentum_buffer" shard 0 of 2 dim 1 %add_4 : tensor<4x2xf32>
    sched.free %add_4 : tensor<4x2xf32>
    sched.store "blocks.2.fc.bias:momentum_buffer" %add_5 : tensor<4xf32>
    sched.free %add_5 : tensor<4xf32>
    sched.store "head.fc.weight:momentum_buffer" %add_6 : tensor<2x4xf32>
    sched.free %add_6 : tensor<2x4xf32>
    sched.store "head.fc.bias:momentum_buffer" %add_7 : tensor<2xf32>
    sched.free %add_7 : tensor<2xf32>
    %13 = sched.wait %3 : tensor<f32>
    sched.free %loss_part : tensor<f32>
    sched.store loss "loss" %13 : tensor<f32>
    sched.free %13 : tensor<f32>
  }
  sched.program @rank1 device 1 {
    %blocks_0_fc_weight_1 = sched.load "blocks.0.fc.weight" : tensor<4x4xf32>
    %blocks_0_fc_bias_1 = sched.load "blocks.0.fc.bias" : tensor<4xf32>
    %blocks_1_fc_weight_1 = sched.load "blocks.1.fc.weight" shard 1 of 2 : tensor<2x4xf32>
    %blocks_1_fc_bias_1 = sched.load "blocks.1.fc.bias" shard 1 of 2 : tensor<2xf32>
    %blocks_2_fc_weight_1 = sched.load "blocks.2.fc.weight" shard 1 of 2 dim 1 : tensor<4x2xf32>
    %blocks_2_fc_bias_1 = sched.load "blocks.2.fc.bias" : tensor<4xf32>
    %head_fc_weight_1 = sched.load "head.fc.weight" : tensor<2x4xf32>
    %head_fc_bias_1 = sched.load "head.fc.bias" : tensor<2xf32>
    %input0_1 = sched.input "input0" replica 0 mb 0 : tensor<2x4xf32>
    %input1_1 = sched.input "input1" replica 0 mb 0 : tensor<2xi64>
    %addmm_1, %t_7, %t_8, %relu_3, %t_9, %relu_4 = sched.call @F0_tp_p0(%blocks_0_fc_weight_1, %blocks_0_fc_bias_1, %input0_1, %blocks_1_fc_weight_1, %blocks_1_fc_bias_1, %blocks_2_fc_weight_1, %head_fc_weight_1) task "0F0" stream "compute" : (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<2x2xf32>, tensor<4x2xf32>, tensor<2x4xf32>)
    %14 = sched.collective all_reduce sum %addmm_1 group [0, 1] tag 0 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %addmm_sum_1 = sched.wait %14 : tensor<2x4xf32>
    sched.free %addmm_1 : tensor<2x4xf32>
    %15, %_log_softmax_1, %16, %relu_5 = sched.call @F0_tp_p1(%addmm_sum_1, %blocks_2_fc_bias_1, %head_fc_bias_1, %t_7, %input1_1) task "0F0" stream "compute" : (tensor<2x4xf32>, tensor<4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<2xi64>) -> (tensor<f32>, tensor<2x2xf32>, tensor<f32>, tensor<2x4xf32>)
    sched.free %addmm_sum_1 : tensor<2x4xf32>
    %loss_part_1 = sched.sum %15 scale 0.5 : tensor<f32>
    sched.free %15 : tensor<f32>
    %17 = sched.collective all_reduce sum %loss_part_1 group [1, 3] tag 3 stream "comm" : tensor<f32> -> tensor<f32>
    %tangent_1 = sched.fill 0.5 : tensor<f32>
    %mm_1, %t_10, %view_4, %t_11, %view_5, %t_12, %view_6 = sched.call @B0_tp_p0(%tangent_1, %_log_softmax_1, %input1_1, %16, %t_7, %relu_5, %t_8, %relu_3, %t_9, %relu_4) task "0B0" stream "compute" : (tensor<f32>, tensor<2x2xf32>, tensor<2xi64>, tensor<f32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x2xf32>, tensor<4x2xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>)
    sched.free %tangent_1 : tensor<f32>
    sched.free %relu_5 : tensor<2x4xf32>
    sched.free %16 : tensor<f32>
    sched.free %_log_softmax_1 : tensor<2x2xf32>
    sched.free %t_9 : tensor<4x2xf32>
    sched.free %relu_3 : tensor<2x2xf32>
    sched.free %t_8 : tensor<2x4xf32>
    sched.free %t_7 : tensor<4x2xf32>
    sched.free %input1_1 : tensor<2xi64>
    %18 = sched.collective all_reduce sum %mm_1 group [0, 1] tag 4 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %mm_sum_1 = sched.wait %18 : tensor<2x4xf32>
    sched.free %mm_1 : tensor<2x4xf32>
    %t_13, %view_7 = sched.call @B0_tp_p1(%mm_sum_1, %relu_4, %input0_1) task "0B0" stream "compute" : (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> (tensor<4x4xf32>, tensor<4xf32>)
    sched.free %mm_sum_1 : tensor<2x4xf32>
    sched.free %relu_4 : tensor<2x4xf32>
    sched.free %input0_1 : tensor<2x4xf32>
    %19 = sched.collective all_reduce sum %t_13 group [1, 3] tag 7 stream "comm" : tensor<4x4xf32> -> tensor<4x4xf32>
    %20 = sched.collective all_reduce sum %view_7 group [1, 3] tag 9 stream "comm" : tensor<4xf32> -> tensor<4xf32>
    %21 = sched.collective all_reduce sum %t_10 group [1, 3] tag 11 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %22 = sched.collective all_reduce sum %view_4 group [1, 3] tag 13 stream "comm" : tensor<2xf32> -> tensor<2xf32>
    %23 = sched.collective all_reduce sum %t_11 group [1, 3] tag 15 stream "comm" : tensor<4x2xf32> -> tensor<4x2xf32>
    %24 = sched.collective all_reduce sum %view_5 group [1, 3] tag 17 stream "comm" : tensor<4xf32> -> tensor<4xf32>
    %25 = sched.collective all_reduce sum %t_12 group [1, 3] tag 19 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %26 = sched.collective all_reduce sum %view_6 group [1, 3] tag 21 stream "comm" : tensor<2xf32> -> tensor<2xf32>
    %blocks_0_fc_weight_momentum_buffer_1 = sched.load "blocks.0.fc.weight:momentum_buffer" : tensor<4x4xf32>
    %blocks_0_fc_bias_momentum_buffer_1 = sched.load "blocks.0.fc.bias:momentum_buffer" : tensor<4xf32>
    %blocks_1_fc_weight_momentum_buffer_1 = sched.load "blocks.1.fc.weight:momentum_buffer" shard 1 of 2 : tensor<2x4xf32>
    %blocks_1_fc_bias_momentum_buffer_1 = sched.load "blocks.1.fc.bias:momentum_buffer" shard 1 of 2 : tensor<2xf32>
    %blocks_2_fc_weight_momentum_buffer_1 = sched.load "blocks.2.fc.weight:momentum_buffer" shard 1 of 2 dim 1 : tensor<4x2xf32>
    %blocks_2_fc_bias_momentum_buffer_1 = sched.load "blocks.2.fc.bias:momentum_buffer" : tensor<4xf32>
    %head_fc_weight_momentum_buffer_1 = sched.load "head.fc.weight:momentum_buffer" : tensor<2x4xf32>
    %head_fc_bias_momentum_buffer_1 = sched.load "head.fc.bias:momentum_buffer" : tensor<2xf32>
    %blocks_0_fc_weight_B0_ar_1 = sched.wait %19 : tensor<4x4xf32>
    sched.free %t_13 : tensor<4x4xf32>
    %blocks_0_fc_bias_B0_ar_1 = sched.wait %20 : tensor<4xf32>
    sched.free %view_7 : tensor<4xf32>
    %blocks_1_fc_weight_B0_ar_1 = sched.wait %21 : tensor<2x4xf32>
    sched.free %t_10 : tensor<2x4xf32>
    %blocks_1_fc_bias_B0_ar_1 = sched.wait %22 : tensor<2xf32>
    sched.free %view_4 : tensor<2xf32>
    %blocks_2_fc_weight_B0_ar_1 = sched.wait %23 : tensor<4x2xf32>
    sched.free %t_11 : tensor<4x2xf32>
    %blocks_2_fc_bias_B0_ar_1 = sched.wait %24 : tensor<4xf32>
    sched.free %view_5 : tensor<4xf32>
    %head_fc_weight_B0_ar_1 = sched.wait %25 : tensor<2x4xf32>
    sched.free %t_12 : tensor<2x4xf32>
    %head_fc_bias_B0_ar_1 = sched.wait %26 : tensor<2xf32>
    sched.free %view_6 : tensor<2xf32>
    %sub_8, %sub_9, %sub_10, %sub_11, %sub_12, %sub_13, %sub_14, %sub_15, %add_8, %add_9, %add_10, %add_11, %add_12, %add_13, %add_14, %add_15 = sched.call @OPT0_tp(%blocks_0_fc_weight_momentum_buffer_1, %blocks_0_fc_weight_B0_ar_1, %blocks_0_fc_weight_1, %blocks_0_fc_bias_momentum_buffer_1, %blocks_0_fc_bias_B0_ar_1, %blocks_0_fc_bias_1, %blocks_1_fc_weight_momentum_buffer_1, %blocks_1_fc_weight_B0_ar_1, %blocks_1_fc_weight_1, %blocks_1_fc_bias_momentum_buffer_1, %blocks_1_fc_bias_B0_ar_1, %blocks_1_fc_bias_1, %blocks_2_fc_weight_momentum_buffer_1, %blocks_2_fc_weight_B0_ar_1, %blocks_2_fc_weight_1, %blocks_2_fc_bias_momentum_buffer_1, %blocks_2_fc_bias_B0_ar_1, %blocks_2_fc_bias_1, %head_fc_weight_momentum_buffer_1, %head_fc_weight_B0_ar_1, %head_fc_weight_1, %head_fc_bias_momentum_buffer_1, %head_fc_bias_B0_ar_1, %head_fc_bias_1) task "0OPT0" stream "compute" : (tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>)
    sched.free %head_fc_bias_B0_ar_1 : tensor<2xf32>
    sched.free %head_fc_weight_B0_ar_1 : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_B0_ar_1 : tensor<4xf32>
    sched.free %blocks_2_fc_weight_B0_ar_1 : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_B0_ar_1 : tensor<2xf32>
    sched.free %blocks_1_fc_weight_B0_ar_1 : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_B0_ar_1 : tensor<4xf32>
    sched.free %blocks_0_fc_weight_B0_ar_1 : tensor<4x4xf32>
    sched.free %head_fc_bias_momentum_buffer_1 : tensor<2xf32>
    sched.free %head_fc_weight_momentum_buffer_1 : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_momentum_buffer_1 : tensor<4xf32>
    sched.free %blocks_2_fc_weight_momentum_buffer_1 : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_momentum_buffer_1 : tensor<2xf32>
    sched.free %blocks_1_fc_weight_momentum_buffer_1 : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_momentum_buffer_1 : tensor<4xf32>
    sched.free %blocks_0_fc_weight_momentum_buffer_1 : tensor<4x4xf32>
    sched.free %head_fc_bias_1 : tensor<2xf32>
    sched.free %head_fc_weight_1 : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_1 : tensor<4xf32>
    sched.free %blocks_2_fc_weight_1 : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_1 : tensor<2xf32>
    sched.free %blocks_1_fc_weight_1 : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_1 : tensor<4xf32>
    sched.free %blocks_0_fc_weight_1 : tensor<4x4xf32>
    sched.store "blocks.0.fc.weight" %sub_8 : tensor<4x4xf32>
    sched.free %sub_8 : tensor<4x4xf32>
    sched.store "blocks.0.fc.bias" %sub_9 : tensor<4xf32>
    sched.free %sub_9 : tensor<4xf32>
    sched.store "blocks.1.fc.weight" shard 1 of 2 %sub_10 : tensor<2x4xf32>
    sched.free %sub_10 : tensor<2x4xf32>
    sched.store "blocks.1.fc.bias" shard 1 of 2 %sub_11 : tensor<2xf32>
    sched.free %sub_11 : tensor<2xf32>
    sched.store "blocks.2.fc.weight" shard 1 of 2 dim 1 %sub_12 : tensor<4x2xf32>
    sched.free %sub_12 : tensor<4x2xf32>
    sched.store "blocks.2.fc.bias" %sub_13 : tensor<4xf32>
    sched.free %sub_13 : tensor<4xf32>
    sched.store "head.fc.weight" %sub_14 : tensor<2x4xf32>
    sched.free %sub_14 : tensor<2x4xf32>
    sched.store "head.fc.bias" %sub_15 : tensor<2xf32>
    sched.free %sub_15 : tensor<2xf32>
    sched.store "blocks.0.fc.weight:momentum_buffer" %add_8 : tensor<4x4xf32>
    sched.free %add_8 : tensor<4x4xf32>
    sched.store "blocks.0.fc.bias:momentum_buffer" %add_9 : tensor<4xf32>
    sched.free %add_9 : tensor<4xf32>
    sched.store "blocks.1.fc.weight:momentum_buffer" shard 1 of 2 %add_10 : tensor<2x4xf32>
    sched.free %add_10 : tensor<2x4xf32>
    sched.store "blocks.1.fc.bias:momentum_buffer" shard 1 of 2 %add_11 : tensor<2xf32>
    sched.free %add_11 : tensor<2xf32>
    sched.store "blocks.2.fc.weight:momentum_buffer" shard 1 of 2 dim 1 %add_12 : tensor<4x2xf32>
    sched.free %add_12 : tensor<4x2xf32>
    sched.store "blocks.2.fc.bias:momentum_buffer" %add_13 : tensor<4xf32>
    sched.free %add_13 : tensor<4xf32>
    sched.store "head.fc.weight:momentum_buffer" %add_14 : tensor<2x4xf32>
    sched.free %add_14 : tensor<2x4xf32>
    sched.store "head.fc.bias:momentum_buffer" %add_15 : tensor<2xf32>
    sched.free %add_15 : tensor<2xf32>
    %27 = sched.wait %17 : tensor<f32>
    sched.free %loss_part_1 : tensor<f32>
    sched.store loss "loss" %27 : tensor<f32>
    sched.free %27 : tensor<f32>
  }
  sched.program @rank2 device 2 {
    %blocks_0_fc_weight_2 = sched.load "blocks.0.fc.weight" : tensor<4x4xf32>
    %blocks_0_fc_bias_2 = sched.load "blocks.0.fc.bias" : tensor<4xf32>
    %blocks_1_fc_weight_2 = sched.load "blocks.1.fc.weight" shard 0 of 2 : tensor<2x4xf32>
    %blocks_1_fc_bias_2 = sched.load "blocks.1.fc.bias" shard 0 of 2 : tensor<2xf32>
    %blocks_2_fc_weight_2 = sched.load "blocks.2.fc.weight" shard 0 of 2 dim 1 : tensor<4x2xf32>
    %blocks_2_fc_bias_2 = sched.load "blocks.2.fc.bias" : tensor<4xf32>
    %head_fc_weight_2 = sched.load "head.fc.weight" : tensor<2x4xf32>
    %head_fc_bias_2 = sched.load "head.fc.bias" : tensor<2xf32>
    %input0_2 = sched.input "input0" replica 1 mb 0 : tensor<2x4xf32>
    %input1_2 = sched.input "input1" replica 1 mb 0 : tensor<2xi64>
    %addmm_2, %t_14, %t_15, %relu_6, %t_16, %relu_7 = sched.call @F0_tp_p0(%blocks_0_fc_weight_2, %blocks_0_fc_bias_2, %input0_2, %blocks_1_fc_weight_2, %blocks_1_fc_bias_2, %blocks_2_fc_weight_2, %head_fc_weight_2) task "0F0" stream "compute" : (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<2x2xf32>, tensor<4x2xf32>, tensor<2x4xf32>)
    %28 = sched.collective all_reduce sum %addmm_2 group [2, 3] tag 1 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %addmm_sum_2 = sched.wait %28 : tensor<2x4xf32>
    sched.free %addmm_2 : tensor<2x4xf32>
    %29, %_log_softmax_2, %30, %relu_8 = sched.call @F0_tp_p1(%addmm_sum_2, %blocks_2_fc_bias_2, %head_fc_bias_2, %t_14, %input1_2) task "0F0" stream "compute" : (tensor<2x4xf32>, tensor<4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<2xi64>) -> (tensor<f32>, tensor<2x2xf32>, tensor<f32>, tensor<2x4xf32>)
    sched.free %addmm_sum_2 : tensor<2x4xf32>
    %loss_part_2 = sched.sum %29 scale 0.5 : tensor<f32>
    sched.free %29 : tensor<f32>
    %31 = sched.collective all_reduce sum %loss_part_2 group [0, 2] tag 2 stream "comm" : tensor<f32> -> tensor<f32>
    %tangent_2 = sched.fill 0.5 : tensor<f32>
    %mm_2, %t_17, %view_8, %t_18, %view_9, %t_19, %view_10 = sched.call @B0_tp_p0(%tangent_2, %_log_softmax_2, %input1_2, %30, %t_14, %relu_8, %t_15, %relu_6, %t_16, %relu_7) task "0B0" stream "compute" : (tensor<f32>, tensor<2x2xf32>, tensor<2xi64>, tensor<f32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x2xf32>, tensor<4x2xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>)
    sched.free %tangent_2 : tensor<f32>
    sched.free %relu_8 : tensor<2x4xf32>
    sched.free %30 : tensor<f32>
    sched.free %_log_softmax_2 : tensor<2x2xf32>
    sched.free %t_16 : tensor<4x2xf32>
    sched.free %relu_6 : tensor<2x2xf32>
    sched.free %t_15 : tensor<2x4xf32>
    sched.free %t_14 : tensor<4x2xf32>
    sched.free %input1_2 : tensor<2xi64>
    %32 = sched.collective all_reduce sum %mm_2 group [2, 3] tag 5 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %mm_sum_2 = sched.wait %32 : tensor<2x4xf32>
    sched.free %mm_2 : tensor<2x4xf32>
    %t_20, %view_11 = sched.call @B0_tp_p1(%mm_sum_2, %relu_7, %input0_2) task "0B0" stream "compute" : (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> (tensor<4x4xf32>, tensor<4xf32>)
    sched.free %mm_sum_2 : tensor<2x4xf32>
    sched.free %relu_7 : tensor<2x4xf32>
    sched.free %input0_2 : tensor<2x4xf32>
    %33 = sched.collective all_reduce sum %t_20 group [0, 2] tag 6 stream "comm" : tensor<4x4xf32> -> tensor<4x4xf32>
    %34 = sched.collective all_reduce sum %view_11 group [0, 2] tag 8 stream "comm" : tensor<4xf32> -> tensor<4xf32>
    %35 = sched.collective all_reduce sum %t_17 group [0, 2] tag 10 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %36 = sched.collective all_reduce sum %view_8 group [0, 2] tag 12 stream "comm" : tensor<2xf32> -> tensor<2xf32>
    %37 = sched.collective all_reduce sum %t_18 group [0, 2] tag 14 stream "comm" : tensor<4x2xf32> -> tensor<4x2xf32>
    %38 = sched.collective all_reduce sum %view_9 group [0, 2] tag 16 stream "comm" : tensor<4xf32> -> tensor<4xf32>
    %39 = sched.collective all_reduce sum %t_19 group [0, 2] tag 18 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %40 = sched.collective all_reduce sum %view_10 group [0, 2] tag 20 stream "comm" : tensor<2xf32> -> tensor<2xf32>
    %blocks_0_fc_weight_momentum_buffer_2 = sched.load "blocks.0.fc.weight:momentum_buffer" : tensor<4x4xf32>
    %blocks_0_fc_bias_momentum_buffer_2 = sched.load "blocks.0.fc.bias:momentum_buffer" : tensor<4xf32>
    %blocks_1_fc_weight_momentum_buffer_2 = sched.load "blocks.1.fc.weight:momentum_buffer" shard 0 of 2 : tensor<2x4xf32>
    %blocks_1_fc_bias_momentum_buffer_2 = sched.load "blocks.1.fc.bias:momentum_buffer" shard 0 of 2 : tensor<2xf32>
    %blocks_2_fc_weight_momentum_buffer_2 = sched.load "blocks.2.fc.weight:momentum_buffer" shard 0 of 2 dim 1 : tensor<4x2xf32>
    %blocks_2_fc_bias_momentum_buffer_2 = sched.load "blocks.2.fc.bias:momentum_buffer" : tensor<4xf32>
    %head_fc_weight_momentum_buffer_2 = sched.load "head.fc.weight:momentum_buffer" : tensor<2x4xf32>
    %head_fc_bias_momentum_buffer_2 = sched.load "head.fc.bias:momentum_buffer" : tensor<2xf32>
    %blocks_0_fc_weight_B0_ar_2 = sched.wait %33 : tensor<4x4xf32>
    sched.free %t_20 : tensor<4x4xf32>
    %blocks_0_fc_bias_B0_ar_2 = sched.wait %34 : tensor<4xf32>
    sched.free %view_11 : tensor<4xf32>
    %blocks_1_fc_weight_B0_ar_2 = sched.wait %35 : tensor<2x4xf32>
    sched.free %t_17 : tensor<2x4xf32>
    %blocks_1_fc_bias_B0_ar_2 = sched.wait %36 : tensor<2xf32>
    sched.free %view_8 : tensor<2xf32>
    %blocks_2_fc_weight_B0_ar_2 = sched.wait %37 : tensor<4x2xf32>
    sched.free %t_18 : tensor<4x2xf32>
    %blocks_2_fc_bias_B0_ar_2 = sched.wait %38 : tensor<4xf32>
    sched.free %view_9 : tensor<4xf32>
    %head_fc_weight_B0_ar_2 = sched.wait %39 : tensor<2x4xf32>
    sched.free %t_19 : tensor<2x4xf32>
    %head_fc_bias_B0_ar_2 = sched.wait %40 : tensor<2xf32>
    sched.free %view_10 : tensor<2xf32>
    %sub_16, %sub_17, %sub_18, %sub_19, %sub_20, %sub_21, %sub_22, %sub_23, %add_16, %add_17, %add_18, %add_19, %add_20, %add_21, %add_22, %add_23 = sched.call @OPT0_tp(%blocks_0_fc_weight_momentum_buffer_2, %blocks_0_fc_weight_B0_ar_2, %blocks_0_fc_weight_2, %blocks_0_fc_bias_momentum_buffer_2, %blocks_0_fc_bias_B0_ar_2, %blocks_0_fc_bias_2, %blocks_1_fc_weight_momentum_buffer_2, %blocks_1_fc_weight_B0_ar_2, %blocks_1_fc_weight_2, %blocks_1_fc_bias_momentum_buffer_2, %blocks_1_fc_bias_B0_ar_2, %blocks_1_fc_bias_2, %blocks_2_fc_weight_momentum_buffer_2, %blocks_2_fc_weight_B0_ar_2, %blocks_2_fc_weight_2, %blocks_2_fc_bias_momentum_buffer_2, %blocks_2_fc_bias_B0_ar_2, %blocks_2_fc_bias_2, %head_fc_weight_momentum_buffer_2, %head_fc_weight_B0_ar_2, %head_fc_weight_2, %head_fc_bias_momentum_buffer_2, %head_fc_bias_B0_ar_2, %head_fc_bias_2) task "0OPT0" stream "compute" : (tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>)
    sched.free %head_fc_bias_B0_ar_2 : tensor<2xf32>
    sched.free %head_fc_weight_B0_ar_2 : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_B0_ar_2 : tensor<4xf32>
    sched.free %blocks_2_fc_weight_B0_ar_2 : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_B0_ar_2 : tensor<2xf32>
    sched.free %blocks_1_fc_weight_B0_ar_2 : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_B0_ar_2 : tensor<4xf32>
    sched.free %blocks_0_fc_weight_B0_ar_2 : tensor<4x4xf32>
    sched.free %head_fc_bias_momentum_buffer_2 : tensor<2xf32>
    sched.free %head_fc_weight_momentum_buffer_2 : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_momentum_buffer_2 : tensor<4xf32>
    sched.free %blocks_2_fc_weight_momentum_buffer_2 : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_momentum_buffer_2 : tensor<2xf32>
    sched.free %blocks_1_fc_weight_momentum_buffer_2 : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_momentum_buffer_2 : tensor<4xf32>
    sched.free %blocks_0_fc_weight_momentum_buffer_2 : tensor<4x4xf32>
    sched.free %head_fc_bias_2 : tensor<2xf32>
    sched.free %head_fc_weight_2 : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_2 : tensor<4xf32>
    sched.free %blocks_2_fc_weight_2 : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_2 : tensor<2xf32>
    sched.free %blocks_1_fc_weight_2 : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_2 : tensor<4xf32>
    sched.free %blocks_0_fc_weight_2 : tensor<4x4xf32>
    sched.store "blocks.0.fc.weight" %sub_16 : tensor<4x4xf32>
    sched.free %sub_16 : tensor<4x4xf32>
    sched.store "blocks.0.fc.bias" %sub_17 : tensor<4xf32>
    sched.free %sub_17 : tensor<4xf32>
    sched.store "blocks.1.fc.weight" shard 0 of 2 %sub_18 : tensor<2x4xf32>
    sched.free %sub_18 : tensor<2x4xf32>
    sched.store "blocks.1.fc.bias" shard 0 of 2 %sub_19 : tensor<2xf32>
    sched.free %sub_19 : tensor<2xf32>
    sched.store "blocks.2.fc.weight" shard 0 of 2 dim 1 %sub_20 : tensor<4x2xf32>
    sched.free %sub_20 : tensor<4x2xf32>
    sched.store "blocks.2.fc.bias" %sub_21 : tensor<4xf32>
    sched.free %sub_21 : tensor<4xf32>
    sched.store "head.fc.weight" %sub_22 : tensor<2x4xf32>
    sched.free %sub_22 : tensor<2x4xf32>
    sched.store "head.fc.bias" %sub_23 : tensor<2xf32>
    sched.free %sub_23 : tensor<2xf32>
    sched.store "blocks.0.fc.weight:momentum_buffer" %add_16 : tensor<4x4xf32>
    sched.free %add_16 : tensor<4x4xf32>
    sched.store "blocks.0.fc.bias:momentum_buffer" %add_17 : tensor<4xf32>
    sched.free %add_17 : tensor<4xf32>
    sched.store "blocks.1.fc.weight:momentum_buffer" shard 0 of 2 %add_18 : tensor<2x4xf32>
    sched.free %add_18 : tensor<2x4xf32>
    sched.store "blocks.1.fc.bias:momentum_buffer" shard 0 of 2 %add_19 : tensor<2xf32>
    sched.free %add_19 : tensor<2xf32>
    sched.store "blocks.2.fc.weight:momentum_buffer" shard 0 of 2 dim 1 %add_20 : tensor<4x2xf32>
    sched.free %add_20 : tensor<4x2xf32>
    sched.store "blocks.2.fc.bias:momentum_buffer" %add_21 : tensor<4xf32>
    sched.free %add_21 : tensor<4xf32>
    sched.store "head.fc.weight:momentum_buffer" %add_22 : tensor<2x4xf32>
    sched.free %add_22 : tensor<2x4xf32>
    sched.store "head.fc.bias:momentum_buffer" %add_23 : tensor<2xf32>
    sched.free %add_23 : tensor<2xf32>
    %41 = sched.wait %31 : tensor<f32>
    sched.free %loss_part_2 : tensor<f32>
    sched.store loss "loss" %41 : tensor<f32>
    sched.free %41 : tensor<f32>
  }
  sched.program @rank3 device 3 {
    %blocks_0_fc_weight_3 = sched.load "blocks.0.fc.weight" : tensor<4x4xf32>
    %blocks_0_fc_bias_3 = sched.load "blocks.0.fc.bias" : tensor<4xf32>
    %blocks_1_fc_weight_3 = sched.load "blocks.1.fc.weight" shard 1 of 2 : tensor<2x4xf32>
    %blocks_1_fc_bias_3 = sched.load "blocks.1.fc.bias" shard 1 of 2 : tensor<2xf32>
    %blocks_2_fc_weight_3 = sched.load "blocks.2.fc.weight" shard 1 of 2 dim 1 : tensor<4x2xf32>
    %blocks_2_fc_bias_3 = sched.load "blocks.2.fc.bias" : tensor<4xf32>
    %head_fc_weight_3 = sched.load "head.fc.weight" : tensor<2x4xf32>
    %head_fc_bias_3 = sched.load "head.fc.bias" : tensor<2xf32>
    %input0_3 = sched.input "input0" replica 1 mb 0 : tensor<2x4xf32>
    %input1_3 = sched.input "input1" replica 1 mb 0 : tensor<2xi64>
    %addmm_3, %t_21, %t_22, %relu_9, %t_23, %relu_10 = sched.call @F0_tp_p0(%blocks_0_fc_weight_3, %blocks_0_fc_bias_3, %input0_3, %blocks_1_fc_weight_3, %blocks_1_fc_bias_3, %blocks_2_fc_weight_3, %head_fc_weight_3) task "0F0" stream "compute" : (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<2x2xf32>, tensor<4x2xf32>, tensor<2x4xf32>)
    %42 = sched.collective all_reduce sum %addmm_3 group [2, 3] tag 5 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %addmm_sum_3 = sched.wait %42 : tensor<2x4xf32>
    sched.free %addmm_3 : tensor<2x4xf32>
    %43, %_log_softmax_3, %44, %relu_11 = sched.call @F0_tp_p1(%addmm_sum_3, %blocks_2_fc_bias_3, %head_fc_bias_3, %t_21, %input1_3) task "0F0" stream "compute" : (tensor<2x4xf32>, tensor<4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<2xi64>) -> (tensor<f32>, tensor<2x2xf32>, tensor<f32>, tensor<2x4xf32>)
    sched.free %addmm_sum_3 : tensor<2x4xf32>
    %loss_part_3 = sched.sum %43 scale 0.5 : tensor<f32>
    sched.free %43 : tensor<f32>
    %45 = sched.collective all_reduce sum %loss_part_3 group [1, 3] tag 3 stream "comm" : tensor<f32> -> tensor<f32>
    %tangent_3 = sched.fill 0.5 : tensor<f32>
    %mm_3, %t_24, %view_12, %t_25, %view_13, %t_26, %view_14 = sched.call @B0_tp_p0(%tangent_3, %_log_softmax_3, %input1_3, %44, %t_21, %relu_11, %t_22, %relu_9, %t_23, %relu_10) task "0B0" stream "compute" : (tensor<f32>, tensor<2x2xf32>, tensor<2xi64>, tensor<f32>, tensor<4x2xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x2xf32>, tensor<4x2xf32>, tensor<2x4xf32>) -> (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>)
    sched.free %tangent_3 : tensor<f32>
    sched.free %relu_11 : tensor<2x4xf32>
    sched.free %44 : tensor<f32>
    sched.free %_log_softmax_3 : tensor<2x2xf32>
    sched.free %t_23 : tensor<4x2xf32>
    sched.free %relu_9 : tensor<2x2xf32>
    sched.free %t_22 : tensor<2x4xf32>
    sched.free %t_21 : tensor<4x2xf32>
    sched.free %input1_3 : tensor<2xi64>
    %46 = sched.collective all_reduce sum %mm_3 group [2, 3] tag 1 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %mm_sum_3 = sched.wait %46 : tensor<2x4xf32>
    sched.free %mm_3 : tensor<2x4xf32>
    %t_27, %view_15 = sched.call @B0_tp_p1(%mm_sum_3, %relu_10, %input0_3) task "0B0" stream "compute" : (tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>) -> (tensor<4x4xf32>, tensor<4xf32>)
    sched.free %mm_sum_3 : tensor<2x4xf32>
    sched.free %relu_10 : tensor<2x4xf32>
    sched.free %input0_3 : tensor<2x4xf32>
    %47 = sched.collective all_reduce sum %t_27 group [1, 3] tag 7 stream "comm" : tensor<4x4xf32> -> tensor<4x4xf32>
    %48 = sched.collective all_reduce sum %view_15 group [1, 3] tag 9 stream "comm" : tensor<4xf32> -> tensor<4xf32>
    %49 = sched.collective all_reduce sum %t_24 group [1, 3] tag 11 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %50 = sched.collective all_reduce sum %view_12 group [1, 3] tag 13 stream "comm" : tensor<2xf32> -> tensor<2xf32>
    %51 = sched.collective all_reduce sum %t_25 group [1, 3] tag 15 stream "comm" : tensor<4x2xf32> -> tensor<4x2xf32>
    %52 = sched.collective all_reduce sum %view_13 group [1, 3] tag 17 stream "comm" : tensor<4xf32> -> tensor<4xf32>
    %53 = sched.collective all_reduce sum %t_26 group [1, 3] tag 19 stream "comm" : tensor<2x4xf32> -> tensor<2x4xf32>
    %54 = sched.collective all_reduce sum %view_14 group [1, 3] tag 21 stream "comm" : tensor<2xf32> -> tensor<2xf32>
    %blocks_0_fc_weight_momentum_buffer_3 = sched.load "blocks.0.fc.weight:momentum_buffer" : tensor<4x4xf32>
    %blocks_0_fc_bias_momentum_buffer_3 = sched.load "blocks.0.fc.bias:momentum_buffer" : tensor<4xf32>
    %blocks_1_fc_weight_momentum_buffer_3 = sched.load "blocks.1.fc.weight:momentum_buffer" shard 1 of 2 : tensor<2x4xf32>
    %blocks_1_fc_bias_momentum_buffer_3 = sched.load "blocks.1.fc.bias:momentum_buffer" shard 1 of 2 : tensor<2xf32>
    %blocks_2_fc_weight_momentum_buffer_3 = sched.load "blocks.2.fc.weight:momentum_buffer" shard 1 of 2 dim 1 : tensor<4x2xf32>
    %blocks_2_fc_bias_momentum_buffer_3 = sched.load "blocks.2.fc.bias:momentum_buffer" : tensor<4xf32>
    %head_fc_weight_momentum_buffer_3 = sched.load "head.fc.weight:momentum_buffer" : tensor<2x4xf32>
    %head_fc_bias_momentum_buffer_3 = sched.load "head.fc.bias:momentum_buffer" : tensor<2xf32>
    %blocks_0_fc_weight_B0_ar_3 = sched.wait %47 : tensor<4x4xf32>
    sched.free %t_27 : tensor<4x4xf32>
    %blocks_0_fc_bias_B0_ar_3 = sched.wait %48 : tensor<4xf32>
    sched.free %view_15 : tensor<4xf32>
    %blocks_1_fc_weight_B0_ar_3 = sched.wait %49 : tensor<2x4xf32>
    sched.free %t_24 : tensor<2x4xf32>
    %blocks_1_fc_bias_B0_ar_3 = sched.wait %50 : tensor<2xf32>
    sched.free %view_12 : tensor<2xf32>
    %blocks_2_fc_weight_B0_ar_3 = sched.wait %51 : tensor<4x2xf32>
    sched.free %t_25 : tensor<4x2xf32>
    %blocks_2_fc_bias_B0_ar_3 = sched.wait %52 : tensor<4xf32>
    sched.free %view_13 : tensor<4xf32>
    %head_fc_weight_B0_ar_3 = sched.wait %53 : tensor<2x4xf32>
    sched.free %t_26 : tensor<2x4xf32>
    %head_fc_bias_B0_ar_3 = sched.wait %54 : tensor<2xf32>
    sched.free %view_14 : tensor<2xf32>
    %sub_24, %sub_25, %sub_26, %sub_27, %sub_28, %sub_29, %sub_30, %sub_31, %add_24, %add_25, %add_26, %add_27, %add_28, %add_29, %add_30, %add_31 = sched.call @OPT0_tp(%blocks_0_fc_weight_momentum_buffer_3, %blocks_0_fc_weight_B0_ar_3, %blocks_0_fc_weight_3, %blocks_0_fc_bias_momentum_buffer_3, %blocks_0_fc_bias_B0_ar_3, %blocks_0_fc_bias_3, %blocks_1_fc_weight_momentum_buffer_3, %blocks_1_fc_weight_B0_ar_3, %blocks_1_fc_weight_3, %blocks_1_fc_bias_momentum_buffer_3, %blocks_1_fc_bias_B0_ar_3, %blocks_1_fc_bias_3, %blocks_2_fc_weight_momentum_buffer_3, %blocks_2_fc_weight_B0_ar_3, %blocks_2_fc_weight_3, %blocks_2_fc_bias_momentum_buffer_3, %blocks_2_fc_bias_B0_ar_3, %blocks_2_fc_bias_3, %head_fc_weight_momentum_buffer_3, %head_fc_weight_B0_ar_3, %head_fc_weight_3, %head_fc_bias_momentum_buffer_3, %head_fc_bias_B0_ar_3, %head_fc_bias_3) task "0OPT0" stream "compute" : (tensor<4x4xf32>, tensor<4x4xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4x2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> (tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x4xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>, tensor<4x2xf32>, tensor<4xf32>, tensor<2x4xf32>, tensor<2xf32>)
    sched.free %head_fc_bias_B0_ar_3 : tensor<2xf32>
    sched.free %head_fc_weight_B0_ar_3 : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_B0_ar_3 : tensor<4xf32>
    sched.free %blocks_2_fc_weight_B0_ar_3 : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_B0_ar_3 : tensor<2xf32>
    sched.free %blocks_1_fc_weight_B0_ar_3 : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_B0_ar_3 : tensor<4xf32>
    sched.free %blocks_0_fc_weight_B0_ar_3 : tensor<4x4xf32>
    sched.free %head_fc_bias_momentum_buffer_3 : tensor<2xf32>
    sched.free %head_fc_weight_momentum_buffer_3 : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_momentum_buffer_3 : tensor<4xf32>
    sched.free %blocks_2_fc_weight_momentum_buffer_3 : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_momentum_buffer_3 : tensor<2xf32>
    sched.free %blocks_1_fc_weight_momentum_buffer_3 : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_momentum_buffer_3 : tensor<4xf32>
    sched.free %blocks_0_fc_weight_momentum_buffer_3 : tensor<4x4xf32>
    sched.free %head_fc_bias_3 : tensor<2xf32>
    sched.free %head_fc_weight_3 : tensor<2x4xf32>
    sched.free %blocks_2_fc_bias_3 : tensor<4xf32>
    sched.free %blocks_2_fc_weight_3 : tensor<4x2xf32>
    sched.free %blocks_1_fc_bias_3 : tensor<2xf32>
    sched.free %blocks_1_fc_weight_3 : tensor<2x4xf32>
    sched.free %blocks_0_fc_bias_3 : tensor<4xf32>
    sched.free %blocks_0_fc_weight_3 : tensor<4x4xf32>
    sched.store "blocks.0.fc.weight" %sub_24 : tensor<4x4xf32>
    sched.free %sub_24 : tensor<4x4xf32>
    sched.store "blocks.0.fc.bias" %sub_25 : tensor<4xf32>
    sched.free %sub_25 : tensor<4xf32>
    sched.store "blocks.1.fc.weight" shard 1 of 2 %sub_26 : tensor<2x4xf32>
    sched.free %sub_26 : tensor<2x4xf32>
    sched.store "blocks.1.fc.bias" shard 1 of 2 %sub_27 : tensor<2xf32>
    sched.free %sub_27 : tensor<2xf32>
    sched.store "blocks.2.fc.weight" shard 1 of 2 dim 1 %sub_28 : tensor<4x2xf32>
    sched.free %sub_28 : tensor<4x2xf32>
    sched.store "blocks.2.fc.bias" %sub_29 : tensor<4xf32>
    sched.free %sub_29 : tensor<4xf32>
    sched.store "head.fc.weight" %sub_30 : tensor<2x4xf32>
    sched.free %sub_30 : tensor<2x4xf32>
    sched.store "head.fc.bias" %sub_31 : tensor<2xf32>
    sched.free %sub_31 : tensor<2xf32>
    sched.store "blocks.0.fc.weight:momentum_buffer" %add_24 : tensor<4x4xf32>
    sched.free %add_24 : tensor<4x4xf32>
    sched.store "blocks.0.fc.bias:momentum_buffer" %add_25 : tensor<4xf32>
    sched.free %add_25 : tensor<4xf32>
    sched.store "blocks.1.fc.weight:momentum_buffer" shard 1 of 2 %add_26 : tensor<2x4xf32>
    sched.free %add_26 : tensor<2x4xf32>
    sched.store "blocks.1.fc.bias:momentum_buffer" shard 1 of 2 %add_27 : tensor<2xf32>
    sched.free %add_27 : tensor<2xf32>
    sched.store "blocks.2.fc.weight:momentum_buffer" shard 1 of 2 dim 1 %add_28 : tensor<4x2xf32>
    sched.free %add_28 : tensor<4x2xf32>
    sched.store "blocks.2.fc.bias:momentum_buffer" %add_29 : tensor<4xf32>
    sched.free %add_29 : tensor<4xf32>
    sched.store "head.fc.weight:momentum_buffer" %add_30 : tensor<2x4xf32>
    sched.free %add_30 : tensor<2x4xf32>
    sched.store "head.fc.bias:momentum_buffer" %add_31 : tensor<2xf32>
    sched.free %add_31 : tensor<2xf32>
    %55 = sched.wait %45 : tensor<f32>
    sched.free %loss_part_3 : tensor<f32>
    sched.store loss "loss" %55 : tensor<f32>
    sched.free %55 : tensor<f32>
  }
}

