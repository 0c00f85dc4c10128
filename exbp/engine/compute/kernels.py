"""Window kernels written once against an array namespace ``xp`` (NumPy or CuPy).

Convolution, its transpose, window sums and window arg-max are all a loop over the kernel's taps:
for tap ``t`` the inputs it reads form one strided slice of the padded input, of the output's
spatial shape. Forward ops read that slice; transposed ops add into it. Each tap is one matmul over
channels (per group), which maps onto BLAS/cuBLAS without an im2col copy of the whole input.

Shapes: the spatial axes are the last ones, after any leading axes (the signal carries one per
target before the batch axis), and channels come just before them; ``pads`` is ONNX's (begin_1, ..., begin_n, end_1, ..., end_n);
``out_spatial`` is the output's spatial shape, taken from the recorded output so that ``ceil_mode``
and ``auto_pad`` need no re-derivation here.
"""

from __future__ import annotations

from itertools import product
from typing import Sequence


def tap_slices(kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
               out_spatial: Sequence[int]):
    """Yield (tap index, slices into the padded input's spatial axes) for every kernel tap."""
    for index, tap in enumerate(product(*(range(k) for k in kernel))):
        yield index, tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                           for t, d, s, o in zip(tap, dilations, strides, out_spatial))


def padded_extent(in_spatial, pads, kernel, strides, dilations, out_spatial):
    """Padded spatial shape covering every window (ceil_mode windows may run past the end pad)."""
    n = len(in_spatial)
    return tuple(max(in_spatial[i] + pads[i] + pads[n + i], (out_spatial[i] - 1) * strides[i]
                     + (kernel[i] - 1) * dilations[i] + 1) for i in range(n))


def pad_input(xp, x, pads, extent, value=0.0):
    n = len(extent)
    if all(p == 0 for p in pads) and tuple(x.shape[-n:]) == tuple(extent):
        return x
    out = xp.full(x.shape[:-n] + tuple(extent), value, dtype=x.dtype)
    out[(...,) + _interior(x.shape[-n:], pads)] = x
    return out


def _interior(in_spatial, pads):
    n = len(in_spatial)
    return tuple(slice(pads[i], pads[i] + in_spatial[i]) for i in range(n))


def crop_padding(padded, in_spatial, pads):
    return padded[(...,) + _interior(in_spatial, pads)]


def spatial(x, n):
    return tuple(x.shape[len(x.shape) - n:])


def conv(xp, x, weight, strides, pads, dilations, group, out_spatial):
    """ONNX Conv without bias: x (..., C, *S), weight (O, C/group, *k) -> (..., O, *out_spatial)."""
    kernel = weight.shape[2:]
    n = len(kernel)
    leading, channels = x.shape[:-n - 1], x.shape[-n - 1]
    out_channels = weight.shape[0]
    extent = padded_extent(spatial(x, n), pads, kernel, strides, dilations, out_spatial)
    padded = pad_input(xp, x, pads, extent)
    per_tap = _grouped_taps(weight, group)                  # (taps, G, O/G, C/G)
    positions = _size(out_spatial)
    out = xp.zeros(leading + (group, out_channels // group, positions), dtype=x.dtype)
    for index, slices in tap_slices(kernel, strides, dilations, out_spatial):
        window = padded[(...,) + slices].reshape(leading + (group, channels // group, positions))
        out += xp.matmul(per_tap[index], window)
    return out.reshape(leading + (out_channels,) + tuple(out_spatial))


def conv_transpose(xp, signal, weight, strides, pads, dilations, group, in_spatial):
    """Transpose of :func:`conv` (its vector-Jacobian product): (..., O, *o) -> (..., C, *in_spatial)."""
    kernel = weight.shape[2:]
    n = len(kernel)
    leading, out_channels = signal.shape[:-n - 1], signal.shape[-n - 1]
    out_spatial = spatial(signal, n)
    channels = weight.shape[1] * group
    extent = padded_extent(in_spatial, pads, kernel, strides, dilations, out_spatial)
    per_tap = xp.swapaxes(_grouped_taps(weight, group), -1, -2)   # (taps, G, C/G, O/G)
    grouped = signal.reshape(leading + (group, out_channels // group, _size(out_spatial)))
    padded = xp.zeros(leading + (channels,) + tuple(extent), dtype=signal.dtype)
    for index, slices in tap_slices(kernel, strides, dilations, out_spatial):
        contribution = xp.matmul(per_tap[index], grouped)
        padded[(...,) + slices] += contribution.reshape(leading + (channels,) + tuple(out_spatial))
    return crop_padding(padded, in_spatial, pads)


def flipped_weight(xp, weight, group):
    """The weight whose convolution is a stride-1 convolution's transpose: (O, C/group, *k) ->
    (C, O/group, *k), the channel axes swapped within each group and every spatial axis
    reversed."""
    out_channels, per_group = weight.shape[:2]
    kernel = tuple(weight.shape[2:])
    n = len(kernel)
    grouped = weight.reshape((group, out_channels // group, per_group) + kernel)
    swapped = xp.transpose(grouped, (0, 2, 1) + tuple(range(3, 3 + n)))
    return swapped[(Ellipsis,) + (slice(None, None, -1),) * n].reshape(
        (group * per_group, out_channels // group) + kernel)


def transpose_as_conv_pads(kernel, strides, pads, dilations):
    """The pads of the convolution with :func:`flipped_weight` that is the transpose of a
    convolution of this geometry, or None where there is none (a stride above 1, or pads larger
    than the dilated kernel)."""
    if any(s != 1 for s in strides):
        return None
    n = len(kernel)
    flipped = [d * (k - 1) - p for d, k, p in zip(tuple(dilations) * 2, tuple(kernel) * 2, pads)]
    return flipped if all(p >= 0 for p in flipped) and len(flipped) == 2 * n else None


def _grouped_taps(weight, group):
    out_channels, per_group = weight.shape[:2]
    taps = _size(weight.shape[2:])
    by_tap = weight.reshape(out_channels, per_group, taps).transpose(2, 0, 1)
    return by_tap.reshape(taps, group, out_channels // group, per_group)


def window_sum(xp, x, kernel, strides, pads, dilations, out_spatial):
    """Sum of each pooling window (padding counts as zero): (..., *S) -> (..., *out_spatial)."""
    n = len(kernel)
    extent = padded_extent(spatial(x, n), pads, kernel, strides, dilations, out_spatial)
    padded = pad_input(xp, x, pads, extent)
    out = xp.zeros(x.shape[:-n] + tuple(out_spatial), dtype=x.dtype)
    for _, slices in tap_slices(kernel, strides, dilations, out_spatial):
        out += padded[(...,) + slices]
    return out


def window_sum_transpose(xp, signal, kernel, strides, pads, dilations, in_spatial):
    """Transpose of :func:`window_sum`: every input receives the sum of its windows' signal."""
    n = len(kernel)
    out_spatial = spatial(signal, n)
    extent = padded_extent(in_spatial, pads, kernel, strides, dilations, out_spatial)
    padded = xp.zeros(signal.shape[:-n] + tuple(extent), dtype=signal.dtype)
    for _, slices in tap_slices(kernel, strides, dilations, out_spatial):
        padded[(...,) + slices] += signal
    return crop_padding(padded, in_spatial, pads)


def window_argmax(xp, x, kernel, strides, pads, dilations, out_spatial):
    """Index of each window's first maximum, counting taps in row-major order (= input order)."""
    n = len(kernel)
    extent = padded_extent(spatial(x, n), pads, kernel, strides, dilations, out_spatial)
    padded = pad_input(xp, x, pads, extent, value=-xp.inf)
    best = xp.full(x.shape[:-n] + tuple(out_spatial), -xp.inf, dtype=x.dtype)
    winner = xp.zeros(best.shape, dtype=xp.int32)
    for index, slices in tap_slices(kernel, strides, dilations, out_spatial):
        window = padded[(...,) + slices]
        better = window > best          # strict: an equal later value keeps the first winner
        best = xp.where(better, window, best)
        winner = xp.where(better, index, winner)
    return winner


def route_to_winners(xp, signal, winner, kernel, strides, pads, dilations, in_spatial):
    """Send each output's whole signal to its window's winning input; ``winner`` broadcasts
    against ``signal`` (the signal has an extra leading target axis)."""
    n = len(kernel)
    out_spatial = spatial(signal, n)
    extent = padded_extent(in_spatial, pads, kernel, strides, dilations, out_spatial)
    padded = xp.zeros(signal.shape[:-n] + tuple(extent), dtype=signal.dtype)
    for index, slices in tap_slices(kernel, strides, dilations, out_spatial):
        padded[(...,) + slices] += xp.where(winner == index, signal, 0)
    return crop_padding(padded, in_spatial, pads)


def _size(shape) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total
