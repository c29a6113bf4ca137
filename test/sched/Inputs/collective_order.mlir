sched.program @rank0 device 0 {
  %x = sched.load "x" : tensor<4xf32>
  %a = sched.collective all_reduce sum %x group [0, 1] tag 0 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %b = sched.collective all_reduce sum %x group [0, 1] tag 1 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %a1 = sched.wait %a : tensor<4xf32>
  %b1 = sched.wait %b : tensor<4xf32>
}
sched.program @rank1 device 1 {
  %x = sched.load "x" : tensor<4xf32>
  %b = sched.collective all_reduce sum %x group [0, 1] tag 1 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %a = sched.collective all_reduce sum %x group [0, 1] tag 0 stream "comm" : tensor<4xf32> -> tensor<4xf32>
  %b1 = sched.wait %b : tensor<4xf32>
  %a1 = sched.wait %a : tensor<4xf32>
}
