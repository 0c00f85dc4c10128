"""The graph backend: the rules' array namespace and kernels, writing ONNX nodes (``exbp compile``).

Its ``xp`` is :class:`~exbp.engine.compute.graph_arrays.GraphNamespace`; its kernels write each
window operation as the ONNX op that computes it:

* a convolution with W⁺ or W⁻ is a Conv, its transpose a ConvTranspose with the same weight part
  or, at stride 1, the Conv with that weight flipped, which onnxruntime runs faster (W⁺ =
  Max(W, 0), W⁻ = Min(W, 0) and the flip are nodes over the model's own initializer, which
  onnxruntime folds into constants when it loads the model);
* a window sum is a depthwise Conv with a kernel of ones, its transpose the ConvTranspose;
* a max pooling's winners, where the compiled graph cannot take the rule's derived quantity (a
  MaxPool twin's Indices, routed by an adding ScatterElements from opset 16: see
  :class:`~exbp.engine.compiling.CompiledTensors`), are an ArgMax over its windows' inputs laid
  side by side, one strided Slice of the input (padded with −∞) per kernel tap — the first
  maximum in row-major order, as the eager kernels choose; the routing is a ConvTranspose of the
  signal, masked per tap, with a one-hot kernel per tap.

Signals carry leading axes (targets, batch) before the tensor's own channels; the kernels fold
them into ONNX's single batch axis and back. Transposed outputs are written over the whole extent
the windows cover, then cropped to the input's size, so every geometry (``ceil_mode``, strides
larger than the kernel) needs no output_padding.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import kernels as array_kernels
from .backends import ArrayBackend
from .graph_arrays import GraphBuilder, GraphNamespace, SymbolicArray, constant


class GraphBackend(ArrayBackend):
    name = "onnx"
    records_derived = False

    def __init__(self, builder: GraphBuilder, named_values=frozenset()):
        """``named_values``: the model's own tensors (initializers and node outputs), which a
        constant of the same name reads rather than copying."""
        super().__init__(GraphNamespace(builder))
        self.builder = builder
        self._named_values = frozenset(named_values)

    def asarray(self, value):
        return self.xp.asarray(value)

    def constant(self, name: str, host: np.ndarray):
        if name in self._named_values:
            array = SymbolicArray(self.builder, name, host.shape, host.dtype)
        else:
            array = constant(self.builder, host)
        return array.astype(np.float32) if host.dtype.kind == "f" else array

    def to_host(self, value):
        raise TypeError("a compiled graph's values exist only when the graph runs")

    def computing(self):
        return contextlib.nullcontext()

    def safe_reciprocal(self, z):
        """1/z where z > 0, else 0 (z ≥ 0), with arithmetic alone — onnxruntime's comparisons and
        Where run at a third of the speed of its Mul, Min and Max: ``min(z·2¹²⁶, 1)`` is 1 for
        every normal z > 0 and 0 at z = 0, and ``max(z, tiny)`` keeps the division finite."""
        tiny = np.finfo(np.float32).tiny
        return self.xp.minimum(z * np.float32(2.0 ** 126), 1) / self.xp.maximum(z, tiny)

    def erf(self, x):
        return x._unary("Erf")

    # ---- windows ---------------------------------------------------------------------------

    def conv(self, x, weight, part, *, strides, pads, dilations, group, out_spatial):
        w = weight.part(part)
        return _windowed(self.builder, "Conv", x, w, w.shape[0], out_spatial, strides=strides,
                         pads=pads, dilations=dilations, group=group)

    def conv_transpose(self, signal, weight, part, *, strides, pads, dilations, group, in_spatial):
        """At stride 1, the Conv with the flipped weight, which onnxruntime runs faster than its
        ConvTranspose (measured: ResNet-50's layer4 transposes 6.6 ms as ConvTranspose, 4.5 ms
        as Conv); at larger strides a ConvTranspose (spreading the signal out with zeros for a
        Conv costs more, in onnxruntime's Pad, than the ConvTranspose)."""
        w = weight.part(part)
        flipped_pads = array_kernels.transpose_as_conv_pads(tuple(w.shape[2:]), strides, pads, dilations)
        if flipped_pads is not None:
            flipped = array_kernels.flipped_weight(self.xp, w, group)
            return _windowed(self.builder, "Conv", signal, flipped, flipped.shape[0], in_spatial,
                             pads=flipped_pads, dilations=dilations, group=group)
        return _transposed(self.builder, signal, w, w.shape[1] * group, in_spatial, strides=strides,
                           pads=pads, dilations=dilations, group=group)

    def window_sum(self, x, kernel, *, strides, pads, dilations, out_spatial):
        channels = x.shape[-len(kernel) - 1]
        ones = constant(self.builder, np.ones((channels, 1) + tuple(kernel), np.float32))
        return _windowed(self.builder, "Conv", x, ones, channels, out_spatial, strides=strides,
                         pads=_reaching(x.shape[-len(kernel):], pads, kernel, strides, dilations,
                                        out_spatial), dilations=dilations, group=channels)

    def window_sum_transpose(self, signal, kernel, *, strides, pads, dilations, in_spatial):
        channels = signal.shape[-len(kernel) - 1]
        ones = constant(self.builder, np.ones((channels, 1) + tuple(kernel), np.float32))
        return _transposed(self.builder, signal, ones, channels, in_spatial, strides=strides,
                           pads=pads, dilations=dilations, group=channels)

    def window_argmax(self, x, kernel, *, strides, pads, dilations, out_spatial):
        """(N, C, *out) int64: the tap of each window's first maximum, taps in row-major order —
        each tap's inputs a strided slice of the input padded with −∞, the taps stacked."""
        n = len(kernel)
        in_spatial = tuple(x.shape[-n:])
        reaching = _reaching(in_spatial, pads, kernel, strides, dilations, out_spatial)
        padded = x
        if any(reaching):
            extent = tuple(b + i + e for b, i, e in zip(reaching[:n], in_spatial, reaching[n:]))
            padding = [0] * (x.ndim - n) + list(reaching[:n]) + [0] * (x.ndim - n) + list(reaching[n:])
            padded = SymbolicArray(self.builder, self.builder.pad(x.name, padding, -np.inf),
                                   x.shape[:-n] + extent, x.dtype)
        taps = [padded[(Ellipsis,) + slices] for _, slices in
                array_kernels.tap_slices(kernel, strides, dilations, out_spatial)]
        return self.xp.argmax(self.xp.stack(taps, axis=x.ndim - n), axis=x.ndim - n)

    def route_to_winners(self, signal, winner, kernel, *, strides, pads, dilations, in_spatial):
        n = len(kernel)
        channels, out_spatial = signal.shape[-n - 1], tuple(signal.shape[-n:])
        taps = _tap_count(kernel)
        xp = self.xp
        tap_index = xp.arange(taps).reshape((taps,) + (1,) * n)
        chosen = (winner.reshape(winner.shape[:-n] + (1,) + out_spatial) == tap_index).astype(signal.dtype)
        per_tap = signal.reshape(signal.shape[:-n] + (1,) + out_spatial) * chosen
        by_tap = per_tap.reshape(signal.shape[:-n - 1] + (channels * taps,) + out_spatial)
        one_hot = constant(self.builder, _one_hot_taps(channels, kernel))
        return _transposed(self.builder, by_tap, one_hot, channels, in_spatial, strides=strides,
                           pads=pads, dilations=dilations, group=channels)


def _tap_count(kernel) -> int:
    return int(np.prod(kernel))


def _one_hot_taps(channels: int, kernel) -> np.ndarray:
    """(channels·taps, 1, *kernel): for each channel, a kernel per tap that reads that tap alone."""
    taps = _tap_count(kernel)
    one_hot = np.eye(taps, dtype=np.float32).reshape((taps, 1) + tuple(kernel))
    return np.tile(one_hot, (channels, 1) + (1,) * len(kernel))


def _reaching(in_spatial, pads, kernel, strides, dilations, out_spatial) -> tuple:
    """Pads whose end reaches every window (a ``ceil_mode`` window may run past the end pad)."""
    n = len(kernel)
    extent = array_kernels.padded_extent(tuple(in_spatial), pads, kernel, strides, dilations, out_spatial)
    return tuple(pads[:n]) + tuple(extent[i] - in_spatial[i] - pads[i] for i in range(n))


def _folded(x: SymbolicArray, n: int) -> SymbolicArray:
    """(..., C, *spatial) with the leading axes folded into one."""
    return x.reshape((-1,) + x.shape[-n - 1:])


def _windowed(builder, op_type, x, weight, out_channels, out_spatial, **attrs) -> SymbolicArray:
    n = len(out_spatial)
    folded = _folded(x, n)
    (name,) = builder.node(op_type, [folded.name, weight.name], **_listed(attrs))
    out = SymbolicArray(builder, name, (folded.shape[0], out_channels) + tuple(out_spatial), x.dtype)
    return out.reshape(x.shape[:-n - 1] + (out_channels,) + tuple(out_spatial))


def _transposed(builder, signal, weight, channels, in_spatial, *, strides, pads, dilations, group):
    """The ConvTranspose of ``signal`` (..., O, *out) onto (..., channels, *in_spatial): over the
    windows' whole extent, cropped by the begin pads, zeros past the extent."""
    n = len(in_spatial)
    kernel = tuple(weight.shape[2:])
    out_spatial = tuple(signal.shape[-n:])
    full = tuple((o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(out_spatial, strides, kernel, dilations))
    begins = tuple(pads[:n])
    ends = tuple(f - b - i for f, b, i in zip(full, begins, in_spatial))   # < 0: zeros to add
    crop = begins + tuple(max(e, 0) for e in ends)
    folded = _folded(signal, n)
    (name,) = builder.node("ConvTranspose", [folded.name, weight.name],
                           **_listed(dict(strides=strides, dilations=dilations, group=group, pads=crop)))
    cropped = tuple(f - b - max(e, 0) for f, b, e in zip(full, begins, ends))
    result = SymbolicArray(builder, name, (folded.shape[0], channels) + cropped, signal.dtype)
    if any(e < 0 for e in ends):
        result = SymbolicArray(builder, builder.pad(result.name, [0] * (n + 2) + [0, 0] + [max(-e, 0) for e in ends]),
                               (folded.shape[0], channels) + tuple(in_spatial), signal.dtype)
    return result.reshape(signal.shape[:-n - 1] + (channels,) + tuple(in_spatial))


def _listed(attrs: dict) -> dict:
    return {k: [int(v) for v in value] if isinstance(value, (tuple, list)) else value
            for k, value in attrs.items()}
