"""The one table of Excitation Backprop rules, keyed by ONNX op type.

A rule is a pure function ``backward(node, tensors, signals, receivers)``:

* ``node`` — the canonical :class:`~exbp.engine.graph.Node` (attributes with the spec's defaults);
* ``tensors`` — the recorded activations and the model's constants as backend arrays
  (``tensors.value(name)``, ``tensors.shape(name)``, ``tensors.weight(name, part)``), and the
  backend (``tensors.xp``, the array namespace; ``tensors.kernels``, the window kernels);
* ``signals`` — the top-down signal P of each output, ``None`` where an output carries none. A
  signal has one leading axis more than its tensor: one row per target (and method);
* ``receivers`` — the indices of the inputs whose signal is wanted.

It returns the signals of those inputs, in the order of ``receivers``.

Plan-time questions are answered by the entry's other parts, all functions of (node, graph):
``signal_inputs`` (which inputs can receive signal), ``reads_values`` / ``reads_shapes`` (what the
recording must provide), ``refusal`` (why a configuration is unsupported, or None) and, for ops
with weights, ``weight_input`` (which input holds them; the classifier's dual negates it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..engine.graph import Graph, Node


def first_input(node: Node, graph: Graph) -> tuple[int, ...]:
    return (0,)


def nothing(node: Node, graph: Graph) -> tuple[str, ...]:
    return ()


def never_refused(node: Node, graph: Graph) -> Optional[str]:
    return None


def activation_inputs(node: Node, graph: Graph) -> tuple[int, ...]:
    """Inputs that are neither constants nor omitted."""
    return tuple(i for i, name in enumerate(node.inputs) if name and not graph.is_constant(name))


@dataclass(frozen=True)
class Rule:
    backward: Callable
    signal_inputs: Callable[[Node, Graph], Sequence[int]] = first_input
    reads_values: Callable[[Node, Graph], Sequence[str]] = nothing
    reads_shapes: Callable[[Node, Graph], Sequence[str]] = nothing
    refusal: Callable[[Node, Graph], Optional[str]] = never_refused
    weight_input: Optional[Callable[[Node, Graph], int]] = None


RULES: dict[str, Rule] = {}


def rule(*op_types: str, **parts) -> Callable:
    """Register ``backward`` as the rule of ``op_types``; ``parts`` fill the other Rule fields."""
    def register(backward: Callable) -> Callable:
        for op_type in op_types:
            if op_type in RULES:
                raise RuntimeError(f"two rules registered for {op_type}")
            RULES[op_type] = Rule(backward=backward, **parts)
        return backward
    return register


def rule_for(node: Node) -> Optional[Rule]:
    return RULES.get(node.op_type) if node.domain == "" else None


def supported_ops() -> list[str]:
    return sorted(RULES)
