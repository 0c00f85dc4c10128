"""QuantizeLinear and DequantizeLinear on activations: the signal passes through, ``P_in = P_out``.

A QDQ-quantised model (onnxruntime's ``quantize_static`` with ``QuantFormat.QDQ``) writes every
quantised tensor ``x`` as ``DequantizeLinear(QuantizeLinear(x))``; its weights are
``DequantizeLinear`` of integer constants, which the constant folding turns into float weights when
the model is loaded. Canonicalisation removes the activations' pairs wherever their consumers read
only the dequantised tensor (docs/method.md §3.6); a pair it keeps (``x`` also read in float) is
walked by this rule, and the rules after it read the recorded, dequantised values.

The pair's output is ≥ 0 where its input is, and wherever its zero point is the lowest code of
its type: then every negative input quantises to 0 — the ReLU that onnxruntime's quantiser fuses
into the pair — and the QuantizeLinear is a rectifier.

For the comparison methods (docs/method.md §9) the pair passes the gradient and the relevance
through as well: the straight-through estimator of quantisation-aware training.
"""

from __future__ import annotations

import numpy as np
import onnx

from .layouts import first_input_layout
from .registry import Role, constant_inputs_refusal, rule


def _zero_point_is_lowest_code(node, graph) -> bool:
    if len(node.inputs) < 3 or not node.inputs[2]:   # no zero point: 0, of uint8 unless told
        return node.attrs.get("output_dtype", 0) in (0, onnx.TensorProto.UINT8)
    zero_point = graph.constant(node.inputs[2])
    if zero_point is None:
        return False
    return (zero_point.dtype.kind in "iu" and zero_point.size > 0
            and bool(np.all(zero_point == np.iinfo(zero_point.dtype).min)))


def _quantize_sign(node, graph, non_negative) -> bool:
    """Whether the value the code stands for is ≥ 0 (the codes themselves always are)."""
    return node.inputs[0] in non_negative or _zero_point_is_lowest_code(node, graph)


def _dequantize_sign(node, graph, non_negative) -> bool:
    """≥ 0 where it decodes a QuantizeLinear's codes that stand for values ≥ 0."""
    producer = graph.producer.get(node.inputs[0])
    return (producer is not None and producer.op_type == "QuantizeLinear"
            and node.inputs[0] in non_negative)


@rule("QuantizeLinear", sign=_quantize_sign, rectifier=_zero_point_is_lowest_code,
      refusal=constant_inputs_refusal(1, 2), role=Role.SAME_VALUES, layout=first_input_layout, every_propagation=True)
@rule("DequantizeLinear", sign=_dequantize_sign, refusal=constant_inputs_refusal(1, 2),
      role=Role.SAME_VALUES, layout=first_input_layout, every_propagation=True)
def quantization_pass_through(node, tensors, signals, receivers):
    return [signals[0]]
