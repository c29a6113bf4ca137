// RUN: piper-opt %S/../dist/Inputs/two_stage.mlir -o /dev/null -p 'convert-graph-to-dist,split{n=4},order{schedule="1f1b"},lower-dist-to-sched,simulate{costs="unit"}' | filecheck %s --check-prefix=UNIT
// RUN: piper-opt %S/../dist/Inputs/two_stage.mlir -o /dev/null -p 'convert-graph-to-dist,split{n=4},order{schedule="gpipe"},lower-dist-to-sched,simulate{costs="unit" steps=3}' | filecheck %s --check-prefix=STEPS
// RUN: piper-opt %S/../dist/Inputs/two_stage.mlir -o /dev/null -p 'convert-graph-to-dist,split{n=2},replicate{n=2},order{schedule="1f1b"},lower-dist-to-sched,simulate{device="h200" trace="%t.json"}' | filecheck %s --check-prefix=H200
// RUN: %python -c "import json; ev = json.load(open('%t.json'))['traceEvents']; print(sorted({(e['pid'], e['args']['name']) for e in ev if e['name'] == 'thread_name'}))" | filecheck %s --check-prefix=TRACE
// RUN: piper-opt %s -p 'simulate{costs="unit"}' | filecheck %s --check-prefix=IR
// RUN: not piper-opt %S/../dist/Inputs/two_stage.mlir -p simulate 2>&1 | filecheck %s --check-prefix=NOPLAN
// RUN: not piper-opt %s -p 'simulate{costs="magic"}' 2>&1 | filecheck %s --check-prefix=COSTS
// RUN: not piper-opt %s -p 'simulate{plot="%t.gif"}' 2>&1 | filecheck %s --check-prefix=PLOT
// RUN: not piper-opt %S/Inputs/deadlock.mlir -p 'simulate{costs="unit"}' 2>&1 | filecheck %s --check-prefix=DEADLOCK

// Two stages, 1F1B, 4 microbatches, F = 1, B = 2, everything else free: the
// (p-1)/(m+p-1) = 1/5 bubble on both devices; the table says what each
// device's peak is made of (device 1 sums its gradients as they come: a
// running sum, not every microbatch's gradient until the last).
// UNIT:      simulate: costs unit
// UNIT-NEXT: step time 15   mean bubble 20.0%   (times in units)
// UNIT-NEXT: device  end  busy  idle  bubble  peak mem  params  grads  activations  inputs  other
// UNIT-NEXT:      0   15    12     3   20.0%     112 B    16 B    0 B         32 B    64 B    0 B
// UNIT-NEXT:      1   13    12     3   20.0%      96 B    16 B   32 B         32 B     0 B   16 B
// UNIT-NOT:  sched.program

// Three steps back to back: a device starts its next step when it ends the last.
// STEPS:      simulate: costs unit, 3 steps
// STEPS-NEXT: step time 45   mean bubble 20.0%   (times in units)
// STEPS:      device 0 per step: 15 15 15
// STEPS-NEXT: device 1 per step: 13 15 15

// Analytic costs on the H200 preset, pp=2 x dp=2: gradients all-reduced on
// the comm stream; the trace has a track per device and stream (and a second
// comm lane where a device's messages overlap in time).
// H200:      simulate: costs analytic on h200
// H200-NEXT: step time {{[0-9.]+}} us   mean bubble {{[0-9.]+}}%
// H200-NEXT: device end busy idle bubble peak mem
// H200-COUNT-4: {{^ +[0-3] +[0-9.]+ us +[0-9.]+ us +[0-9.]+ us +[0-9.]+% +[0-9]+ B}}
// TRACE: [(0, 'comm'), (0, 'comm #2'), (0, 'compute'), (1, 'comm'), (1, 'comm #2'), (1, 'compute'), (2, 'comm'), (2, 'comm #2'), (2, 'compute'), (3, 'comm'), (3, 'comm #2'), (3, 'compute')]

// The pass leaves the IR as it was.
// IR:      step time 4   mean bubble 50.0%
// IR:      sched.program @rank0 device 0 {
// IR-NEXT:   %x = sched.load "x" : tensor<4xf32>
// IR:      sched.program @rank1 device 1 {

// NOPLAN: error: simulate: no sched.program in the module; run lower-dist-to-sched first
// COSTS: error: simulate: unknown cost source 'magic' (one of unit, analytic, profile)
// PLOT: error: simulate: cannot write '{{.*}}.gif': a plot must end in .png, .svg, .pdf
// DEADLOCK: error: simulate: programs deadlock: device 0 stream comm at instruction 1 (recv from 1 tag 1) waits for its peer instruction 3 (send to 0 tag 1) on device 1;{{.*}} device 1 stream compute at instruction 2 (wait for recv from 0 tag 0) waits for instruction 1 (recv from 0 tag 0)

func.func @f(%x: tensor<4xf32>) -> (tensor<4xf32>) {
  %y = graph.aten "aten.mul.Tensor"(%x, %x) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}
sched.program @rank0 device 0 {
  %x = sched.load "x" : tensor<4xf32>
  %a = sched.call @f(%x) task "0F0" stream "compute" : (tensor<4xf32>) -> (tensor<4xf32>)
  %h = sched.send %a to 1 tag 0 stream "comm" : tensor<4xf32>
  sched.wait %h
  sched.free %a : tensor<4xf32>
  sched.free %x : tensor<4xf32>
}
sched.program @rank1 device 1 {
  %h = sched.recv from 0 tag 0 stream "comm" : tensor<4xf32>
  %a = sched.wait %h : tensor<4xf32>
  %b = sched.call @f(%a) task "1F0" stream "compute" : (tensor<4xf32>) -> (tensor<4xf32>)
  %c = sched.call @f(%b) task "1B0" stream "compute" : (tensor<4xf32>) -> (tensor<4xf32>)
  sched.free %a : tensor<4xf32>
  sched.free %b : tensor<4xf32>
  sched.free %c : tensor<4xf32>
}
