// RUN: piper-opt %s --split-input-file -p verify-plan 2>&1 | filecheck %s --check-prefix=OK
// RUN: not piper-opt %S/Inputs/unmatched.mlir -p verify-plan 2>&1 | filecheck %s --check-prefix=UNMATCHED
// RUN: not piper-opt %S/Inputs/deadlock.mlir -p verify-plan 2>&1 | filecheck %s --check-prefix=DEADLOCK
// RUN: not piper-opt %S/Inputs/collective_order.mlir -p verify-plan 2>&1 | filecheck %s --check-prefix=ORDER
// RUN: not piper-opt %S/Inputs/tp_collective_order.mlir -p verify-plan 2>&1 | filecheck %s --check-prefix=TP-ORDER

// OK: sched.program @rank0
sched.program @rank0 device 0 {
  %x = sched.load "x" : tensor<4xf32>
  %h = sched.send %x to 1 tag 0 stream "comm" : tensor<4xf32>
  sched.wait %h
}
sched.program @rank1 device 1 {
  %h = sched.recv from 0 tag 0 stream "comm" : tensor<4xf32>
  %x = sched.wait %h : tensor<4xf32>
  sched.store "x" %x : tensor<4xf32>
}

// Each error points at the instruction it is about, in the file it was read from.
// UNMATCHED: {{.*}}/Inputs/unmatched.mlir:3:3: error: device 0: send to 1 tag 7 has no matching receive on device 1
// DEADLOCK: {{.*}}/Inputs/deadlock.mlir:5:3: error: verify-plan: deadlock: device 0 at instruction 2 (wait for recv from 1 tag 1); device 1 at instruction 2 (wait for recv from 0 tag 0)
// ORDER: {{.*}}/Inputs/collective_order.mlir:10:3: error: group [0, 1]: collective 0 differs between device 0 (all_reduce tag 0) and device 1 (all_reduce tag 1)
// Every group is checked, not only the first: in a dp=2 x tp=2 plan, device 3
// names its first all_reduce of tp group [2, 3] as device 2's second one.
// TP-ORDER: {{.*}}/Inputs/tp_collective_order.mlir:606:5: error: group [2, 3]: collective 0 differs between device 2 (all_reduce tag 1) and device 3 (all_reduce tag 5)
