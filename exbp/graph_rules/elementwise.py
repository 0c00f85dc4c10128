"""Element-wise ops: the signal passes through unchanged, ``P_in = P_out``.

Activation functions are monotone gates on a single input; Excitation Backprop routes through them
as Caffe's implementation does (LRN included). A BatchNormalization or an arithmetic op with a
constant that canonicalisation could not fold is an affine map per element, passed through as
TorchRay does; an Add of a constant is a bias, never a split.

Adding a pass-through op is its name in one of the registrations below, the one that states its
sign: always ≥ 0, ≥ 0 when its input is, or unknown.
"""

from __future__ import annotations

from .broadcasting import unbroadcast
from .layouts import CHANNELS_FIRST
from .registry import (Need, Recorded, Role, activation_inputs, always_non_negative, keeps_sign_of,
                       rule)


def _clip_sign(node, graph, non_negative) -> bool:
    """A Clip whose lower bound is ≥ 0 (ReLU6) is ≥ 0; the bound is an attribute before opset 11,
    an input from then on."""
    low = node.attrs.get("min")
    if low is None and len(node.inputs) > 1 and node.inputs[1]:
        value = graph.constant(node.inputs[1])
        low = None if value is None else float(value)
    return low is not None and low >= 0


def _clip_rectifies(node, graph) -> bool:
    return _clip_sign(node, graph, frozenset())


@rule("Relu", rectifier=lambda node, graph: True, sign=always_non_negative)
@rule("Sigmoid", "Softplus", "HardSigmoid", sign=always_non_negative)
@rule("Identity", "Dropout", "Cast", role=Role.SAME_VALUES, sign=keeps_sign_of(0))
@rule("LRN", sign=keeps_sign_of(0), **CHANNELS_FIRST)
@rule("Softsign", sign=keeps_sign_of(0))
@rule("Clip", sign=_clip_sign, rectifier=_clip_rectifies)
@rule("LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Mish", "ThresholdedRelu", "HardSwish",
      "Tanh", "BatchNormalization")
def pass_through_rule(node, tensors, signals, receivers):
    return [signals[0]]


def pass_to_receivers(node, tensors, signals, receivers):
    """The whole signal to each receiving input (there is one), summed over broadcast axes."""
    return [unbroadcast(signals[0], tensors.shape(node.inputs[i])) for i in receivers]


def receiver_shapes(signal_inputs):
    """``needs``: the shapes of the inputs ``signal_inputs`` names (to undo broadcasting)."""
    def needs(node, graph):
        return tuple(Need(Recorded.SHAPE, node.inputs[i]) for i in signal_inputs(node, graph))
    return needs


def _leading_activation(node, graph):
    return activation_inputs(node, graph)[:1]


def _operand_refusal(node, graph):
    activations = activation_inputs(node, graph)
    if len(activations) > 1:
        return f"{node.op_type} of two run-time tensors is not supported; one must be a constant"
    if activations and activations[0] != 0:
        return f"{node.op_type} with the run-time tensor as its second operand is not supported"
    return None


@rule("Sub", "Div", signal_inputs=_leading_activation,
      needs=receiver_shapes(_leading_activation), refusal=_operand_refusal)
def constant_operand_rule(node, tensors, signals, receivers):
    return pass_to_receivers(node, tensors, signals, receivers)


def _bound(node, graph):
    """The constant bound of a Max or Min (its lowest or highest value), or None."""
    values = [graph.constant(name) for name in node.inputs if name and graph.is_constant(name)]
    if not values or any(v is None or v.size == 0 for v in values):
        return None
    return (max if node.op_type == "Max" else min)(float(v.min() if node.op_type == "Max" else v.max())
                                                   for v in values)


def _bound_sign(node, graph, non_negative) -> bool:
    """Max(x, c) is ≥ 0 where c ≥ 0 or x is; Min(x, c) where both are."""
    bound = _bound(node, graph)
    x_non_negative = all(node.inputs[i] in non_negative for i in activation_inputs(node, graph))
    if node.op_type == "Max":
        return x_non_negative or (bound is not None and bound >= 0)
    return x_non_negative and bound is not None and bound >= 0


def _bound_refusal(node, graph):
    if len(activation_inputs(node, graph)) != 1:
        return f"{node.op_type} of several run-time tensors is not supported; all but one must be constants"
    return None


# ReLU and ReLU6 as jax2onnx writes them: Max(x, 0), then Min(·, 6)
@rule("Max", "Min", signal_inputs=activation_inputs, needs=receiver_shapes(activation_inputs),
      refusal=_bound_refusal, sign=_bound_sign,
      rectifier=lambda node, graph: node.op_type == "Max" and _bound(node, graph) == 0)
def bound_rule(node, tensors, signals, receivers):
    return pass_to_receivers(node, tensors, signals, receivers)
