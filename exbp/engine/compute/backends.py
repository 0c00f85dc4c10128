"""Where the walk's arrays live: an array namespace, device transfer, and the window kernels.

Rules never import NumPy or CuPy; they compute with ``backend.xp`` and call the kernels here. The
CPU backend runs on NumPy with onnxruntime's convolutions; the CuPy backend (``device="cuda"``,
with the ``gpu`` extra) on an NVIDIA GPU. Convolution kernels take a
:class:`~exbp.engine.compute.constants.Weight` and the part (W⁺ or W⁻) to convolve with.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import re
from typing import Optional

import numpy as np
from threadpoolctl import ThreadpoolController

from ...errors import ExbpError
from . import kernels
from .ort_kernels import OrtConvolutions


class ArrayBackend:
    """The kernels of :mod:`exbp.engine.compute.kernels` bound to one array namespace."""

    name = "numpy"
    # whether the recording computes the rules' derived quantities (Z, max-pool winners)
    records_derived = False

    def __init__(self, xp):
        self.xp = xp

    def asarray(self, value):
        """A backend array: floating point as float32, integers (indices) as they are."""
        kind = getattr(value, "dtype", np.dtype(np.float32)).kind
        return self.xp.asarray(value, dtype=self.xp.float32 if kind == "f" else None)

    def constant(self, name: str, host: np.ndarray):
        """The model's constant ``name`` as a backend array (a float16 one in float32, in which
        the walk computes)."""
        return self.asarray(host.astype(np.float32) if host.dtype == np.float16 else host)

    def to_host(self, value) -> np.ndarray:
        return np.asarray(value)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU); for timing."""

    def computing(self):
        """A context for one explanation's work: NumPy's floating-point warnings are silenced,
        since a result that overflowed is refused as a whole (its maps are checked for being
        finite) rather than reported element by element on stderr."""
        return np.errstate(all="ignore")

    # where onnxruntime runs the recording, and where its outputs stay (None: returned to the
    # host as NumPy arrays; else (device type, id) for IOBinding, read with from_onnxruntime)
    onnxruntime_providers = ("CPUExecutionProvider",)
    binding_device: Optional[tuple[str, int]] = None

    def safe_reciprocal(self, z):
        """1/z where z > 0, else 0 (z ≥ 0), in place when z may be overwritten; the normaliser's
        division: the mass where Z = 0 has no winner."""
        xp = self.xp
        positive = z > 0
        return xp.where(positive, 1 / xp.where(positive, z, 1), 0).astype(z.dtype, copy=False)

    def erf(self, x):
        """The error function, element-wise (GELU's derivative); NumPy has none."""
        return _numpy_erf(x).astype(x.dtype)

    def conv(self, x, weight, part, *, strides, pads, dilations, group, out_spatial):
        """Conv of ``x`` with the ``part`` of ``weight`` (a Weight), no bias."""
        return kernels.conv(self.xp, x, weight.part(part), strides, pads, dilations, group,
                            out_spatial)

    def conv_transpose(self, signal, weight, part, *, strides, pads, dilations, group, in_spatial):
        return kernels.conv_transpose(self.xp, signal, weight.part(part), strides, pads, dilations,
                                      group, in_spatial)

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


class CpuBackend(ArrayBackend):
    """NumPy arrays; the linear rule's convolutions run on onnxruntime's CPU kernels, and the
    recording computes the normalisers and max-pool winners."""

    name = "cpu"
    records_derived = True

    def __init__(self):
        super().__init__(np)
        self._convolutions = OrtConvolutions()
        self._thread_pools = ThreadpoolController()

    def safe_reciprocal(self, z):
        return np.divide(1, z, out=z, where=z > 0)   # where z == 0 it stays 0

    @contextlib.contextmanager
    def computing(self):
        """As the base class's, and NumPy's BLAS runs on one thread meanwhile: its idle threads
        spin-wait for a while after each call and take the cores that onnxruntime's next kernel
        needs (measured: the recording after a walk took 103 ms instead of 61 ms on ResNet-50)."""
        with super().computing(), self._thread_pools.limit(limits=1, user_api="blas"):
            yield

    def conv(self, x, weight, part, *, strides, pads, dilations, group, out_spatial):
        return self._convolutions.conv(x, weight, part, strides, pads, dilations, group)

    def conv_transpose(self, signal, weight, part, *, strides, pads, dilations, group, in_spatial):
        result = self._convolutions.conv_transpose(signal, weight, part, strides, pads, dilations,
                                                   group, in_spatial)
        if result is None:  # a geometry ConvTranspose cannot express
            return super().conv_transpose(signal, weight, part, strides=strides, pads=pads,
                                          dilations=dilations, group=group, in_spatial=in_spatial)
        return result


class CupyBackend(ArrayBackend):
    """CuPy arrays on one NVIDIA GPU. The recording runs on onnxruntime's CUDA provider and hands
    its outputs over through DLPack, without a copy; the rules run unchanged on CuPy, the
    convolutions as one cuBLAS GEMM per kernel tap; only the maps come back to the host."""

    records_derived = True

    def __init__(self, device_id: int):
        import cupy

        super().__init__(cupy)
        self.device_id = device_id
        self.name = f"cuda:{device_id}"
        self._device = cupy.cuda.Device(device_id)
        self.onnxruntime_providers = (("CUDAExecutionProvider", {"device_id": device_id}),
                                      "CPUExecutionProvider")
        self.binding_device = ("cuda", device_id)

    def asarray(self, value):
        with self._device:
            return super().asarray(value)

    def to_host(self, value) -> np.ndarray:
        return self.xp.asnumpy(value)

    def synchronize(self) -> None:
        self._device.synchronize()

    @contextlib.contextmanager
    def computing(self):
        with super().computing(), self._device:     # CuPy allocates on this device meanwhile
            yield

    def erf(self, x):
        from cupyx.scipy.special import erf
        return erf(x)

    def from_onnxruntime(self, value):
        """A CuPy array sharing the memory of an onnxruntime OrtValue on this GPU."""
        return self.xp.from_dlpack(value)


_numpy_erf = np.frompyfunc(math.erf, 1, 1)


def cuda_unavailable(device_id: int = 0) -> Optional[str]:
    """Why the CUDA backend cannot run on ``device_id``, or None if it can."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install -e \".[gpu]\", see README)"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # CUDARuntimeError without a driver
        count = 0
    if count == 0:
        return "CuPy sees no CUDA device"
    if device_id >= count:
        return f"there is no CUDA device {device_id}; this machine has {count} (0 to {count - 1})"
    import onnxruntime
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
            return ("onnxruntime and onnxruntime-gpu are both installed and one hides the other: "
                    "pip uninstall -y onnxruntime onnxruntime-gpu, then install onnxruntime-gpu "
                    "alone (see README)")
        return ("onnxruntime has no CUDAExecutionProvider: install onnxruntime-gpu in place of "
                "onnxruntime (see README)")
    return None


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def backend_for(device: str) -> ArrayBackend:
    """``"cpu"``: NumPy, with onnxruntime's convolutions and the derived quantities recorded.
    ``"numpy"``: NumPy with exbp's own kernels (the CuPy backend's convolutions and window
    kernels), computing Z and the max-pool winners in the rules rather than in the recording —
    slower, and a second path for the oracle tests. ``"cuda"`` /
    ``"cuda:N"``: CuPy on GPU N. ``"auto"``: ``"cuda"`` when it can run, else ``"cpu"``."""
    if device == "cpu":
        return CpuBackend()
    if device == "numpy":
        return ArrayBackend(np)
    if device == "auto":
        return CupyBackend(0) if cuda_unavailable(0) is None else CpuBackend()
    match = re.fullmatch(r"cuda(?::(\d+))?", device) if isinstance(device, str) else None
    if match is None:
        raise ExbpError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    device_id = int(match.group(1) or 0)
    reason = cuda_unavailable(device_id)
    if reason:
        raise ExbpError(f"device {device!r} is not available: {reason}; use device='cpu'")
    return CupyBackend(device_id)
