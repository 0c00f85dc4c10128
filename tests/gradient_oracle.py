"""An independent backward for the comparison methods (docs/method.md §9): dense local Jacobians
from finite differences, in float64, and the methods' rules applied to them literally.

Nothing here imports exbp. Every op's Jacobian with respect to each of its activation inputs is
probed by central differences of the op alone, run by onnx's reference evaluator in float64 on
the recorded activations (data-movement ops and max pooling route by the base oracle's tracing and
window loops, which is their Jacobian). Along the chain:

* ``gradient``: ``g_in = Jᵀ g`` for every activation input (a gate's too);
* ``deconvnet``: at a ReLU ``g_in = g⁺``; ``guided``: ``g_in = g⁺ ⊙ [x > 0]``; else the gradient;
* ``lrp``: element-wise activations (and LayerNormalization, LRN, Max/Min by constants) pass the
  relevance on; routing ops route it; a gate Mul gives it to the non-gate operand; every other op,
  affine in its activation inputs, hands out ``R_in = x ⊙ Jᵀ (R / (z + ε·sign z))`` with ``z`` its
  recorded output (bias included) — a Conv whose only consumer is a BatchNormalization (or a Mul
  or Div by a constant) with ``J`` and ``z`` of the pair, as exbp folds them (docs/method.md §3.4).

:func:`input_jacobian` is a second, whole-model check: d logits / d input by finite differences of
the whole float64 model.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator

from oracle import (MOVEMENT, PASS_THROUGH, Oracle, _onnxruntime_intermediates, _single_node_model,
                    _sum_to_shape, attributes, conv_transpose_matrix, forward)

STEP = 1e-6
# the reference evaluator computes erf (and GELU through it) in float32: a wider, fourth-order
# stencil keeps its rounding out of the derivative
FLOAT32_OPS = {"Erf", "Gelu"}
EPSILON = 1e-6
LRP_PASS = (PASS_THROUGH - {"BatchNormalization"}) | {"Max", "Min"}


def jacobian(function, x: np.ndarray, step: float = STEP, stencil=((1, 0.5), (-1, -0.5))) -> np.ndarray:
    """(outputs, inputs) of ``function`` at ``x`` by finite differences: Σ weight·f(x + k·step)
    over the ``stencil``'s (k, weight), over ``step`` (central differences by default)."""
    flat = x.reshape(-1).astype(np.float64)
    columns = []
    for j in range(flat.size):
        total = 0.0
        for k, weight in stencil:
            moved = flat.copy()
            moved[j] += k * step
            total = total + weight * np.asarray(function(moved.reshape(x.shape)), np.float64)
        columns.append(np.reshape(total, -1) / step)
    return np.stack(columns, axis=1)


FOURTH_ORDER = ((2, -1 / 12), (1, 8 / 12), (-1, -8 / 12), (-2, 1 / 12))


def as_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model computing in float64: float initializers, Constant nodes and the input cast."""
    doubled = onnx.ModelProto()
    doubled.CopyFrom(model)
    graph = doubled.graph
    for i, tensor in enumerate(graph.initializer):
        value = numpy_helper.to_array(tensor)
        if value.dtype == np.float32:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(value.astype(np.float64), tensor.name))
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name == "value" and attribute.t.data_type == TensorProto.FLOAT:
                value = numpy_helper.to_array(attribute.t).astype(np.float64)
                attribute.t.CopyFrom(numpy_helper.from_array(value, attribute.t.name))
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.elem_type = TensorProto.DOUBLE
    del graph.value_info[:]
    return doubled


def input_jacobian(model: onnx.ModelProto, x: np.ndarray, output: str) -> np.ndarray:
    """d ``output`` / d input, (output size, input size), of the whole model in float64."""
    doubled = as_float64(model)
    if output != doubled.graph.output[0].name:
        doubled.graph.output[0].name = output   # the logits below a final Softmax
        for node in doubled.graph.node:
            if output in node.input:
                doubled.graph.node.remove(node)
    evaluator = ReferenceEvaluator(doubled)
    name = doubled.graph.input[0].name
    return jacobian(lambda v: evaluator.run(None, {name: v})[0], x.astype(np.float64))


class GradientOracle(Oracle):
    def signal(self, x, top, layer, kind="gradient"):
        """The signal of ``kind`` at ``layer`` (rows, *shape) for ``top`` (K, *logits shape)."""
        # LRP divides by the outputs z, where two float32 evaluations differing by 1e-7 would
        # decide where |z| is small: its activations are onnxruntime's, as exbp records them
        values = (_onnxruntime_intermediates(self.model, {self.graph.input[0].name: x.astype(np.float32)})
                  if kind == "lrp" else forward(self.model, x.astype(np.float32)))
        values = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in values.items()}
        values.update(self.model_constants)
        codes = {o for node in self.graph.node if node.op_type == "QuantizeLinear" for o in node.output}
        self.constants = {**self.model_constants,
                          **{k: v for k, v in values.items() if v.dtype.kind in "iub" and k not in codes}}
        self.kind, self.lost = kind, {}
        self.folded = self._batchnorm_scales(values) if kind == "lrp" else {}
        self.folded_outputs = {}
        for node in self.graph.node:
            producer = self.producer.get(node.input[0]) if node.input else None
            if producer is not None and producer.name in self.folded:
                self.folded_outputs[producer.name] = node.output[0]
        signals = {self.logits: np.asarray(top, dtype=np.float64)}
        for node in reversed(self.graph.node):
            outgoing = [signals.get(o) for o in node.output]
            if all(s is None for s in outgoing) or node.op_type == "Softmax":
                continue
            for name, signal in self._step(node, values, outgoing):
                signals[name] = signals[name] + signal if name in signals else signal
        return signals[layer]

    def _step(self, node, values, outgoing):
        op, signal = node.op_type, outgoing[0]
        acts = self._activations(node)
        if op in ("MaxPool", "GlobalMaxPool"):
            return [(node.input[0], self._max_pool(node, values, signal))]
        if op in MOVEMENT or op in ("Identity", "Dropout", "Cast"):
            return self._movement(node, values, outgoing)
        if op in ("QuantizeLinear", "DequantizeLinear"):     # the straight-through estimator
            return [(node.input[0], signal)]
        if op == "LayerNormalization" and self.kind != "lrp":  # statistics held (docs §9.1)
            x = values[node.input[0]]
            axes = tuple(range(attributes(node).get("axis", -1) % x.ndim, x.ndim))
            sigma = np.sqrt(x.var(axis=axes, keepdims=True) + attributes(node).get("epsilon", 1e-5))
            return [(node.input[0], signal * values[node.input[1]] / sigma)]
        relu = op == "Relu" or (op == "Max" and all(
            not np.any(self.constants[name]) for i, name in enumerate(node.input) if name and i not in acts))
        if relu and self.kind in ("deconvnet", "guided"):
            x = values[node.input[acts[0]]]
            positive = np.maximum(signal, 0)
            return [(node.input[acts[0]], _sum_to_shape(positive * (x > 0) if self.kind == "guided"
                                                        else positive, x.shape))]
        if self.kind == "lrp":
            if op in LRP_PASS or self._folded_into_conv(node) or (
                    op == "Mul" and len(acts) == 2):
                keep = [i for i in acts if not (op == "Mul" and self._is_gate(node.input[i]))]
                return [(node.input[keep[0]], _sum_to_shape(signal, values[node.input[keep[0]]].shape))]
            return [self._relevance(node, values, signal, i) for i in acts]
        return [(node.input[i], self._vjp(node, values, signal, i)) for i in acts]

    def _folded_into_conv(self, node):
        producer = self.producer.get(node.input[0]) if node.input else None
        return producer is not None and producer.name in self.folded

    def _local_jacobian(self, node, values, index):
        acts = {node.input[i]: values[node.input[i]] for i in self._activations(node)}
        model = _single_node_model(node, acts, self.constants, self.model)
        evaluator = ReferenceEvaluator(model)
        name = node.input[index]

        def function(v):
            return evaluator.run(None, {**acts, name: v})[0]
        if node.op_type == "ConvTranspose":   # linear; the evaluator's grouped ConvTranspose fails
            matrix = conv_transpose_matrix(node, values[name], values[node.output[0]],
                                           self.constants[node.input[1]])
        elif node.op_type in FLOAT32_OPS:
            matrix = jacobian(function, values[name], 1e-2, FOURTH_ORDER)
        else:
            matrix = jacobian(function, values[name])
        if node.name in self.folded:
            matrix = self.folded[node.name][:, None] * matrix
        return matrix

    def _vjp(self, node, values, signal, index):
        x = values[node.input[index]]
        matrix = self._local_jacobian(node, values, index)
        flat = signal.reshape(signal.shape[0], -1) @ matrix
        return flat.reshape((signal.shape[0],) + x.shape)

    def _relevance(self, node, values, signal, index):
        z = values[self.folded_outputs.get(node.name, node.output[0])]
        ratio = signal / (z + EPSILON * np.where(z >= 0, 1.0, -1.0))
        return node.input[index], self._vjp(node, values, ratio, index) * values[node.input[index]]
