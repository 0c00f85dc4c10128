"""What a rule reads: one run's recorded activations and the model's constants, on the backend."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .backends import ArrayBackend


class ConstantCache:
    """The model's constants as backend arrays, each moved once; weight parts W⁺ and W⁻ are
    computed once and kept, since the same weights serve every call."""

    def __init__(self, backend: ArrayBackend, host_constants: Mapping[str, np.ndarray]):
        self.backend = backend
        self.host = host_constants
        self._values: dict[str, object] = {}
        self._parts: dict[tuple[str, str], object] = {}

    def value(self, name: str):
        if name not in self._values:
            self._values[name] = self.backend.asarray(self.host[name])
        return self._values[name]

    def weight(self, name: str, part: str):
        key = (name, part)
        if key not in self._parts:
            xp, weight = self.backend.xp, self.value(name)
            self._parts[key] = xp.maximum(weight, 0) if part == "positive" else xp.minimum(weight, 0)
        return self._parts[key]


class TensorStore:
    """The tensors of one run, as the rules see them (see :mod:`exbp.graph_rules.registry`)."""

    def __init__(self, constants: ConstantCache, values: Mapping[str, object],
                 shapes: Mapping[str, tuple]):
        self._constants = constants
        self._values = values
        self._shapes = shapes
        self.kernels = constants.backend
        self.xp = constants.backend.xp

    def is_constant(self, name: str) -> bool:
        return name in self._constants.host

    def value(self, name: str):
        if name in self._values:
            return self._values[name]
        return self._constants.value(name)

    def constant(self, name: str) -> np.ndarray:
        """A constant on the host, for small parameters (axes, pads, indices)."""
        return self._constants.host[name]

    def weight(self, name: str, part: str):
        return self._constants.weight(name, part)

    def shape(self, name: str) -> tuple:
        if name in self._shapes:
            return tuple(self._shapes[name])
        if name in self._values:
            return tuple(self._values[name].shape)
        return tuple(self._constants.host[name].shape)
