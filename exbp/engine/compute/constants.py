"""The model's constants, held once: on the host, on the backend, and the weights' parts.

Every weight exists once on the host (the canonical graph's arrays, which the recording sessions
also read in place). Its backend array and its parts W⁺ = max(W, 0) and W⁻ = min(W, 0) are made on
first use and kept, since the same weights serve every call. The classifier's dual (docs/method.md
§4) adds the negation of one weight, under its own name. A float16 model's constants stay float16
on the host (its recordings read them) and are float32 on the backend, where the walk computes.
"""

from __future__ import annotations

import threading
from typing import Mapping

import numpy as np

from ...graph_rules.onnx_form import POSITIVE, WHOLE


class Weight:
    """One constant on the backend, with its parts; kernels key what they build on ``name``."""

    def __init__(self, name: str, host: np.ndarray, backend):
        self.name, self.host = name, host
        self.value = backend.constant(name, host)
        self._xp = backend.xp
        self._parts: dict[str, object] = {}

    def part(self, part: str):
        """W⁺ (POSITIVE) or W⁻ (NEGATIVE) on the backend, computed once; W itself (WHOLE)."""
        if part == WHOLE:
            return self.value
        if part not in self._parts:
            xp = self._xp
            self._parts[part] = xp.maximum(self.value, 0) if part == POSITIVE else xp.minimum(self.value, 0)
        return self._parts[part]


class ConstantStore:
    def __init__(self, backend, host: Mapping[str, np.ndarray]):
        self.backend = backend
        self.host = dict(host)           # name -> host array; also what recordings read in place
        self._weights: dict[str, Weight] = {}
        self._lock = threading.Lock()

    def __contains__(self, name: str) -> bool:
        return name in self.host

    def weight(self, name: str) -> Weight:
        if name not in self._weights:
            with self._lock:
                if name not in self._weights:
                    self._weights[name] = Weight(name, self.host[name], self.backend)
        return self._weights[name]

    def value(self, name: str):
        """The constant as a backend array."""
        return self.weight(name).value

    def add_negation(self, negated: str, name: str) -> None:
        """``negated`` = −``name`` (the classifier's dual weight)."""
        with self._lock:
            if negated not in self.host:
                self.host[negated] = -self.host[name]
