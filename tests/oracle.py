"""An independent Excitation Backprop for the tests: dense matrices and plain loops, in float64.

Nothing here imports exbp. Activations come from onnx's reference evaluator, not onnxruntime.
Every linear op becomes its explicit matrix M over the whole tensor (outputs × inputs), built from
the op's definition in the ONNX spec, and a layer's signal follows docs/method.md §1 literally:

    z_ij = M_ij x_j,   P_in_j = Σ_i z_ij⁺ / Σ_k z_ik⁺ · P_i      (0 where Σ_k z_ik⁺ = 0)

Max pooling loops over windows; data-movement ops are traced by running them on a tensor of
unique ids; a BatchNormalization that is a Conv's only consumer scales that Conv's matrix.

A LayerNormalization, its statistics held at their recorded values, is an affine map per element
and passes the signal through. A Mul of two activations is a gate: the signal goes to the operand
that is not computed by a squashing function (Sigmoid, HardSigmoid, Tanh, or Erf as in GELU's
``x · 0.5 · (1 + erf(x/√2))``), looking back through arithmetic with constants. Integer tensors
(shapes, indices, bounds computed from shapes) carry no signal and count as constants.
"""

from __future__ import annotations

from itertools import product

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

PASS_THROUGH = {"Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
                "Dropout", "Identity", "Cast", "LRN", "Elu", "Selu", "Celu", "Softplus", "Softsign",
                "Gelu", "Mish", "ThresholdedRelu", "QuantizeLinear", "DequantizeLinear",
                "LayerNormalization"}
SQUASHING = {"Sigmoid", "HardSigmoid", "Tanh", "Erf"}
MOVEMENT = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Pad", "Slice", "Gather",
            "Concat", "Split"}


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def forward(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor's value, from onnx's reference evaluator, or onnxruntime for the few models
    the evaluator cannot run (negative pads)."""
    feeds = {model.graph.input[0].name: x}
    try:
        results = ReferenceEvaluator(model).run(None, feeds, intermediate=True)
    except ValueError:
        return _onnxruntime_intermediates(model, feeds)
    return {k: np.asarray(v) for k, v in results.items() if k}


def _onnxruntime_intermediates(model, feeds):
    import onnxruntime

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    names = [o for node in model.graph.node for o in node.output if o]
    known = {o.name for o in exposed.graph.output}
    exposed.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
    session = onnxruntime.InferenceSession(exposed.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    values = dict(zip(outputs, session.run(outputs, feeds)))
    values.update(feeds)
    return values


def excite_dense(matrix, x, signal, negative=None):
    """docs/method.md §1 with an explicit matrix; signal (rows, outputs) -> ((rows, inputs), the mass
    per row that reaches outputs whose contributions of the sharing sign are all 0 and is lost).
    ``negative`` (§3.1): the outputs that share by their negative contributions (a negative
    output), as a boolean per output; None: none do."""
    z = matrix * x.reshape(-1)[None, :]
    shares = np.maximum(z, 0)
    if negative is not None:
        shares[negative] = np.maximum(-z[negative], 0)
    total = shares.sum(axis=1)
    scaled = np.where(total > 0, signal / np.where(total > 0, total, 1), 0)
    return scaled @ shares, signal[:, total == 0].sum(axis=1)


# ---- explicit matrices, from the ONNX definitions --------------------------------------------

def _explicit_pads(attrs, in_spatial, out_spatial, kernel, strides, dilations):
    n = len(in_spatial)
    mode = attrs.get("auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        begins = []
        for i in range(n):
            total = max((out_spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
                        - in_spatial[i], 0)
            begins.append(total // 2 if mode == "SAME_UPPER" else total - total // 2)
        return begins
    if mode == "VALID":
        return [0] * n
    return list(attrs.get("pads", [0] * 2 * n))[:n]


def window_inputs(attrs, in_spatial, out_spatial, kernel):
    """For each output position, the in-bounds input positions of its window, taps in order."""
    n = len(in_spatial)
    strides = attrs.get("strides", [1] * n)
    dilations = attrs.get("dilations", [1] * n)
    begins = _explicit_pads(attrs, in_spatial, out_spatial, kernel, strides, dilations)
    for out_position in product(*(range(o) for o in out_spatial)):
        taps = []
        for tap in product(*(range(k) for k in kernel)):
            position = tuple(out_position[i] * strides[i] - begins[i] + tap[i] * dilations[i]
                             for i in range(n))
            if all(0 <= position[i] < in_spatial[i] for i in range(n)):
                taps.append((tap, position))
        yield out_position, taps


def conv_matrix(node, x, out, weight):
    attrs = attributes(node)
    group = attrs.get("group", 1)
    index_in = np.arange(x.size).reshape(x.shape)
    index_out = np.arange(out.size).reshape(out.shape)
    matrix = np.zeros((out.size, x.size))
    per_group_out, per_group_in = weight.shape[0] // group, weight.shape[1]
    for out_position, taps in window_inputs(attrs, x.shape[2:], out.shape[2:], weight.shape[2:]):
        for tap, position in taps:
            for g in range(group):
                outs = slice(g * per_group_out, (g + 1) * per_group_out)
                ins = slice(g * per_group_in, (g + 1) * per_group_in)
                for n in range(x.shape[0]):
                    rows = index_out[(n, outs) + out_position]
                    columns = index_in[(n, ins) + position]
                    matrix[np.ix_(rows, columns)] += weight[(outs, slice(None)) + tap]
    return matrix


def conv_transpose_matrix(node, x, out, weight):
    """ONNX ConvTranspose with explicit pads: input position i, tap t adds x·w at output position
    i·stride − pad_begin + t·dilation (positions outside the output are cropped away)."""
    attrs = attributes(node)
    group = attrs.get("group", 1)
    n_spatial = x.ndim - 2
    strides = attrs.get("strides", [1] * n_spatial)
    dilations = attrs.get("dilations", [1] * n_spatial)
    begins = list(attrs.get("pads", [0] * 2 * n_spatial))[:n_spatial]
    per_group_in, per_group_out = weight.shape[0] // group, weight.shape[1]
    index_in = np.arange(x.size).reshape(x.shape)
    index_out = np.arange(out.size).reshape(out.shape)
    matrix = np.zeros((out.size, x.size))
    for position in product(*(range(d) for d in x.shape[2:])):
        for tap in product(*(range(k) for k in weight.shape[2:])):
            target = tuple(position[i] * strides[i] - begins[i] + tap[i] * dilations[i]
                           for i in range(n_spatial))
            if not all(0 <= target[i] < out.shape[2 + i] for i in range(n_spatial)):
                continue
            for n, g, ci, co in product(range(x.shape[0]), range(group), range(per_group_in),
                                        range(per_group_out)):
                matrix[index_out[(n, g * per_group_out + co) + target],
                       index_in[(n, g * per_group_in + ci) + position]] += \
                    weight[(g * per_group_in + ci, co) + tap]
    return matrix


def average_pool_matrix(node, x, out):
    attrs = attributes(node)
    index_in = np.arange(x.size).reshape(x.shape)
    index_out = np.arange(out.size).reshape(out.shape)
    matrix = np.zeros((out.size, x.size))
    for out_position, taps in window_inputs(attrs, x.shape[2:], out.shape[2:], attrs["kernel_shape"]):
        for _, position in taps:
            for n, c in product(range(x.shape[0]), range(x.shape[1])):
                matrix[index_out[(n, c) + out_position], index_in[(n, c) + position]] = 1.0
    return matrix


def reduction_matrix(x, out, axes):
    """Sum over ``axes`` (keepdims or not, as ``out``'s size shows)."""
    matrix = np.zeros((out.size, x.size))
    kept = [i for i in range(x.ndim) if i not in axes]
    kept_shape = [x.shape[i] for i in kept]
    for flat, position in enumerate(product(*(range(d) for d in x.shape))):
        row = np.ravel_multi_index([position[i] for i in kept], kept_shape) if kept else 0
        matrix[row, flat] = 1.0
    return matrix


def probed_matrix(function, x):
    """Matrix of a linear function (no bias) of the whole tensor x, one unit vector at a time."""
    columns = []
    for j in range(x.size):
        unit = np.zeros(x.size)
        unit[j] = 1.0
        columns.append(np.asarray(function(unit.reshape(x.shape)), dtype=np.float64).reshape(-1))
    return np.stack(columns, axis=1)


def gemm_function(node, constants, activation_index):
    attrs = attributes(node)
    alpha = attrs.get("alpha", 1.0)
    trans = (attrs.get("transA", 0), attrs.get("transB", 0))
    operands = [constants.get(node.input[0]), constants.get(node.input[1])]

    def function(value):
        a, b = operands
        a, b = (value, b) if activation_index == 0 else (a, value)
        a = a.T if trans[0] else a
        b = b.T if trans[1] else b
        return alpha * (a @ b)
    return function


def matmul_function(node, constants, activation_index):
    other = constants[node.input[1 - activation_index]]
    return (lambda v: v @ other) if activation_index == 0 else (lambda v: other @ v)


# ---- the walk --------------------------------------------------------------------------------

class Oracle:
    def __init__(self, model: onnx.ModelProto, classifier: str | None = None):
        self.model = model
        self.graph = model.graph
        arrays = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant":
                arrays[node.output[0]] = numpy_helper.to_array(attributes(node)["value"])
        self.model_constants = {name: a.astype(np.float64) if a.dtype.kind == "f" else a
                                for name, a in arrays.items()}
        self.constants = self.model_constants
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.classifier = classifier
        output = self.graph.output[0].name
        final = self.producer.get(output)
        self.logits = final.input[0] if final is not None and final.op_type == "Softmax" else output

    def _head(self):
        """The logits and the tensors down to the first op with weights below them, through
        single-activation ops (none where there is no such op): the top signal starts at a class
        unit there."""
        head, name = set(), self.logits
        while name in self.producer:
            head.add(name)
            node = self.producer[name]
            acts = self._activations(node)
            if node.op_type == "Mul":
                acts = [i for i in acts if not self._is_gate(node.input[i])]
            if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
                return head
            if len(acts) != 1:
                break
            name = node.input[acts[0]]
        return set()

    def _rectified_only(self, name):
        """Whether only ReLUs (Relu, a Clip from 0) read ``name``."""
        readers = self._consumers(name)
        return bool(readers) and all(
            r.op_type == "Relu" or (r.op_type == "Clip" and len(r.input) > 1 and r.input[1]
                                    and float(self.model_constants[r.input[1]]) >= 0)
            or (r.op_type == "Max" and any(n in self.model_constants and np.all(self.model_constants[n] == 0)
                                           for n in r.input)) for r in readers)

    def _after_affine(self, node):
        """A Conv's or Gemm's output after the per-channel affine ops (BatchNorm, arithmetic with a
        constant) that alone read it in a chain: its sign is that of the folded op (§3.4). Other
        ops' own output (a MatMul's before a bias Add)."""
        name = node.output[0]
        if node.op_type not in ("Conv", "Gemm"):
            return name
        while True:
            readers = self._consumers(name)
            if len(readers) != 1 or not (readers[0].op_type == "BatchNormalization" or (
                    readers[0].op_type in ("Mul", "Div", "Add", "Sub") and len(readers[0].input) == 2
                    and readers[0].input[1] in self.model_constants)):
                return name
            name = readers[0].output[0]

    def _consumers(self, name):
        return [n for n in self.graph.node if name in n.input]

    def signal(self, x, top, layer, contrast=None):
        """The signal at ``layer`` (rows, *shape) for ``top`` (K, *logits shape)."""
        values = forward(self.model, x.astype(np.float32))
        values = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in values.items()}
        values.update(self.model_constants)
        # integer tensors are shapes and indices, except a QuantizeLinear's codes, which carry signal
        codes = {out for node in self.graph.node if node.op_type == "QuantizeLinear" for out in node.output}
        self.constants = {**self.model_constants,
                          **{k: v for k, v in values.items() if v.dtype.kind in "iub" and k not in codes}}
        scales = self._batchnorm_scales(values)
        self.lost = {}   # node name -> mass lost there, per row
        signals = {self.logits: np.asarray(top, dtype=np.float64)}
        for node in reversed(self.graph.node):
            outgoing = [signals.get(o) for o in node.output]
            if all(s is None for s in outgoing) or node.op_type == "Softmax":
                continue
            for name, signal in self._backward(node, values, outgoing, scales, contrast):
                signals[name] = signals[name] + signal if name in signals else signal
        return signals[layer]

    def _batchnorm_scales(self, values):
        """Per-element scale of each Conv whose only consumer is a BatchNormalization, or a Mul or
        Div by a per-channel constant (docs/method.md §3.4: those are folded into the Conv)."""
        scales = {}
        for node in self.graph.node:
            producer = self.producer.get(node.input[0]) if node.input else None
            if producer is None or producer.op_type != "Conv" or len(self._consumers(node.input[0])) != 1:
                continue
            out = values[node.input[0]]
            if node.op_type == "BatchNormalization":
                gamma, _, _, var = (values[n] for n in node.input[1:5])
                per_channel = gamma / np.sqrt(var + attributes(node).get("epsilon", 1e-5))
            elif node.op_type in ("Mul", "Div") and node.input[1] in self.constants:
                per_channel = np.broadcast_to(self.constants[node.input[1]], out.shape[1:2] + (1,) * (out.ndim - 2))
                per_channel = per_channel.reshape(-1) if node.op_type == "Mul" else 1 / per_channel.reshape(-1)
            else:
                continue
            shape = (1, -1) + (1,) * (out.ndim - 2)
            scales[producer.name] = np.broadcast_to(per_channel.reshape(shape), out.shape).reshape(-1)
        return scales

    def _activations(self, node):
        return [i for i, name in enumerate(node.input) if name and name not in self.constants]

    def _backward(self, node, values, outgoing, scales, contrast):
        op = node.op_type
        signal = outgoing[0]
        acts = self._activations(node)
        if op in PASS_THROUGH or op == "BatchNormalization" or (
                op in ("Add", "Sub", "Div", "Mul", "Sum", "Max", "Min") and len(acts) == 1):
            name = node.input[acts[0]]
            return [(name, _sum_to_shape(signal, values[name].shape))]
        if op in ("Add", "Sum"):
            return self._add(node, values, signal, acts)
        if op == "Mul":
            keep = [i for i in acts if not self._is_gate(node.input[i])]
            name = node.input[keep[0]]
            return [(name, _sum_to_shape(signal, values[name].shape))]
        if op in ("MaxPool", "GlobalMaxPool"):
            return [(node.input[0], self._max_pool(node, values, signal))]
        if op in MOVEMENT:
            return self._movement(node, values, outgoing)
        return self._linear(node, values, signal, acts, scales, contrast)

    def _is_gate(self, name):
        """A squashing function's output (Sigmoid, HardSigmoid, Tanh, Erf) up to arithmetic with
        constants, or Keras's hard sigmoid: a Clip scaled by a constant (``relu6(x + 3) / 6``)."""
        node = self.producer.get(name)
        if (node is not None and node.op_type in ("Mul", "Div") and node.input[1] in self.constants
                and getattr(self.producer.get(node.input[0]), "op_type", "") == "Clip"):
            return True
        while node is not None and node.op_type in ("Add", "Sub", "Mul", "Div") and len(self._activations(node)) == 1:
            node = self.producer.get(node.input[self._activations(node)[0]])
        return node is not None and node.op_type in SQUASHING

    def _add(self, node, values, signal, acts):
        """docs/method.md §3.3: each output's signal goes to the contributions of the output's own
        sign (the positive ones where the sum is ≥ 0), in proportion; lost where they sum to 0."""
        out_shape = signal.shape[1:]
        inputs = [np.broadcast_to(values[node.input[i]], out_shape) for i in acts]
        negative_output = sum(inputs) < 0
        same_sign = [np.abs(np.where(negative_output, np.minimum(x, 0), np.maximum(x, 0))) for x in inputs]
        total = sum(same_sign)
        self.lost[node.name] = np.where(total == 0, signal, 0).reshape(signal.shape[0], -1).sum(axis=1)
        result = []
        for i, share in zip(acts, same_sign):
            part = np.where(total > 0, signal * share / np.where(total > 0, total, 1), 0)
            result.append((node.input[i], _sum_to_shape(part, values[node.input[i]].shape)))
        return result

    def _max_pool(self, node, values, signal):
        x = values[node.input[0]]
        attrs = attributes(node)
        kernel = attrs.get("kernel_shape", x.shape[2:])
        out_spatial = signal.shape[3:]
        if node.op_type == "GlobalMaxPool":
            attrs = {}
        result = np.zeros((signal.shape[0],) + x.shape)
        for out_position, taps in window_inputs(attrs, x.shape[2:], out_spatial, kernel):
            for n, c in product(range(x.shape[0]), range(x.shape[1])):
                best, winner = -np.inf, None
                for _, position in taps:
                    if x[(n, c) + position] > best:
                        best, winner = x[(n, c) + position], position
                result[(slice(None), n, c) + winner] += signal[(slice(None), n, c) + out_position]
        return result

    def _movement(self, node, values, outgoing):
        """Run the op on unique ids (1, 2, ...; 0 is 'no source') and route the signal back."""
        rows = next(s for s in outgoing if s is not None).shape[0]
        ids, next_id = {}, 1
        for i in self._activations(node):
            shape = values[node.input[i]].shape
            size = int(np.prod(shape))
            ids[node.input[i]] = np.arange(next_id, next_id + size, dtype=np.float64).reshape(shape)
            next_id += size
        traced_model = _single_node_model(node, ids, self.constants, self.model)
        traced = _run_all(traced_model, ids)
        by_id = np.zeros((rows, next_id))
        for out_ids, signal in zip(traced, outgoing):
            if signal is not None:
                sources = np.asarray(out_ids).reshape(-1).astype(np.int64)
                np.add.at(by_id, (slice(None), sources), signal.reshape(rows, -1))
        self.lost[node.name] = by_id[:, 0]     # the signal of constant (padding) cells
        result = []
        for name, tensor_ids in ids.items():
            first = int(tensor_ids.reshape(-1)[0])
            result.append((name, by_id[:, first:first + tensor_ids.size].reshape((rows,) + tensor_ids.shape)))
        return result

    def _linear(self, node, values, signal, acts, scales, contrast):
        op = node.op_type
        act = acts[0]
        x = values[node.input[act]]
        out = values[node.output[0]]
        if op == "Conv":
            matrix = conv_matrix(node, x, out, self.constants[node.input[1]])
        elif op == "AveragePool":
            matrix = average_pool_matrix(node, x, out)
        elif op == "GlobalAveragePool":
            matrix = reduction_matrix(x, out, tuple(range(2, x.ndim)))
        elif op in ("ReduceMean", "ReduceSum"):
            attrs = attributes(node)
            axes = attrs.get("axes")
            if axes is None:
                axes = self.constants[node.input[1]].astype(np.int64).tolist()
            matrix = reduction_matrix(x, out, tuple(a % x.ndim for a in axes))
        elif op == "Gemm":
            matrix = probed_matrix(gemm_function(node, self.constants, act), x)
        elif op == "MatMul":
            matrix = probed_matrix(matmul_function(node, self.constants, act), x)
        elif op == "ConvTranspose":
            matrix = conv_transpose_matrix(node, x, out, self.constants[node.input[1]])
        else:
            raise NotImplementedError(f"oracle has no rule for {op}")
        if node.name in scales:
            matrix = scales[node.name][:, None] * matrix
        flat = signal.reshape(signal.shape[0], -1)
        negative = None
        if node.output[0] not in self._head() and not self._rectified_only(self._after_affine(node)):
            # (the top signal starts at a unit, whatever its sign; a ReLU gives no signal to negatives)
            pooling = op in ("AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum")
            negative = ((matrix * x.reshape(-1)[None, :]).sum(axis=1) < 0 if pooling
                        else values[self._after_affine(node)].reshape(-1) < 0)
        own, self.lost[node.name] = excite_dense(matrix, x, flat, negative)
        if contrast is not None and node.name == self.classifier:
            dual, _ = excite_dense(-matrix, x, flat)
            own = np.concatenate([own - c * dual for c in contrast], axis=0)
        return [(node.input[act], own.reshape((own.shape[0],) + x.shape))]


def _sum_to_shape(signal, shape):
    """Sum a (rows, *broadcast shape) signal back to (rows, *shape)."""
    extra = signal.ndim - 1 - len(shape)
    if extra:
        signal = signal.sum(axis=tuple(range(1, 1 + extra)))
    for axis, dim in enumerate(shape):
        if dim == 1 and signal.shape[axis + 1] != 1:
            signal = signal.sum(axis=axis + 1, keepdims=True)
    return signal


def _run_all(model, feeds):
    try:
        return ReferenceEvaluator(model).run(None, feeds)
    except ValueError:
        values = _onnxruntime_intermediates(model, feeds)
        return [values[o.name] for o in model.graph.output]


def _single_node_model(node, ids, constants, parent):
    """``node`` alone, its activations as double inputs; a Pad's constant value is dropped so
    that padding reads 0, the 'no source' id."""
    traced = onnx.NodeProto()
    traced.CopyFrom(node)
    if node.op_type == "Pad" and len(node.input) > 2:
        traced.input[2] = ""
    inputs = [helper.make_tensor_value_info(name, TensorProto.DOUBLE, None) for name in ids]
    initializers = [numpy_helper.from_array(np.asarray(constants[n]), n)
                    for n in traced.input if n in constants]
    outputs = [helper.make_tensor_value_info(o, TensorProto.DOUBLE, None) for o in node.output if o]
    graph = helper.make_graph([traced], "trace", inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=list(parent.opset_import))
