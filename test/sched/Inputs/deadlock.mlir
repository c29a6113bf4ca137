// Both devices wait to receive before either sends.
sched.program @rank0 device 0 {
  %x = sched.load "x" : tensor<4xf32>
  %r = sched.recv from 1 tag 1 stream "comm" : tensor<4xf32>
  %y = sched.wait %r : tensor<4xf32>
  %h = sched.send %x to 1 tag 0 stream "comm" : tensor<4xf32>
  sched.wait %h
}
sched.program @rank1 device 1 {
  %x = sched.load "x" : tensor<4xf32>
  %r = sched.recv from 0 tag 0 stream "comm" : tensor<4xf32>
  %y = sched.wait %r : tensor<4xf32>
  %h = sched.send %x to 0 tag 1 stream "comm" : tensor<4xf32>
  sched.wait %h
}
