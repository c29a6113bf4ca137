"""The decoded instructions the runtime's step loop executes.

`RankRuntime._decode` turns each op of a device's `sched` program into one
of these records, once: every SSA value becomes a slot number in the step's
environment (a list), and every attribute is read here, not in the loop.
One class per instruction kind, so the loop dispatches on the record's type
and reads its fields by name; a slot field holds an index into the
environment, never a tensor.

They are slotted frozen dataclasses rather than tuples or NamedTuples:
reading a field of a slotted instance is as cheap as indexing a tuple (it
is specialised by the interpreter; a NamedTuple field goes through a
descriptor call and costs about twice as much), and the loop reads a few
fields per instruction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(slots=True, frozen=True)
class Call:
    """`sched.call`: run a stage function."""

    fn: Callable  # takes the list of arguments over (call_owned) and returns the results
    args: tuple[int, ...]  # slots of the arguments, in order
    results: tuple[int, ...]  # slots the results go to, in order
    # argument slots the program reads for the last time here (it only frees
    # them after): handed to the call, which drops each after its own last use
    dying: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class Free:
    """`sched.free`: drop a value (its bytes leave the live count)."""

    slot: int


@dataclass(slots=True, frozen=True)
class Wait:
    """`sched.wait`: complete a message or collective started earlier."""

    handle: int  # slot of the (work, buffer) pair its start left
    result: int  # slot of the received or reduced tensor; -1 when none
    shape: tuple[int, ...] | None  # the result's shape (a view of the buffer); None when none


@dataclass(slots=True, frozen=True)
class Collective:
    """`sched.collective`: start a collective asynchronously."""

    handle: int  # slot for the (work, buffer) pair its wait completes
    value: int  # slot of the input tensor
    start: Callable  # start(x, env, state) -> (work, buffer): see RankRuntime._collective_start


@dataclass(slots=True, frozen=True)
class Send:
    """`sched.send`: start sending a tensor to a peer."""

    handle: int
    value: int
    peer: int
    tag: int


@dataclass(slots=True, frozen=True)
class Recv:
    """`sched.recv`: start receiving a tensor from a peer into a new buffer."""

    handle: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    peer: int
    tag: int


@dataclass(slots=True, frozen=True)
class Load:
    """`sched.load`: a tensor of the training state."""

    result: int
    name: str


@dataclass(slots=True, frozen=True)
class Store:
    """`sched.store`: write a tensor into the training state."""

    value: int
    name: str
    is_loss: bool  # the value is the step's loss: recorded in StepStats.losses


@dataclass(slots=True, frozen=True)
class Input:
    """`sched.input`: this rank's chunk of a global-batch input."""

    result: int
    name: str
    replica: int
    mb: int
    type: Any  # the chunk's TensorType, to check its shape against


@dataclass(slots=True, frozen=True)
class Fill:
    """`sched.fill`: a new tensor of one value."""

    result: int
    shape: tuple[int, ...]
    value: float
    dtype: torch.dtype


@dataclass(slots=True, frozen=True)
class Sum:
    """`sched.sum`: the sum of values, times a scale."""

    result: int
    inputs: tuple[int, ...]
    scale: float


@dataclass(slots=True, frozen=True)
class Shard:
    """`sched.shard`: part `index` of `parts` equal parts of a flattened value."""

    result: int
    value: int
    index: int
    parts: int


@dataclass(slots=True, frozen=True)
class Copy:
    """`sched.copy`: a copy of a tensor in host or device memory (on a CPU
    both are the same memory: a real copy all the same)."""

    result: int
    value: int
    device: Any  # where the copy goes: "cpu" for the host, else the rank's device


@dataclass(slots=True, frozen=True)
class Unsupported:
    """An op the runtime cannot execute: an error when (if) it is reached."""

    op_name: str


Instruction = (Call | Free | Wait | Collective | Send | Recv | Load | Store | Input | Fill | Sum
               | Shard | Copy | Unsupported)
