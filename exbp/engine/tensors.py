"""What a rule reads: one run's recorded activations and the model's constants, on the backend."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from . import precompute
from .backends import ArrayBackend


class ConstantCache:
    """The model's constants as backend arrays, each moved once (on the CPU, the host array
    itself); the backend keeps their parts W⁺ and W⁻, since the same weights serve every call."""

    def __init__(self, backend: ArrayBackend, host_constants: Mapping[str, np.ndarray]):
        self.backend = backend
        self.host = host_constants
        self._values: dict[str, object] = {}

    def value(self, name: str):
        if name not in self._values:
            self._values[name] = self.backend.asarray(self.host[name])
        return self._values[name]

    def weight(self, name: str, part: str):
        """W⁺ ("positive") or W⁻ ("negative") of a constant, as a backend array."""
        return self.backend.weight_part(self.value(name), part)


class TensorStore:
    """The tensors of one run, as the rules see them (see :mod:`exbp.graph_rules.registry`)."""

    def __init__(self, constants: ConstantCache, values: Mapping[str, object],
                 shapes: Mapping[str, tuple], precomputed_for: Mapping[str, object] = {},
                 non_negative: frozenset = frozenset()):
        """``precomputed_for``: the node each recorded precomputed quantity belongs to;
        ``non_negative``: tensors that are ≥ 0 for every input."""
        self._constants = constants
        self._values = values
        self._shapes = shapes
        self._precomputed_for = precomputed_for
        self._non_negative = non_negative
        self.kernels = constants.backend
        self.xp = constants.backend.xp

    def is_constant(self, name: str) -> bool:
        return name in self._constants.host

    def value(self, name: str):
        if name in self._values:
            return self._values[name]
        return self._constants.value(name)

    def may_be_negative(self, name: str) -> bool:
        """False when ``name`` is ≥ 0 for every input (its sign needs no scan)."""
        return name not in self._non_negative

    def constant(self, name: str) -> np.ndarray:
        """A constant on the host, for small parameters (axes, pads, indices)."""
        return self._constants.host[name]

    def weight(self, name: str, part: str):
        return self._constants.weight(name, part)

    def precomputed(self, node, kind: str):
        """A quantity of :mod:`exbp.engine.precompute` recorded for exactly ``node`` (not, say,
        the classifier's dual, which shares its output), or None."""
        name = precompute.helper_name(node, kind)
        if self._precomputed_for.get(name) != node:
            return None
        return self._values.get(name)

    def shape(self, name: str) -> tuple:
        if name in self._shapes:
            return tuple(self._shapes[name])
        if name in self._values:
            return tuple(self._values[name].shape)
        return tuple(self._constants.host[name].shape)
