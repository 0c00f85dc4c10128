"""The one table of ops exbp knows, keyed by ONNX op type; each entry declares everything about
its op, and the engine asks the table rather than keeping op-type lists of its own.

An entry (:class:`Rule`) holds:

* ``backward(node, tensors, signals, receivers)`` — the Excitation Backprop rule (docs/method.md
  §3). ``node`` is the canonical :class:`~exbp.engine.graph.model.Node` (attributes with the
  spec's defaults, parameters already in their one form, see ``parameters``); ``tensors`` the
  recorded activations and the model's constants as backend arrays (``tensors.value(name)``,
  ``tensors.shape(name)``, ``tensors.weight(name, part)``, ``tensors.recorded(node, kind)``,
  ``tensors.holds_negatives(name)``) and
  the backend (``tensors.xp``, the array namespace; ``tensors.kernels``, the window kernels);
  ``signals`` the top-down signal P of each output, ``None`` where an output carries none, with one
  leading axis more than its tensor (a row per target and method); ``receivers`` the inputs whose
  signal is wanted. It returns their signals, in the order of ``receivers``. An entry without
  ``backward`` is an op exbp knows only for its sign (below) and refuses to walk through.
* ``signal_inputs(node, graph)`` — which inputs can receive signal.
* ``needs(node, graph)`` — what the recording must provide: :class:`Need`\\ s of a
  :class:`Recorded` kind, ``VALUE`` (an activation) or ``SHAPE`` (only its shape).
* ``derived`` — quantities of the activations alone (never of the target) that the recording
  session computes beside them, at onnxruntime's speed: ``{kind: build}`` where ``build(node,
  input_non_negative)`` returns the ONNX nodes computing it, the arrays they read, or None.
* ``sign(node, graph, non_negative)`` — whether the output is ≥ 0 for every input, given the set of
  tensors already known to be (the static sign analysis, docs/method.md §1.2).
* ``shares_by_sign(node, graph)`` — whether the rule gives an input's negative values signal only where the output's
  value is negative (the sign-consistent Add, data movement): behind such an op whose output's
  negative values carry no signal, the input's carry none either (§3.3).
* ``rectifier(node, graph)`` — whether the output is 0 wherever the input is negative (ReLU): the
  negative values of a tensor that feeds only rectifiers carry no signal, and rules that share
  negative values by sign (§3.1, §3.3) skip that work for it.
* ``refusal(node, graph)`` — why a configuration cannot be walked, or None.
* ``weight_input(node, graph)`` — for ops with weights, which input holds them (the classifier's
  dual negates it, §4).
* ``parameters`` — the op's parameters in one form whatever the opset (``by_opset``): where an
  opset moved an attribute into an input (Pad, Slice, ReduceMean...), the canonicalisation reads it
  here once and the backward sees ``node.attrs`` only.
* ``layout(node, graph, layouts)`` — the output's :class:`~exbp.graph_rules.layouts.Layout` (which
  axis is the batch, the channels, each spatial axis) from the inputs' (docs/method.md §5.1); by
  default the activations' layouts merged as broadcasting does. ``channels_first`` — the op reads
  its first input as (N, C, spatial…) (convolutions, pooling): how the input's layout is read from
  what the graph does with it.
* ``role`` — ``MAP`` (the default: its output may carry a map), ``NO_MAP`` (its output should not:
  a Pad's border is padding, not image), ``SAME_VALUES`` (the output holds its input's values in
  another shape, so the logits may be looked for through it) or ``OUTPUT_NORMALISATION`` (a final
  Softmax: the walk starts at its input).

* ``variants`` — the op's backward for the other *propagation kinds* (:class:`Propagation`, the
  comparison methods of docs/method.md §9): ``{kind: Variant}``, each written in the family module
  beside the Excitation Backprop rule. A :class:`Variant` holds its ``backward`` (the same call
  shape), its ``needs`` and ``derived``, and, where they differ from the rule's, its
  ``signal_inputs`` and ``refusal``; :func:`refused` is a variant that says why the op cannot be
  walked for that kind. ``every_propagation``: the rule's own backward holds for every kind (ops
  that only move values, max pooling's winner routing), so it serves them all.
* ``averaged_axes(node, graph)`` — for an op that averages its input over some axes (global average
  pooling, ReduceMean), those axes; CAM looks for such a pooling below the classifier.

A rule has no separate ONNX form: ``exbp compile`` runs the same ``backward`` against a
graph-building namespace (docs/method.md §10), so a rule must compute with ``tensors.xp`` and the
kernels alone and never branch on a value — ``tensors.holds_negatives(name)`` is the one question
about a run's values, which compiled graphs answer from the static sign analysis.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import AbstractSet, Callable, Mapping, Optional, Sequence

from ..engine.graph.model import Graph, Node
from .layouts import merged_layout


class Recorded(enum.Enum):
    """What a rule reads from one recording."""
    VALUE = "value"              # an activation
    SHAPE = "shape"              # only an activation's shape
    NORMALISER = "normaliser"    # a linear op's Z (§1), derived from the activations
    WINNERS = "winners"          # a max-pool's winning input indices, derived likewise


@dataclass(frozen=True)
class Need:
    kind: Recorded
    tensor: str


class Propagation(enum.Enum):
    """What travels down a walk (docs/method.md §9)."""
    EXCITATION = "excitation"    # winning probabilities, the rules of §1-§3
    GRADIENT = "gradient"        # the gradient of the top signal: vector-Jacobian products
    DECONVNET = "deconvnet"      # the gradient, a ReLU passing its signal's positive part
    GUIDED = "guided"            # the gradient, a ReLU passing its signal's positive part where x > 0
    LRP = "lrp"                  # relevance, the ε rule


GRADIENT_KINDS = (Propagation.GRADIENT, Propagation.DECONVNET, Propagation.GUIDED)


class Role(enum.Enum):
    MAP = "map"
    NO_MAP = "no map"
    SAME_VALUES = "same values"
    OUTPUT_NORMALISATION = "output normalisation"


def first_input(node: Node, graph: Graph) -> tuple[int, ...]:
    return (0,)


def nothing(node: Node, graph: Graph) -> tuple:
    return ()


def never_refused(node: Node, graph: Graph) -> Optional[str]:
    return None


def activation_inputs(node: Node, graph: Graph) -> tuple[int, ...]:
    """Inputs that are neither constants nor omitted."""
    return tuple(i for i, name in enumerate(node.inputs) if name and not graph.is_constant(name))


def values_of(*indices: int) -> Callable[[Node, Graph], tuple[Need, ...]]:
    """``needs``: the values of the inputs at ``indices``."""
    def needs(node: Node, graph: Graph) -> tuple[Need, ...]:
        return tuple(Need(Recorded.VALUE, node.inputs[i]) for i in indices if i < len(node.inputs))
    return needs


def shape_of_first_input(node: Node, graph: Graph) -> tuple[Need, ...]:
    return (Need(Recorded.SHAPE, node.inputs[0]),)


# ---- sign declarations --------------------------------------------------------------------------

SignRule = Callable[[Node, Graph, AbstractSet[str]], bool]


def never_non_negative(node: Node, graph: Graph, non_negative: AbstractSet[str]) -> bool:
    return False


def always_non_negative(node: Node, graph: Graph, non_negative: AbstractSet[str]) -> bool:
    return True


def keeps_sign_of(*indices: int) -> SignRule:
    """≥ 0 when the inputs at ``indices`` (all present inputs when none are given) are."""
    def sign(node: Node, graph: Graph, non_negative: AbstractSet[str]) -> bool:
        chosen = [name for i, name in enumerate(node.inputs) if name and (not indices or i in indices)]
        return all(name in non_negative for name in chosen)
    return sign


# ---- parameters by opset ------------------------------------------------------------------------

def by_opset(variants: Mapping[int, Callable[[Node, Graph], Optional[dict]]]):
    """``parameters`` that read the op's parameters with the reader of the newest opset in
    ``variants`` that is ≤ the model's; a reader returns the attributes to set, or None where its
    inputs are computed at run time (the rule's refusal says so)."""
    ordered = sorted(variants.items())

    def parameters(node: Node, graph: Graph) -> Optional[dict]:
        reader = None
        for since, candidate in ordered:
            if since <= graph.opset:
                reader = candidate
        return reader(node, graph) if reader else None
    return parameters


def constant_inputs_refusal(*indices: int):
    """``refusal``: the inputs at ``indices`` must be constants."""
    def refusal(node: Node, graph: Graph) -> Optional[str]:
        for index in indices:
            if len(node.inputs) > index and node.inputs[index] and not graph.is_constant(node.inputs[index]):
                return (f"{node.op_type} with input {index} ({node.inputs[index]!r}) computed at run "
                        "time is not supported; it must be a constant")
        return None
    return refusal


@dataclass(frozen=True)
class Variant:
    """An op's backward for one propagation kind; ``signal_inputs`` and ``refusal`` None mean the
    rule's own. ``backward`` None: the op is refused for that kind, ``refusal`` saying why."""
    backward: Optional[Callable]
    needs: Callable[[Node, Graph], Sequence[Need]] = nothing
    signal_inputs: Optional[Callable[[Node, Graph], Sequence[int]]] = None
    refusal: Optional[Callable[[Node, Graph], Optional[str]]] = None
    derived: Mapping[Recorded, Callable] = field(default_factory=dict)


def refused(reason: str) -> Variant:
    """A variant that refuses the op for its kind, saying ``reason``."""
    return Variant(None, refusal=lambda node, graph: reason)


def for_kinds(kinds: Sequence[Propagation], variant: Variant) -> dict:
    """``variants``: the same variant for each of ``kinds``."""
    return {kind: variant for kind in kinds}


@dataclass(frozen=True)
class Rule:
    backward: Optional[Callable] = None
    signal_inputs: Callable[[Node, Graph], Sequence[int]] = first_input
    needs: Callable[[Node, Graph], Sequence[Need]] = nothing
    derived: Mapping[Recorded, Callable] = field(default_factory=dict)
    sign: SignRule = never_non_negative
    rectifier: Callable[[Node, Graph], bool] = lambda node, graph: False
    shares_by_sign: Callable[[Node, Graph], bool] = lambda node, graph: False
    refusal: Callable[[Node, Graph], Optional[str]] = never_refused
    weight_input: Optional[Callable[[Node, Graph], int]] = None
    parameters: Optional[Callable[[Node, Graph], Optional[dict]]] = None
    layout: Callable = merged_layout
    channels_first: bool = False
    role: Role = Role.MAP
    variants: Mapping[Propagation, Variant] = field(default_factory=dict)
    every_propagation: bool = False
    averaged_axes: Optional[Callable[[Node, Graph], Optional[tuple[int, ...]]]] = None

    def variant(self, kind: Propagation) -> Optional[Variant]:
        """The backward for ``kind`` with the rule's defaults filled in; None where the op has none
        (an entry without a backward has none for any kind)."""
        if self.backward is None:
            return None
        if kind is Propagation.EXCITATION or self.every_propagation:
            return Variant(self.backward, self.needs, self.signal_inputs, self.refusal, self.derived)
        variant = self.variants.get(kind)
        if variant is None:
            return None
        return replace(variant, signal_inputs=variant.signal_inputs or self.signal_inputs,
                       refusal=variant.refusal or self.refusal)


RULES: dict[str, Rule] = {}


def rule(*op_types: str, **parts) -> Callable:
    """Register ``backward`` as the rule of ``op_types``; ``parts`` fill the other Rule fields."""
    def register(backward: Callable) -> Callable:
        declare(*op_types, backward=backward, **parts)
        return backward
    return register


def declare(*op_types: str, **parts) -> None:
    """Register an entry; without ``backward``, an op known for its sign or role only."""
    for op_type in op_types:
        if op_type in RULES:
            raise RuntimeError(f"two entries registered for {op_type}")
        RULES[op_type] = Rule(**parts)


def entry_for(node: Node) -> Optional[Rule]:
    """The table's entry for ``node``, with or without a backward rule."""
    return RULES.get(node.op_type) if node.domain == "" else None


def rule_for(node: Node) -> Optional[Rule]:
    """The entry for ``node`` if it has an Excitation Backprop rule."""
    entry = entry_for(node)
    return entry if entry is not None and entry.backward is not None else None


def negatives_carry_signal(graph: Graph, name: str, known: Optional[dict] = None) -> bool:
    """Whether signal can reach ``name``'s negative values (docs/method.md §3.3): not where every
    consumer is a rectifier (a ReLU), which makes them 0, or shares by sign (a residual Add, a
    Reshape) into outputs whose negative values receive none either — ResNet's projection before
    its Add and ReLU. ``known`` memoises answers across calls."""
    known = {} if known is None else known
    if name not in known:
        consumers = graph.consumers_of(name)
        known[name] = name == graph.output_name or not consumers or not all(
            _stops_negative_signal(node, graph, known) for node in consumers)
    return known[name]


def _stops_negative_signal(node: Node, graph: Graph, known: dict) -> bool:
    entry = entry_for(node)
    if entry is None:
        return False
    return entry.rectifier(node, graph) or (entry.shares_by_sign(node, graph) and not any(
        negatives_carry_signal(graph, name, known) for name in node.outputs if name))


def supported_ops(kind: Propagation = Propagation.EXCITATION) -> list[str]:
    """The op types a walk of ``kind`` can pass (in some configuration), sorted."""
    return sorted(op for op, entry in RULES.items()
                  if (variant := entry.variant(kind)) is not None and variant.backward is not None)
