"""The eager side of the parity tests: one process training the plain model."""

from __future__ import annotations


def train_eagerly(model, batches, optimizer, loss=None) -> list[float]:
    """One `optimizer` step (over `model`'s parameters) per global batch of
    `batches`; the loss of each step. `loss(model, batch)` computes a batch's
    loss, by default `model(batch["input0"], batch["input1"])`."""
    losses = []
    for batch in batches:
        optimizer.zero_grad()
        value = loss(model, batch) if loss else model(batch["input0"], batch["input1"])
        value.backward()
        optimizer.step()
        losses.append(value.item())
    return losses
