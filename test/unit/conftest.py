"""Test-session settings that every test file shares.

Triton: on a machine without a GPU, every test runs Triton kernels in its
interpreter. Triton reads TRITON_INTERPRET when it first decorates a kernel
and may keep that answer, so the setting must hold for the whole session
before any kernel exists, not only inside the tests that set it (which made
results depend on test order). On a GPU machine nothing is set and kernels
run for real. Tests that check the refusal on CPU set it to "0" themselves,
before any kernel of theirs is decorated.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
