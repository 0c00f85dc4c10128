"""Where the walk's arrays live: an array namespace, device transfer, and the window kernels.

Rules never import NumPy or CuPy; they compute with ``backend.xp`` and call the kernels here. The
NumPy backend runs on the CPU; the CuPy backend (``device="cuda"``) on an NVIDIA GPU.
"""

from __future__ import annotations

import numpy as np

from ..errors import ExbpError
from . import kernels


class ArrayBackend:
    """The kernels of :mod:`exbp.engine.kernels` bound to one array namespace."""

    name = "cpu"

    def __init__(self, xp):
        self.xp = xp

    def asarray(self, value):
        return self.xp.asarray(value, dtype=self.xp.float32)

    def to_host(self, value) -> np.ndarray:
        return np.asarray(value)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU); for timing."""

    def conv(self, x, weight, *, strides, pads, dilations, group, out_spatial):
        return kernels.conv(self.xp, x, weight, strides, pads, dilations, group, out_spatial)

    def conv_transpose(self, signal, weight, *, strides, pads, dilations, group, in_spatial):
        return kernels.conv_transpose(self.xp, signal, weight, strides, pads, dilations, group,
                                      in_spatial)

    def window_sum(self, x, kernel, *, strides, pads, dilations, out_spatial):
        return kernels.window_sum(self.xp, x, kernel, strides, pads, dilations, out_spatial)

    def window_sum_transpose(self, signal, kernel, *, strides, pads, dilations, in_spatial):
        return kernels.window_sum_transpose(self.xp, signal, kernel, strides, pads, dilations,
                                            in_spatial)

    def window_argmax(self, x, kernel, *, strides, pads, dilations, out_spatial):
        return kernels.window_argmax(self.xp, x, kernel, strides, pads, dilations, out_spatial)

    def route_to_winners(self, signal, winner, kernel, *, strides, pads, dilations, in_spatial):
        return kernels.route_to_winners(self.xp, signal, winner, kernel, strides, pads, dilations,
                                        in_spatial)


def numpy_backend() -> ArrayBackend:
    return ArrayBackend(np)


def backend_for(device: str) -> ArrayBackend:
    """``"cpu"`` (NumPy); ``"cuda"`` / ``"cuda:N"`` (CuPy); ``"auto"``: CUDA when CuPy sees a GPU."""
    if device == "cpu":
        return numpy_backend()
    raise ExbpError(f"unknown device {device!r}; use 'cpu'")
