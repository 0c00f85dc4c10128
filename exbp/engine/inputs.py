"""What the model takes as input, and the check of an array against it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import InputError


def looks_channels_last(shape) -> bool:
    """The guess from a shape alone, where nothing in the graph says (rank ≥ 3): channels last when
    only the last axis has 1 or 3 entries."""
    return len(shape) >= 3 and shape[-1] in (1, 3) and shape[1] not in (1, 3)


@dataclass(frozen=True)
class InputSpec:
    """The model's image input: its name, its declared shape (None for a dimension known only at
    run time) and, where the graph says so, that its channels come last."""
    name: str
    shape: tuple
    channels_last: bool = False

    @property
    def fixed_batch(self) -> Optional[int]:
        return self.shape[0] if self.shape else None

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        rank = len(self.shape)
        return tuple(range(1, rank - 1)) if self.channels_last else tuple(range(2, rank))

    def spatial(self, shape) -> tuple:
        """The spatial part of an input shape of this layout."""
        return tuple(shape[axis] for axis in self.spatial_axes)

    def described(self) -> str:
        """The declared shape with N for the batch and ? for unknown sizes: "(N, 3, 224, 224)"."""
        return "(" + ", ".join("N" if i == 0 else str(d if d is not None else "?")
                               for i, d in enumerate(self.shape)) + ")"

    def checked(self, x, backend):
        """``x`` as float32 after checking it fits: a NumPy array, or a CuPy array that stays on
        the GPU when the backend is CUDA (other backends bring it to the host)."""
        on_device = hasattr(x, "__cuda_array_interface__")
        if on_device and not hasattr(backend, "device_id"):
            x, on_device = x.get(), False
        xp = backend.xp if on_device else np
        try:
            x = xp.asarray(x)
        except Exception:
            raise InputError(f"the input must be an array, got {type(x).__name__}") from None
        if x.dtype.kind not in "fiu":
            raise InputError(f"the input must hold numbers, got dtype {x.dtype}")
        expected = self.shape
        if expected and (x.ndim != len(expected) or any(
                d is not None and i > 0 and d != s for i, (d, s) in enumerate(zip(expected, x.shape)))):
            raise InputError(f"the input has shape {tuple(x.shape)}; the model's input "
                             f"{self.name!r} takes {self.described()}: give an array of that shape")
        if x.shape[0] == 0:
            raise InputError("the input holds no images (batch size 0); give at least one")
        if not bool(xp.all(xp.isfinite(x))):
            raise InputError("the input contains NaN or infinite values; give finite numbers")
        return x.astype(xp.float32, copy=False)
