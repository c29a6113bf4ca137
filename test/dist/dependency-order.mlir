// A dist.plan whose ops are not in dependency order (the load of %w1 stands
// after the task that reads it): the verifier refuses it at the use, and
// `order` re-sorts the plan by its data edges, and lowering, which projects
// the order onto each device, says where it breaks
// (reached here with --disable-verify).

// RUN: not piper-opt %s 2>&1 | filecheck %s --check-prefix=VERIFY
// RUN: piper-opt %s --disable-verify -p 'order{schedule="1f1b"}' | filecheck %s --check-prefix=ORDER
// RUN: not piper-opt %s --disable-verify -p 'lower-dist-to-sched' 2>&1 | filecheck %s --check-prefix=LOWER

// VERIFY: dependency-order.mlir:50:5: error: 'dist.task' op uses %w1 before its definition ('dist.load' at {{.*}}dependency-order.mlir:51:5)
// ORDER: %w1 = dist.load "w1"
// ORDER: dist.task F stage 1 mb 0 replica 0 on 1 @F1(%w1
// LOWER: error: lower-dist-to-sched: 'dist.task' uses %w1 before the 'dist.load'

builtin.module {
  func.func @F0(%w0: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %x: tensor<4xf32> {graph.name = "input0", graph.kind = "input"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "act"}, tensor<4xf32> {graph.name = "x", graph.kind = "saved"}) {
    %a = graph.aten "aten.mul.Tensor"(%x, %w0) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    func.return %a, %x : tensor<4xf32>, tensor<4xf32>
  }
  func.func @F1(%w1: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %a: tensor<4xf32> {graph.name = "a", graph.kind = "act", graph.from = "F0#0"}) -> (tensor<f32> {graph.name = "loss", graph.kind = "loss"}, tensor<4xf32> {graph.name = "a", graph.kind = "saved"}) {
    %m = graph.aten "aten.mul.Tensor"(%a, %w1) tags {PP = 1} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    %l = graph.aten "aten.sum.default"(%m) tags {PP = 1} : (tensor<4xf32>) -> tensor<f32>
    func.return %l, %a : tensor<f32>, tensor<4xf32>
  }
  func.func @B1(%a: tensor<4xf32> {graph.name = "a", graph.kind = "saved", graph.from = "F1#1"}, %w1: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %t: tensor<f32> {graph.name = "loss", graph.kind = "tangent"}) -> (tensor<4xf32> {graph.name = "a", graph.kind = "grad_act"}, tensor<4xf32> {graph.name = "w1", graph.kind = "grad"}) {
    %ga = graph.aten "aten.mul.Tensor"(%w1, %t) tags {PP = 1} : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
    %gw = graph.aten "aten.mul.Tensor"(%a, %t) tags {PP = 1} : (tensor<4xf32>, tensor<f32>) -> tensor<4xf32>
    func.return %ga, %gw : tensor<4xf32>, tensor<4xf32>
  }
  func.func @B0(%x: tensor<4xf32> {graph.name = "x", graph.kind = "saved", graph.from = "F0#1"}, %g: tensor<4xf32> {graph.name = "a", graph.kind = "grad_act", graph.from = "B1#0"}) -> (tensor<4xf32> {graph.name = "w0", graph.kind = "grad"}) {
    %gw = graph.aten "aten.mul.Tensor"(%x, %g) tags {PP = 0} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    func.return %gw : tensor<4xf32>
  }
  func.func @OPT0(%w: tensor<4xf32> {graph.name = "w0", graph.kind = "param"}, %g: tensor<4xf32> {graph.name = "w0", graph.kind = "grad"}) -> (tensor<4xf32> {graph.name = "w0", graph.kind = "param"}) {
    %s = graph.aten "aten.mul.Tensor"(%g, 0.1) : (tensor<4xf32>) -> tensor<4xf32>
    %n = graph.aten "aten.sub.Tensor"(%w, %s) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    func.return %n : tensor<4xf32>
  }
  func.func @OPT1(%w: tensor<4xf32> {graph.name = "w1", graph.kind = "param"}, %g: tensor<4xf32> {graph.name = "w1", graph.kind = "grad"}) -> (tensor<4xf32> {graph.name = "w1", graph.kind = "param"}) {
    %s = graph.aten "aten.mul.Tensor"(%g, 0.1) : (tensor<4xf32>) -> tensor<4xf32>
    %n = graph.aten "aten.sub.Tensor"(%w, %s) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    func.return %n : tensor<4xf32>
  }
  dist.plan @step mesh [pp = 2] microbatches 1 {
    %w0 = dist.load "w0" on 0 : tensor<4xf32>
    %input0 = dist.input "input0" replica 0 mb 0 on 0 : tensor<4xf32>
    %a_F0, %x_F0 = dist.task F stage 0 mb 0 replica 0 on 0 @F0(%w0, %input0) : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>)
    %0 = dist.send %a_F0 from 0 to 1 bytes 16 : tensor<4xf32>
    %loss_F1, %a_F1 = dist.task F stage 1 mb 0 replica 0 on 1 @F1(%w1, %0) : (tensor<4xf32>, tensor<4xf32>) -> (tensor<f32>, tensor<4xf32>)
    %w1 = dist.load "w1" on 1 : tensor<4xf32>
    dist.store "loss" %loss_F1 on 1 : tensor<f32>
    %tangent = dist.fill 1.0 on 1 : tensor<f32>
    %a_B1, %w1_B1 = dist.task B stage 1 mb 0 replica 0 on 1 @B1(%a_F1, %w1, %tangent) : (tensor<4xf32>, tensor<4xf32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>)
    %1 = dist.send %a_B1 from 1 to 0 bytes 16 : tensor<4xf32>
    %w0_B0 = dist.task B stage 0 mb 0 replica 0 on 0 @B0(%x_F0, %1) : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>)
    %w0_OPT0 = dist.task OPT stage 0 mb 0 replica 0 on 0 @OPT0(%w0, %w0_B0) : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>)
    dist.store "w0" %w0_OPT0 on 0 : tensor<4xf32>
    %w1_OPT1 = dist.task OPT stage 1 mb 0 replica 0 on 1 @OPT1(%w1, %w1_B1) : (tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>)
    dist.store "w1" %w1_OPT1 on 1 : tensor<4xf32>
  }
}

