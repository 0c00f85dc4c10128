"""Small ONNX models built with onnx.helper for the tests: random weights, fixed seeds."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class ModelBuilder:
    """Appends nodes to a graph; every method returns the name of the tensor it produced."""

    def __init__(self, input_shape=(1, 3, 16, 16), seed=0, opset=17, input_name="input",
                 dynamic_batch=True):
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.input_name = input_name
        self.input_shape = tuple(input_shape)
        shape = ["N", *input_shape[1:]] if dynamic_batch else list(input_shape)
        self.inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)]
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, value, name: str | None = None) -> str:
        name = name or self._name("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op_type: str, inputs, outputs: int = 1, name: str | None = None, **attrs):
        name = name or self._name(op_type.lower())
        out = [f"{name}_out{i}" if outputs > 1 else name for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), out, name=name, **attrs))
        return out if outputs > 1 else out[0]

    def shape(self, tensor: str) -> tuple:
        model = self.build(tensor, softmax=False, check=False)
        inferred = onnx.shape_inference.infer_shapes(model)
        for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
            if info.name == tensor and info.type.tensor_type.HasField("shape"):
                return tuple(d.dim_value if d.HasField("dim_value") else None
                             for d in info.type.tensor_type.shape.dim)
        raise KeyError(tensor)

    # ---- layers ----------------------------------------------------------------------------

    def conv(self, x, out_channels, kernel=3, stride=1, pad=None, group=1, dilation=1, bias=True,
             name=None, **attrs):
        in_channels = self.shape(x)[1]
        spatial = len(self.shape(x)) - 2
        kernel = (kernel,) * spatial if isinstance(kernel, int) else tuple(kernel)
        fan_in = in_channels // group * int(np.prod(kernel))
        weight = self.rng.normal(0, np.sqrt(2 / fan_in), (out_channels, in_channels // group) + kernel)
        inputs = [x, self.const(weight.astype(np.float32))]
        if bias:
            inputs.append(self.const(self.rng.normal(0, 0.1, out_channels).astype(np.float32)))
        if pad is None and "auto_pad" not in attrs:
            pad = [k // 2 * dilation for k in kernel] * 2
        if pad is not None:
            attrs["pads"] = [pad] * (2 * spatial) if isinstance(pad, int) else list(pad)
        if stride != 1:
            attrs["strides"] = [stride] * spatial if isinstance(stride, int) else list(stride)
        if dilation != 1:
            attrs["dilations"] = [dilation] * spatial
        if group != 1:
            attrs["group"] = group
        return self.node("Conv", inputs, name=name, **attrs)

    def batchnorm(self, x, name=None, negative_scale=False):
        channels = self.shape(x)[1]
        gamma = self.rng.uniform(0.5, 1.5, channels)
        if negative_scale:
            gamma[::2] *= -1
        params = [gamma, self.rng.normal(0, 0.1, channels), self.rng.normal(0, 0.1, channels),
                  self.rng.uniform(0.5, 2.0, channels)]
        return self.node("BatchNormalization", [x] + [self.const(p.astype(np.float32)) for p in params],
                         name=name, epsilon=1e-5)

    def relu(self, x, name=None):
        return self.node("Relu", [x], name=name)

    def maxpool(self, x, kernel=2, stride=2, **attrs):
        spatial = len(self.shape(x)) - 2
        return self.node("MaxPool", [x], kernel_shape=[kernel] * spatial, strides=[stride] * spatial,
                         **attrs)

    def avgpool(self, x, kernel=2, stride=2, **attrs):
        spatial = len(self.shape(x)) - 2
        return self.node("AveragePool", [x], kernel_shape=[kernel] * spatial,
                         strides=[stride] * spatial, **attrs)

    def gap(self, x):
        return self.node("GlobalAveragePool", [x])

    def flatten(self, x):
        return self.node("Flatten", [x], axis=1)

    def gemm(self, x, out_features, name=None):
        in_features = self.shape(x)[1]
        weight = self.rng.normal(0, np.sqrt(2 / in_features), (out_features, in_features))
        bias = self.rng.normal(0, 0.1, out_features)
        return self.node("Gemm", [x, self.const(weight.astype(np.float32)),
                                  self.const(bias.astype(np.float32))], name=name, transB=1)

    def concat(self, tensors, axis=1):
        return self.node("Concat", list(tensors), axis=axis)

    def add(self, a, b):
        return self.node("Add", [a, b])

    def clip(self, x, low=0.0, high=6.0):
        return self.node("Clip", [x, self.const(np.float32(low)), self.const(np.float32(high))])

    # ---- output ----------------------------------------------------------------------------

    def build(self, output: str, softmax=True, check=True, graph_name="test") -> onnx.ModelProto:
        nodes = list(self.nodes)
        final = output
        if softmax:
            final = "probabilities"
            nodes.append(helper.make_node("Softmax", [output], [final], name="softmax", axis=1))
        graph = helper.make_graph(nodes, graph_name, self.inputs,
                                  [helper.make_tensor_value_info(final, TensorProto.FLOAT, None)],
                                  self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = min(model.ir_version, 10)
        inferred = onnx.shape_inference.infer_shapes(model)
        typed = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.input,
                                     *inferred.graph.output)}
        if final in typed:  # the checker wants the output's shape
            model.graph.output[0].CopyFrom(typed[final])
        if check:
            onnx.checker.check_model(model)
        return model

    def input(self, seed=1, batch=None, positive=False) -> np.ndarray:
        rng = np.random.default_rng(seed)
        shape = ((batch or self.input_shape[0]),) + self.input_shape[1:]
        x = rng.normal(size=shape).astype(np.float32)
        return np.abs(x) if positive else x


# ---- the four end-to-end architectures ------------------------------------------------------

def vgg_like(seed=0, size=16, classes=10):
    b = ModelBuilder((1, 3, size, size), seed=seed)
    x = b.relu(b.conv(b.input_name, 6))
    x = b.maxpool(b.relu(b.conv(x, 6)))
    x = b.relu(b.conv(x, 8))
    x = b.maxpool(x)
    x = b.relu(b.gemm(b.flatten(x), 16))
    return b, b.build(b.gemm(x, classes, name="classifier"))


def inception_like(seed=0, size=16, classes=10):
    b = ModelBuilder((1, 3, size, size), seed=seed)
    x = b.maxpool(b.relu(b.conv(b.input_name, 6)))
    branch1 = b.relu(b.conv(x, 4, kernel=1, pad=0))
    branch3 = b.relu(b.conv(b.relu(b.conv(x, 3, kernel=1, pad=0)), 4))
    branch5 = b.relu(b.conv(b.relu(b.conv(x, 2, kernel=1, pad=0)), 3, kernel=5))
    pooled = b.relu(b.conv(b.maxpool(x, kernel=3, stride=1, pads=[1, 1, 1, 1]), 3, kernel=1, pad=0))
    x = b.concat([branch1, branch3, branch5, pooled])
    x = b.node("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
               count_include_pad=0)
    return b, b.build(b.gemm(b.flatten(b.gap(x)), classes, name="classifier"))


def resnet_like(seed=0, size=16, classes=10, negative_scale=False):
    b = ModelBuilder((1, 3, size, size), seed=seed)
    x = b.relu(b.batchnorm(b.conv(b.input_name, 8, bias=False)))
    for stride in (1, 2):
        branch = b.relu(b.batchnorm(b.conv(x, 8, stride=stride, bias=False)))
        branch = b.batchnorm(b.conv(branch, 8, bias=False), negative_scale=negative_scale)
        shortcut = x if stride == 1 else b.batchnorm(b.conv(x, 8, kernel=1, stride=2, pad=0,
                                                            bias=False))
        x = b.relu(b.add(branch, shortcut))
    return b, b.build(b.gemm(b.flatten(b.gap(x)), classes, name="classifier"))


def mobilenet_like(seed=0, size=16, classes=10):
    b = ModelBuilder((1, 3, size, size), seed=seed)
    x = b.clip(b.batchnorm(b.conv(b.input_name, 8, stride=2, bias=False)))
    for out_channels, stride in ((12, 1), (16, 2)):
        channels = b.shape(x)[1]
        x = b.clip(b.batchnorm(b.conv(x, channels, group=channels, stride=stride, bias=False)))
        x = b.batchnorm(b.conv(x, out_channels, kernel=1, pad=0, bias=False))
        if stride == 1:
            x = b.clip(x)
    x = b.clip(b.batchnorm(b.conv(x, 24, kernel=1, pad=0, bias=False)))
    return b, b.build(b.gemm(b.flatten(b.gap(x)), classes, name="classifier"))


def _inverted_residual(b, x, expand, activation, squeeze_excite=False):
    """MobileNetV2 / EfficientNet block: expand 1×1, depthwise 3×3, (SE gate), linear 1×1
    projection without an activation, and the residual Add — whose sum is often negative."""
    channels = b.shape(x)[1]
    wide = channels * expand
    h = activation(b.batchnorm(b.conv(x, wide, kernel=1, pad=0, bias=False)))
    h = activation(b.batchnorm(b.conv(h, wide, group=wide, bias=False)))
    if squeeze_excite:
        gate = b.node("Sigmoid", [b.conv(activation(b.conv(b.gap(h), 2, kernel=1, pad=0)), wide, kernel=1, pad=0)])
        h = b.node("Mul", [h, gate])
    h = b.batchnorm(b.conv(h, channels, kernel=1, pad=0, bias=False))
    return b.add(h, x)


def mobilenet_v2_like(seed=0, size=16, classes=10, blocks=3):
    b = ModelBuilder((1, 3, size, size), seed=seed)
    x = b.batchnorm(b.conv(b.clip(b.batchnorm(b.conv(b.input_name, 8, stride=2, bias=False))), 6,
                           kernel=1, pad=0, bias=False))            # a linear bottleneck
    for _ in range(blocks):
        x = _inverted_residual(b, x, 3, b.clip)
    x = b.clip(b.batchnorm(b.conv(x, 16, kernel=1, pad=0, bias=False)))
    return b, b.build(b.gemm(b.flatten(b.gap(x)), classes, name="classifier"))


def efficientnet_like(seed=0, size=16, classes=10, blocks=3):
    b = ModelBuilder((1, 3, size, size), seed=seed)

    def silu(x):
        return b.node("Mul", [x, b.node("Sigmoid", [x])])
    x = b.batchnorm(b.conv(silu(b.batchnorm(b.conv(b.input_name, 8, stride=2, bias=False))), 6,
                           kernel=1, pad=0, bias=False))
    for _ in range(blocks):
        x = _inverted_residual(b, x, 3, silu, squeeze_excite=True)
    x = silu(b.batchnorm(b.conv(x, 16, kernel=1, pad=0, bias=False)))   # SiLU outputs are signed
    return b, b.build(b.gemm(b.flatten(b.gap(x)), classes, name="classifier"))


TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def residual_net(channels_last: bool, preprocessing: bool = False, size: int = 32, seed: int = 3):
    """A residual network written channels first or, as TensorFlow and JAX exporters write it,
    channels last between Transposes around each Conv; the same weights either way: conv stem (stride 2) → ReLU → residual block → strided conv →
    ReLU → mean over positions → Gemm. Returns (builder, model, {block: tensor})."""
    shape = (1, size, size, 3) if channels_last else (1, 3, size, size)
    b = ModelBuilder(shape, seed=seed)
    x = b.input_name
    if preprocessing:   # a Keras Rescaling/Normalization layer: per-channel constants on the pixels
        scale = b.const(np.array([0.9, 1.1, 1.0], np.float32).reshape((1, 1, 1, 3) if channels_last else (1, 3, 1, 1)))
        shift = b.const(np.array([-0.2, 0.1, 0.3], np.float32).reshape((1, 1, 1, 3) if channels_last else (1, 3, 1, 1)))
        x = b.node("Add", [b.node("Mul", [x, scale]), shift])

    def conv(t, out, **kw):
        if not channels_last:
            return b.conv(t, out, **kw)
        return b.node("Transpose", [b.conv(b.node("Transpose", [t], perm=TO_NCHW), out, **kw)], perm=TO_NHWC)

    blocks = {}
    blocks["stem"] = b.relu(conv(x, 6, stride=2))
    inner = b.relu(conv(blocks["stem"], 6))
    blocks["residual"] = b.relu(b.add(conv(inner, 6), blocks["stem"]))
    blocks["down"] = b.relu(conv(blocks["residual"], 8, stride=2))
    pooled = (b.node("ReduceMean", [blocks["down"]], axes=[1, 2], keepdims=0) if channels_last
              else b.flatten(b.gap(blocks["down"])))
    return b, b.build(b.gemm(pooled, 5, name="classifier")), blocks


def qdq_quantized(b, model, tmp_path, per_channel=True, activations="QUInt8"):
    """``model`` quantised to int8 QDQ by onnxruntime's quantize_static, calibrated on 16 of
    ``b``'s inputs."""
    import logging

    from onnxruntime import quantization as q

    class Calibration(q.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{b.input_name: b.input(seed=s, batch=1)} for s in range(16)])

        def get_next(self):
            return next(self.batches, None)
    source, target = tmp_path / "float.onnx", tmp_path / "qdq.onnx"
    onnx.save(model, source)
    logging.disable(logging.WARNING)     # the quantiser's advice to pre-process
    try:
        q.quantize_static(str(source), str(target), Calibration(), quant_format=q.QuantFormat.QDQ,
                          per_channel=per_channel, activation_type=getattr(q.QuantType, activations),
                          weight_type=q.QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    return onnx.load(str(target))
