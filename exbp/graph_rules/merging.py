"""Ops that merge activations: Add/Sum (residual connections) and Mul (gates).

Add/Sum of activations shares each output's signal among the inputs by positive contribution,

    P_k = P · x_k⁺ / Σ_m x_m⁺        (0 where the sum is 0)

which equals Caffe's final code and TorchRay's ``x_k / Σ x_m`` when every input is ≥ 0, and unlike
them stays non-negative (TorchRay gives NaN, its issue #18) when a branch is negative. Constant
operands are biases and receive nothing; with a single activation the signal passes through.

Mul of two activations is a gate (squeeze-and-excitation, SiLU written as ``x·sigmoid(x)``): all of
the signal goes to the input that is not the gate. The gate is the one input whose values the
graph bounds to [-1, 1]: the output of a Sigmoid, HardSigmoid or Tanh (Mish's
``x·tanh(softplus(x))``), or of a Clip, after constant scalings and shifts and moves — Keras's hard
sigmoid is ``relu6(x + 3) / 6``, a Clip to [0, 6] then a Mul by 1/6. A ReLU6 activation, bounded
to [0, 6], is no gate. Mul by a constant passes through.

The comparison methods (docs/method.md §9): the gradient of an Add goes whole to every activation;
LRP-ε shares an Add's relevance by contribution, ``R_k = x_k · R / (Σ_m x_m + ε·sign)``, a
constant operand (a bias) absorbing its share. The gradient of a Mul follows the product rule, each
activation receiving the signal times the other operand, the gate included; LRP passes a Mul's
relevance to the non-gate input, as Excitation Backprop does (the gate is the product's weight).
"""

from __future__ import annotations

from .broadcasting import unbroadcast
from .elementwise import pass_to_receivers, receiver_shapes
from .registry import (GRADIENT_KINDS, Need, Propagation, Recorded, Role, Variant, activation_inputs,
                       entry_for, for_kinds, keeps_sign_of, never_refused, rule)
from .relevance import relevance_of

BOUNDED_OPS = {"Sigmoid": (0.0, 1.0), "HardSigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0)}
GATE_RANGE = (-1.0, 1.0)


def _split_needs(node, graph):
    """The activations' shapes, and their values where there are several to share among."""
    activations = activation_inputs(node, graph)
    values = tuple(Need(Recorded.VALUE, node.inputs[i]) for i in activations) if len(activations) > 1 else ()
    return values + receiver_shapes(activation_inputs)(node, graph)


_ADD_GRADIENT = Variant(pass_to_receivers, needs=receiver_shapes(activation_inputs))


def _all_activations(node, graph) -> bool:
    """``shares_by_sign``: an Add or Sum of activations only (a constant operand is a bias, and a
    lone activation passes its whole signal through)."""
    return len(activation_inputs(node, graph)) == len([name for name in node.inputs if name]) > 1


@rule("Add", "Sum", signal_inputs=activation_inputs, needs=_split_needs, sign=keeps_sign_of(),
      shares_by_sign=_all_activations,
      variants={**for_kinds(GRADIENT_KINDS, _ADD_GRADIENT),
                Propagation.LRP: relevance_of(_ADD_GRADIENT, activation_inputs)})
def add_rule(node, tensors, signals, receivers):
    activations = [i for i, name in enumerate(node.inputs) if name and not tensors.is_constant(name)]
    if len(activations) == 1:
        return pass_to_receivers(node, tensors, signals, receivers)
    xp, reciprocal = tensors.xp, tensors.kernels.safe_reciprocal
    values = {i: tensors.value(node.inputs[i]) for i in activations}
    positive = {i: xp.maximum(values[i], 0) for i in activations}
    scaled = signals[0] * reciprocal(sum(positive.values()))
    if (not any(tensors.may_be_negative(node.inputs[i]) for i in activations)
            or not tensors.negatives_carry_signal(node.outputs[0])):
        shares = {i: scaled * positive[i] for i in receivers}
    else:   # where the sum is negative, its signal goes to the negative contributions (§3.3)
        negative = {i: xp.minimum(values[i], 0) for i in activations}
        scaled_negative = signals[0] * reciprocal(-sum(negative.values()))
        output_negative = sum(values.values()) < 0
        shares = {i: xp.where(output_negative, scaled_negative * -negative[i], scaled * positive[i])
                  for i in receivers}
    return [unbroadcast(shares[i], tensors.shape(node.inputs[i])) for i in receivers]


def value_range(graph, name: str, depth: int = 8):
    """(low, high) that the graph bounds ``name``'s values to, or None: the bounded ops' ranges,
    carried through Clip, scalar constant Mul/Div/Add/Sub and ops that only move values."""
    node = graph.producer.get(name)
    if node is None or depth == 0:
        return None
    if node.op_type in BOUNDED_OPS:
        return BOUNDED_OPS[node.op_type]
    entry = entry_for(node)
    if entry is not None and entry.role is Role.SAME_VALUES:
        return value_range(graph, node.inputs[0], depth - 1)
    if node.op_type == "Clip":
        low, high = (_scalar(graph, node.inputs[i]) if len(node.inputs) > i and node.inputs[i]
                     else node.attrs.get(key) for i, key in ((1, "min"), (2, "max")))
        inner = value_range(graph, node.inputs[0], depth - 1) or (-float("inf"), float("inf"))
        low = inner[0] if low is None else max(low, inner[0])
        high = inner[1] if high is None else min(high, inner[1])
        return (low, high) if high < float("inf") and low > -float("inf") else None
    if node.op_type in ("Mul", "Div", "Add", "Sub") and len(node.inputs) == 2:
        first, second = (_scalar(graph, operand) for operand in node.inputs)
        if first is None and second is not None:
            c, operand = second, node.inputs[0]
        elif second is None and first is not None and node.op_type in ("Mul", "Add"):
            c, operand = first, node.inputs[1]
        else:
            return None
        inner = value_range(graph, operand, depth - 1)
        if inner is None or (node.op_type == "Div" and c == 0):
            return None
        apply = {"Mul": lambda v: v * c, "Div": lambda v: v / c, "Add": lambda v: v + c,
                 "Sub": lambda v: v - c}[node.op_type]
        ends = sorted(apply(v) for v in inner)
        return ends[0], ends[1]
    return None


def _scalar(graph, name):
    value = graph.constant(name) if name else None
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _is_gate(graph, name: str) -> bool:
    bounds = value_range(graph, name)
    slack = 1e-6       # a float32 1/6 times 6 is a little over 1
    return bounds is not None and GATE_RANGE[0] - slack <= bounds[0] and bounds[1] <= GATE_RANGE[1] + slack


def _non_gate_input(node, graph):
    activations = activation_inputs(node, graph)
    if len(activations) < 2:
        return activations
    non_gates = tuple(i for i in activations if not _is_gate(graph, node.inputs[i]))
    return non_gates if len(non_gates) == 1 else ()


def _mul_refusal(node, graph):
    if len(activation_inputs(node, graph)) > 1 and not _non_gate_input(node, graph):
        return ("Mul of two run-time tensors is supported only as a gate, where exactly one input "
                "is bounded to [-1, 1] (the output of Sigmoid, HardSigmoid, Tanh, or of a Clip "
                "after constant scaling)")
    return None


def mul_rule(node, tensors, signals, receivers):
    return pass_to_receivers(node, tensors, signals, receivers)


def mul_gradient_rule(node, tensors, signals, receivers):
    """The product rule: each activation's gradient is the signal times the other operand."""
    return [unbroadcast(signals[0] * tensors.value(node.inputs[1 - i]), tensors.shape(node.inputs[i]))
            for i in receivers]


def _product_needs(node, graph):
    """The other operand's value and the shape of each activation operand."""
    return tuple(need for i in activation_inputs(node, graph) for need in (
        Need(Recorded.VALUE, node.inputs[1 - i]), Need(Recorded.SHAPE, node.inputs[i])))


_MUL_GRADIENT = Variant(mul_gradient_rule, needs=_product_needs, signal_inputs=activation_inputs,
                        refusal=never_refused)

rule("Mul", signal_inputs=_non_gate_input, refusal=_mul_refusal,
     needs=receiver_shapes(_non_gate_input), sign=keeps_sign_of(),
     variants={**for_kinds(GRADIENT_KINDS, _MUL_GRADIENT),
               Propagation.LRP: Variant(mul_rule, needs=receiver_shapes(_non_gate_input))})(mul_rule)
