sched.program @rank0 device 0 {
  %x = sched.load "x" : tensor<4xf32>
  %h = sched.send %x to 1 tag 7 stream "comm" : tensor<4xf32>
  sched.wait %h
}
sched.program @rank1 device 1 {
}
