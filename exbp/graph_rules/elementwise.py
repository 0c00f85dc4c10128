"""Element-wise ops: the signal passes through unchanged, ``P_in = P_out``.

Activation functions are monotone gates on a single input; Excitation Backprop routes through them
as Caffe's implementation does (LRN included). A BatchNormalization or an arithmetic op with a
constant that canonicalisation could not fold is an affine map per element, passed through as
TorchRay does; an Add of a constant is a bias, never a split.
"""

from __future__ import annotations

from .broadcasting import unbroadcast
from .registry import activation_inputs, rule

UNARY_PASS_THROUGH = (
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Softplus", "Mish",
    "ThresholdedRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Dropout",
    "Identity", "Cast", "LRN", "BatchNormalization",
)


@rule(*UNARY_PASS_THROUGH)
def pass_through_rule(node, tensors, signals, receivers):
    return [signals[0]]


def pass_to_receivers(node, tensors, signals, receivers):
    """The whole signal to each receiving input (there is one), summed over broadcast axes."""
    return [unbroadcast(signals[0], tensors.shape(node.inputs[i])) for i in receivers]


def _receiver_shapes(signal_inputs):
    def reads_shapes(node, graph):
        return tuple(node.inputs[i] for i in signal_inputs(node, graph))
    return reads_shapes


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
      reads_shapes=_receiver_shapes(_leading_activation), refusal=_operand_refusal)
def constant_operand_rule(node, tensors, signals, receivers):
    return pass_to_receivers(node, tensors, signals, receivers)
