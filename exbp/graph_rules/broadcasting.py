"""Undoing NumPy-style broadcasting on a signal with its leading target axis."""

from __future__ import annotations


def unbroadcast(signal, shape):
    """Sum ``signal`` (targets, *broadcast shape) down to (targets, *shape): an input that was
    broadcast receives the signal of every output it reached, so mass is conserved."""
    shape = tuple(shape)
    extra = signal.ndim - 1 - len(shape)
    if extra > 0:
        signal = signal.sum(axis=tuple(range(1, 1 + extra)))
    axes = tuple(i + 1 for i, dim in enumerate(shape) if dim == 1 and signal.shape[i + 1] != 1)
    if axes:
        signal = signal.sum(axis=axes, keepdims=True)
    return signal
