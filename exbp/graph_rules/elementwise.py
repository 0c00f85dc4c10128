"""Element-wise ops: the signal passes through unchanged, ``P_in = P_out``.

Activation functions are monotone gates on a single input; Excitation Backprop routes through them
as Caffe's implementation does (LRN included). A BatchNormalization or an arithmetic op with a
constant that canonicalisation could not fold is an affine map per element, passed through as
TorchRay does; an Add of a constant is a bias, never a split.

Adding a pass-through op is its name in one of the registrations below, the one that states its
sign: always ≥ 0, ≥ 0 when its input is, or unknown — and its derivative in :data:`DERIVATIVES`.

The comparison methods (docs/method.md §9): the gradient multiplies the signal by the op's
derivative at the recorded input, ``g_in = g ⊙ f'(x)``; deconvnet and guided backprop change only
the ReLU (``Relu``, or ``Max(x, 0)`` as jax2onnx writes it): deconvnet passes the signal's positive
part whatever the input, ``g_in = g⁺``, guided backprop its positive part where the input is
positive, ``g_in = g⁺ ⊙ [x > 0]``; every other op as the gradient. LRP passes relevance through
element-wise activations unchanged, and treats an unfolded BatchNormalization and an arithmetic op
with a constant as the affine maps they are (:mod:`.relevance`).
"""

from __future__ import annotations

import math

from .broadcasting import unbroadcast
from .layouts import CHANNELS_FIRST
from .registry import (GRADIENT_KINDS, Need, Propagation, Recorded, Role, Variant,
                       activation_inputs, always_non_negative, constant_inputs_refusal, for_kinds,
                       keeps_sign_of, refused, rule, shape_of_first_input, values_of)
from .relevance import relevance_of


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


def pass_through_rule(node, tensors, signals, receivers):
    return [signals[0]]


# ---- derivatives, for the gradient kinds ------------------------------------------------------

def _sigmoid(xp, x):
    return 1 / (1 + xp.exp(-x))


def _clip_bounds(node, tensors):
    """(low, high) of a Clip, from its attributes (before opset 11) or constant inputs."""
    bounds = [node.attrs.get("min"), node.attrs.get("max")]
    for index in (1, 2):
        if len(node.inputs) > index and node.inputs[index]:
            bounds[index - 1] = float(tensors.constant(node.inputs[index]))
    return (-math.inf if bounds[0] is None else bounds[0],
            math.inf if bounds[1] is None else bounds[1])


def _clip_derivative(xp, x, node, tensors):
    """1 strictly inside the bounds (PyTorch's hardtanh, which ReLU6 is), else 0."""
    low, high = _clip_bounds(node, tensors)
    return (x > low) & (x < high)


def _gelu_derivative(xp, x, node, tensors):
    if node.attrs.get("approximate", "none") == "tanh":
        c = math.sqrt(2 / math.pi)
        t = xp.tanh(c * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    cdf = 0.5 * (1 + tensors.kernels.erf(x / math.sqrt(2)))
    return cdf + x * xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _mish_derivative(xp, x, node, tensors):
    t = xp.tanh(xp.logaddexp(0, x))
    return t + x * _sigmoid(xp, x) * (1 - t * t)


def _selu_derivative(xp, x, node, tensors):
    alpha, gamma = node.attrs["alpha"], node.attrs["gamma"]
    return gamma * xp.where(x > 0, 1.0, alpha * xp.exp(x))


def _hard_sigmoid_derivative(xp, x, node, tensors):
    alpha, beta = node.attrs["alpha"], node.attrs["beta"]
    inner = alpha * x + beta
    return xp.where((inner > 0) & (inner < 1), alpha, 0.0)


# f'(x) of each activation, as a function of (xp, x, node, tensors); attributes with spec defaults
DERIVATIVES = {
    "Relu": lambda xp, x, node, tensors: x > 0,
    "LeakyRelu": lambda xp, x, node, tensors: xp.where(x > 0, 1.0, node.attrs["alpha"]),
    "PRelu": lambda xp, x, node, tensors: xp.where(x > 0, 1.0, tensors.value(node.inputs[1])),
    "Elu": lambda xp, x, node, tensors: xp.where(x > 0, 1.0, node.attrs["alpha"] * xp.exp(x)),
    "Selu": _selu_derivative,
    "Celu": lambda xp, x, node, tensors: xp.where(x > 0, 1.0, xp.exp(x / node.attrs["alpha"])),
    "Gelu": _gelu_derivative,
    "Mish": _mish_derivative,
    "ThresholdedRelu": lambda xp, x, node, tensors: x > node.attrs["alpha"],
    "HardSwish": lambda xp, x, node, tensors: xp.where(x < -3, 0.0, xp.where(x > 3, 1.0, x / 3 + 0.5)),
    "HardSigmoid": _hard_sigmoid_derivative,
    "Sigmoid": lambda xp, x, node, tensors: _sigmoid(xp, x) * (1 - _sigmoid(xp, x)),
    "Softplus": lambda xp, x, node, tensors: _sigmoid(xp, x),
    "Softsign": lambda xp, x, node, tensors: 1 / (1 + xp.abs(x)) ** 2,
    "Tanh": lambda xp, x, node, tensors: 1 - xp.tanh(x) ** 2,
    "Clip": _clip_derivative,
}


def gradient_rule(node, tensors, signals, receivers):
    """``g ⊙ f'(x)`` at the recorded input."""
    x = tensors.value(node.inputs[0])
    derivative = DERIVATIVES[node.op_type](tensors.xp, x, node, tensors)
    return [signals[0] * derivative.astype(signals[0].dtype)]


def rectified_rule(keep_mask: bool):
    """A ReLU's backward for deconvnet (``g⁺``) and guided backprop (``g⁺ ⊙ [x > 0]``); ``x`` is
    the activation input (a Max's other operand is its constant 0)."""
    def backward(node, tensors, signals, receivers):
        positive = tensors.xp.maximum(signals[0], 0)
        if not keep_mask:
            return [unbroadcast(positive, tensors.shape(node.inputs[i])) for i in receivers]
        return [unbroadcast(positive * (tensors.value(node.inputs[i]) > 0), tensors.shape(node.inputs[i]))
                for i in receivers]
    return backward


_GRADIENT = Variant(gradient_rule, needs=values_of(0))
_PASS = Variant(pass_through_rule)
_ACTIVATION = {**for_kinds(GRADIENT_KINDS, _GRADIENT), Propagation.LRP: _PASS}
_RELU = {**_ACTIVATION,
         Propagation.DECONVNET: Variant(rectified_rule(keep_mask=False), needs=shape_of_first_input),
         Propagation.GUIDED: Variant(rectified_rule(keep_mask=True), needs=values_of(0))}
_LRN = {**for_kinds(GRADIENT_KINDS, refused(
    "LRN has no gradient rule in exbp (its derivative couples every channel of its window)")),
    Propagation.LRP: _PASS}


def batchnorm_gradient_rule(node, tensors, signals, receivers):
    """An unfolded BatchNormalization (inference mode) scales each channel by γ/√(σ² + ε)."""
    xp = tensors.xp
    scale, _, _, variance = (tensors.value(name) for name in node.inputs[1:5])
    per_channel = scale / xp.sqrt(variance + node.attrs["epsilon"])
    rank = len(tensors.shape(node.inputs[0]))
    return [signals[0] * per_channel.reshape((1, -1) + (1,) * (rank - 2))]


_BATCHNORM_GRADIENT = Variant(batchnorm_gradient_rule, needs=lambda node, graph: (
    Need(Recorded.SHAPE, node.inputs[0]),), refusal=constant_inputs_refusal(1, 2, 3, 4))
_BATCHNORM = {**for_kinds(GRADIENT_KINDS, _BATCHNORM_GRADIENT),
              Propagation.LRP: relevance_of(_BATCHNORM_GRADIENT)}
_BOUNDED_GRADIENT = Variant(gradient_rule, needs=values_of(0), refusal=constant_inputs_refusal(1, 2))

rule("Relu", rectifier=lambda node, graph: True, sign=always_non_negative, variants=_RELU)(pass_through_rule)
rule("Sigmoid", "Softplus", "HardSigmoid", sign=always_non_negative, variants=_ACTIVATION)(pass_through_rule)
rule("Identity", "Dropout", "Cast", role=Role.SAME_VALUES, sign=keeps_sign_of(0),
     every_propagation=True)(pass_through_rule)
rule("LRN", sign=keeps_sign_of(0), variants=_LRN, **CHANNELS_FIRST)(pass_through_rule)
rule("Softsign", sign=keeps_sign_of(0), variants=_ACTIVATION)(pass_through_rule)
rule("Clip", sign=_clip_sign, rectifier=_clip_rectifies,
     variants={**for_kinds(GRADIENT_KINDS, _BOUNDED_GRADIENT), Propagation.LRP: _PASS})(pass_through_rule)
rule("LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "Mish", "ThresholdedRelu", "HardSwish", "Tanh",
     variants=_ACTIVATION)(pass_through_rule)
rule("PRelu", variants={**for_kinds(GRADIENT_KINDS, Variant(
    gradient_rule, needs=values_of(0), refusal=constant_inputs_refusal(1))),
    Propagation.LRP: _PASS})(pass_through_rule)
rule("BatchNormalization", variants=_BATCHNORM)(pass_through_rule)


def pass_to_receivers(node, tensors, signals, receivers):
    """The whole signal to each receiving input (there is one), summed over broadcast axes."""
    return [unbroadcast(signals[0], tensors.shape(node.inputs[i])) for i in receivers]


def receiver_shapes(signal_inputs):
    """``needs``: the shapes of the inputs ``signal_inputs`` names (to undo broadcasting)."""
    def needs(node, graph):
        return tuple(Need(Recorded.SHAPE, node.inputs[i]) for i in signal_inputs(node, graph))
    return needs


def receiver_values(signal_inputs):
    """``needs``: the values and shapes of the inputs ``signal_inputs`` names."""
    def needs(node, graph):
        return tuple(Need(kind, node.inputs[i]) for i in signal_inputs(node, graph)
                     for kind in (Recorded.VALUE, Recorded.SHAPE))
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


def constant_operand_gradient(node, tensors, signals, receivers):
    """x − c passes the gradient, x / c divides it by c."""
    signal = signals[0]
    if node.op_type == "Div":
        signal = signal / tensors.value(node.inputs[1])
    return pass_to_receivers(node, tensors, [signal], receivers)


_OPERAND_GRADIENT = Variant(constant_operand_gradient, needs=receiver_shapes(_leading_activation))


@rule("Sub", "Div", signal_inputs=_leading_activation,
      needs=receiver_shapes(_leading_activation), refusal=_operand_refusal,
      variants={**for_kinds(GRADIENT_KINDS, _OPERAND_GRADIENT),
                Propagation.LRP: relevance_of(_OPERAND_GRADIENT, _leading_activation)})
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


def bound_gradient_rule(node, tensors, signals, receivers):
    """The gradient goes where the activation is the maximum (Max) or minimum (Min)."""
    xp = tensors.xp
    (index,) = receivers
    x = tensors.value(node.inputs[index])
    bounds = [tensors.value(name) for i, name in enumerate(node.inputs) if name and i != index]
    if node.op_type == "Max":
        mask = x > _reduced(xp.maximum, bounds)
    else:
        mask = x < _reduced(xp.minimum, bounds)
    return [unbroadcast(signals[0] * mask, tensors.shape(node.inputs[index]))]


def _reduced(combine, arrays):
    result = arrays[0]
    for array in arrays[1:]:
        result = combine(result, array)
    return result


def _is_relu(node, tensors) -> bool:
    """``Max(x, 0)``: a ReLU, which deconvnet and guided backprop treat as one."""
    constants = [tensors.constant(name) for name in node.inputs if name and tensors.is_constant(name)]
    return node.op_type == "Max" and all(not value.any() for value in constants)


def bound_rectified_rule(keep_mask: bool):
    """Deconvnet's or guided backprop's ReLU where the op is ``Max(x, 0)``, else the gradient."""
    rectified = rectified_rule(keep_mask)

    def backward(node, tensors, signals, receivers):
        chosen = rectified if _is_relu(node, tensors) else bound_gradient_rule
        return chosen(node, tensors, signals, receivers)
    return backward


_BOUND_NEEDS = receiver_values(activation_inputs)


# ReLU and ReLU6 as jax2onnx writes them: Max(x, 0), then Min(·, 6)
@rule("Max", "Min", signal_inputs=activation_inputs, needs=receiver_shapes(activation_inputs),
      refusal=_bound_refusal, sign=_bound_sign,
      rectifier=lambda node, graph: node.op_type == "Max" and _bound(node, graph) == 0,
      variants={Propagation.GRADIENT: Variant(bound_gradient_rule, needs=_BOUND_NEEDS),
                Propagation.DECONVNET: Variant(bound_rectified_rule(False), needs=_BOUND_NEEDS),
                Propagation.GUIDED: Variant(bound_rectified_rule(True), needs=_BOUND_NEEDS),
                Propagation.LRP: Variant(pass_to_receivers, needs=receiver_shapes(activation_inputs))})
def bound_rule(node, tensors, signals, receivers):
    return pass_to_receivers(node, tensors, signals, receivers)
