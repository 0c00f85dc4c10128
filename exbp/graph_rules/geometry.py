"""Window geometry shared by Conv and the pooling ops: strides, dilations and explicit pads.

``auto_pad`` is resolved here from the input's spatial shape, as the ONNX spec defines it, so the
kernels only ever see explicit pads. Output sizes are not derived: the rules read them from the
signal, which has the recorded output's shape (this is what makes ``ceil_mode`` exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..engine.graph.model import Node


@dataclass(frozen=True)
class WindowGeometry:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]        # (begin_1, ..., begin_n, end_1, ..., end_n)
    dilations: tuple[int, ...]

    def as_kwargs(self) -> dict:
        return {"strides": self.strides, "pads": self.pads, "dilations": self.dilations}


def window_geometry(node: Node, kernel: Sequence[int], in_spatial: Sequence[int]) -> WindowGeometry:
    n = len(kernel)
    strides = tuple(node.attrs.get("strides") or (1,) * n)
    dilations = tuple(node.attrs.get("dilations") or (1,) * n)
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        totals = [max(0, (-(-size // stride) - 1) * stride + (k - 1) * d + 1 - size)
                  for size, stride, k, d in zip(in_spatial, strides, kernel, dilations)]
        small = [t // 2 for t in totals]
        large = [t - t // 2 for t in totals]
        pads = tuple(small + large) if auto_pad == "SAME_UPPER" else tuple(large + small)
    elif auto_pad == "VALID":
        pads = (0,) * (2 * n)
    else:
        pads = tuple(node.attrs.get("pads") or (0,) * (2 * n))
    return WindowGeometry(tuple(int(k) for k in kernel), strides, pads, dilations)
