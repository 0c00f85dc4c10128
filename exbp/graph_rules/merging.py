"""Ops that merge activations: Add/Sum (residual connections) and Mul (gates).

Add/Sum of activations shares each output's signal among the inputs by positive contribution,

    P_k = P · x_k⁺ / Σ_m x_m⁺        (0 where the sum is 0)

which equals Caffe's final code and TorchRay's ``x_k / Σ x_m`` when every input is ≥ 0, and unlike
them stays non-negative (TorchRay gives NaN, its issue #18) when a branch is negative. Constant
operands are biases and receive nothing; with a single activation the signal passes through.

Mul of two activations is a gate (squeeze-and-excitation, SiLU written as ``x·sigmoid(x)``): all of
the signal goes to the input that is not the gate, the gate being the output of a Sigmoid,
HardSigmoid or Tanh (Mish's ``x·tanh(softplus(x))``). Mul by a constant passes through.
"""

from __future__ import annotations

from .broadcasting import unbroadcast
from .elementwise import pass_to_receivers, receiver_shapes
from .registry import Need, Recorded, activation_inputs, keeps_sign_of, rule

GATE_OPS = ("Sigmoid", "HardSigmoid", "Tanh")


def _split_needs(node, graph):
    """The activations' shapes, and their values where there are several to share among."""
    activations = activation_inputs(node, graph)
    values = tuple(Need(Recorded.VALUE, node.inputs[i]) for i in activations) if len(activations) > 1 else ()
    return values + receiver_shapes(activation_inputs)(node, graph)


@rule("Add", "Sum", signal_inputs=activation_inputs, needs=_split_needs, sign=keeps_sign_of())
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


def _non_gate_input(node, graph):
    activations = activation_inputs(node, graph)
    if len(activations) < 2:
        return activations
    non_gates = tuple(i for i in activations
                      if getattr(graph.producer.get(node.inputs[i]), "op_type", None) not in GATE_OPS)
    return non_gates if len(non_gates) == 1 else ()


def _mul_refusal(node, graph):
    if len(activation_inputs(node, graph)) > 1 and not _non_gate_input(node, graph):
        return ("Mul of two run-time tensors is supported only as a gate, where exactly one input "
                f"is the output of {', '.join(GATE_OPS)}")
    return None


@rule("Mul", signal_inputs=_non_gate_input, refusal=_mul_refusal,
      needs=receiver_shapes(_non_gate_input), sign=keeps_sign_of())
def mul_rule(node, tensors, signals, receivers):
    return pass_to_receivers(node, tensors, signals, receivers)
