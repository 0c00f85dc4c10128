"""What a rule reads: one run's recorded activations and the model's constants, on the backend
(see :mod:`exbp.graph_rules.registry`)."""

from __future__ import annotations

from typing import AbstractSet, Mapping

import numpy as np

from ...graph_rules import Recorded
from ..compute.constants import ConstantStore, Weight
from ..record.recorded import recorded_name


class TensorStore:
    def __init__(self, constants: ConstantStore, values: Mapping[str, object],
                 shapes: Mapping[str, tuple], derived_for: Mapping[str, object] = {},
                 non_negative: AbstractSet[str] = frozenset(),
                 no_negative_signal: AbstractSet[str] = frozenset()):
        """``derived_for``: the node each recorded derived quantity belongs to;
        ``non_negative``: tensors that are ≥ 0 for every input; ``no_negative_signal``: tensors
        whose negative values receive no signal (docs/method.md §3.1)."""
        self._constants = constants
        self._values = values
        self._shapes = shapes
        self._derived_for = derived_for
        self._non_negative = non_negative
        self._no_negative_signal = no_negative_signal
        self.kernels = constants.backend
        self.xp = constants.backend.xp

    def is_constant(self, name: str) -> bool:
        return name in self._constants

    def value(self, name: str):
        if name in self._values:
            return self._values[name]
        return self._constants.value(name)

    def may_be_negative(self, name: str) -> bool:
        """False when ``name`` is ≥ 0 for every input (its sign needs no scan)."""
        return name not in self._non_negative

    def holds_negatives(self, name: str) -> bool:
        """Whether ``name`` has negative values in this run: never where the sign analysis says
        it is ≥ 0; else its recorded values are scanned."""
        return self.may_be_negative(name) and bool(self.value(name).min() < 0)

    def negatives_carry_signal(self, name: str) -> bool:
        """False when ``name``'s negative values receive no signal: it feeds only rectifiers, or
        it is the logits or on the way down from them to the classifier, where the top signal
        starts at a class unit whatever the sign of its value."""
        return name not in self._no_negative_signal

    def constant(self, name: str) -> np.ndarray:
        """A constant on the host, for small parameters (axes, pads, indices)."""
        return self._constants.host[name]

    def weight(self, name: str) -> Weight:
        """A constant with its parts W⁺, W⁻, as the kernels take it."""
        return self._constants.weight(name)

    def recorded(self, node, kind: Recorded):
        """A derived quantity the recording computed for exactly ``node`` (not, say, for the
        classifier's dual, which shares its output), or None."""
        name = recorded_name(node, kind)
        if self._derived_for.get(name) != node:
            return None
        return self._values.get(name)

    def shape(self, name: str) -> tuple:
        if name in self._shapes:
            return tuple(self._shapes[name])
        if name in self._values:
            return tuple(self._values[name].shape)
        return tuple(self._constants.host[name].shape)
