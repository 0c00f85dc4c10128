"""Quantised (int8 QDQ) and float16 models explain like the float model they came from
(docs/method.md §3.6).

* The weights behind DequantizeLinear are folded into ``scale · (q − zero_point)``, computed here by
  hand from the initializers (per tensor and per channel), and BatchNorm folds across a QDQ pair.
* The QDQ walk is exact: its maps equal the dense oracle's on the float model built here with the
  dequantised weights and with its activations forced to the dequantised values exbp recorded.
* Against the float model, QDQ and float16 maps agree within the tolerances measured below
  (docs/method.md §3.6 lists them); the bounds leave a margin over the worst measured case.

The quantised and float16 models are made by the tools engineers use: onnxruntime's
``quantize_static`` (QDQ format) and onnxconverter-common's ``convert_float_to_float16``.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import exbp
import oracle as oracle_module
from builders import ModelBuilder, mobilenet_like, qdq_quantized, resnet_like
from conftest import assert_close
from oracle import Oracle

quantization = pytest.importorskip("onnxruntime.quantization")
float16 = pytest.importorskip("onnxconverter_common.float16",
                              reason="the float16 checks need onnxconverter-common (extra 'test')")

# Map agreement with the float model: (min correlation, max relative L1) per method. Measured
# worst cases over the two networks, per-tensor/per-channel and uint8/int8 activations, at the
# pixels and the default layer: QDQ MWP 0.9955 / 0.057, c-MWP 0.974 / 0.18; float16 MWP
# 1.0000 / 0.0015, c-MWP 0.99998 / 0.0048.
QDQ_AGREEMENT = {"mwp": (0.99, 0.1), "cmwp": (0.95, 0.3)}
FLOAT16_AGREEMENT = {"mwp": (0.9999, 0.01), "cmwp": (0.999, 0.02)}

ARCHITECTURES = {"resnet": lambda: resnet_like(size=32, negative_scale=True),
                 "depthwise": lambda: mobilenet_like(size=32)}
QDQ_CONFIGS = {"per_tensor_uint8": (False, "QUInt8"), "per_channel_int8": (True, "QInt8")}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def architecture(request):
    b, model = ARCHITECTURES[request.param]()
    return b, model, exbp.Explainer(model)


@pytest.fixture(scope="module", params=sorted(QDQ_CONFIGS))
def quantized(request, architecture, tmp_path_factory):
    b, model, float_explainer = architecture
    qdq = qdq_quantized(b, model, tmp_path_factory.mktemp("qdq"), *QDQ_CONFIGS[request.param])
    return b, model, float_explainer, qdq, exbp.Explainer(qdq)


def _images(b):
    return np.concatenate([b.input(seed=100 + i) for i in range(3)])


def _agreement(want, got):
    """(lowest correlation, highest relative L1 distance) over the maps of each image and target."""
    want = want.reshape(-1, int(np.prod(want.shape[2:]))).astype(np.float64)
    got = got.reshape(want.shape).astype(np.float64)
    correlation = min(np.corrcoef(w, g)[0, 1] for w, g in zip(want, got))
    distance = max(np.abs(w - g).sum() / np.abs(w).sum() for w, g in zip(want, got))
    return correlation, distance


# ---- (a) the weights: folded by hand ---------------------------------------------------------

def _dequantized_by_hand(qdq: onnx.ModelProto, name: str) -> np.ndarray:
    """scale · (q − zero_point) of the DequantizeLinear writing ``name``, in float64."""
    arrays = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    node = next(n for n in qdq.graph.node if name in n.output)
    assert node.op_type == "DequantizeLinear"
    codes, scale = arrays[node.input[0]].astype(np.float64), arrays[node.input[1]].astype(np.float64)
    zero = arrays[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros(1)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * codes.ndim
    if scale.size > 1:
        shape[axis] = -1
    return (codes - zero.reshape(shape if zero.size > 1 else ())) * scale.reshape(shape if scale.size > 1 else ())


def _constant_dequantizers(qdq):
    initializers = {t.name for t in qdq.graph.initializer}
    return [n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers]


def test_weights_behind_dequantize_linear_are_float_constants(quantized):
    _, _, _, qdq, explainer = quantized
    graph = explainer.session.graph
    dequantizers = _constant_dequantizers(qdq)
    kinds = {numpy_helper.to_array(next(t for t in qdq.graph.initializer if t.name == n.input[0])).dtype
             for n in dequantizers}
    assert {np.dtype(np.int8), np.dtype(np.int32)} <= kinds      # weights and biases
    folded = [n.output[0] for n in dequantizers if n.output[0] in graph.constants]
    for name in folded:
        value = graph.constants[name]
        assert value.dtype == np.float32
        np.testing.assert_allclose(value, _dequantized_by_hand(qdq, name), rtol=1e-6, atol=1e-30)
    for node in graph.nodes:
        assert node.op_type not in ("QuantizeLinear", "DequantizeLinear"), node.name
        if node.op_type in ("Conv", "Gemm"):
            assert graph.constants[node.inputs[1]].dtype == np.float32


def _pair(b, tensor, scale=0.02, zero_point=128):
    """``tensor`` through a uint8 QuantizeLinear→DequantizeLinear pair."""
    scale, zero_point = b.const(np.float32(scale)), b.const(np.uint8(zero_point))
    return b.node("DequantizeLinear", [b.node("QuantizeLinear", [tensor, scale, zero_point]), scale,
                                       zero_point])


def _hand_qdq(opset=13, weights_in_float=False):
    """A QDQ network written by hand: per-channel int8 conv weights (stored as int8, or as float
    behind a QuantizeLinear as quantisation-aware exports write them), a BatchNorm with negative
    scales after the conv's pair, a per-tensor int8 Gemm weight. Returns (builder, model, the
    weights' float values as quantised here)."""
    b = ModelBuilder((1, 3, 8, 8), seed=2, opset=opset)
    weight = b.rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    scale = (np.abs(weight).max(axis=(1, 2, 3)) / 127).astype(np.float32)
    codes = np.clip(np.rint(weight / scale[:, None, None, None]), -128, 127).astype(np.int8)
    zero = np.array([0, 1, -2, 3], np.int8)
    scale_name, zero_name = b.const(scale), b.const(zero)
    if weights_in_float:
        stored = b.node("QuantizeLinear", [b.const(weight), scale_name, zero_name], axis=0)
        codes = np.clip(np.rint(weight / scale[:, None, None, None]) + zero[:, None, None, None],
                        -128, 127).astype(np.int8)
    else:
        stored = b.const(codes)
    conv_weight = b.node("DequantizeLinear", [stored, scale_name, zero_name], axis=0, name="conv_weight")
    conv = b.node("Conv", [_pair(b, b.input_name), conv_weight], pads=[1, 1, 1, 1], name="conv")
    features = _pair(b, b.relu(b.batchnorm(_pair(b, conv), negative_scale=True, name="bn")))
    gemm_codes = b.rng.integers(-127, 128, size=(3, 4)).astype(np.int8)
    gemm_weight = b.node("DequantizeLinear", [b.const(gemm_codes), b.const(np.float32(0.01)),
                                              b.const(np.int8(-1))], name="gemm_weight")
    logits = b.node("Gemm", [_pair(b, b.flatten(b.gap(features)), 0.01), gemm_weight], transB=1,
                    name="classifier")
    expected = {"conv_weight": scale[:, None, None, None].astype(np.float64)
                * (codes.astype(np.float64) - zero[:, None, None, None]),
                "gemm_weight": 0.01 * (gemm_codes.astype(np.float64) + 1)}
    return b, b.build(logits), expected


@pytest.mark.parametrize("opset", [13, 19, 21])
@pytest.mark.parametrize("weights_in_float", [False, True], ids=["int8_weights", "float_weights"])
def test_hand_written_qdq_weights_fold_per_channel(opset, weights_in_float):
    _, model, expected = _hand_qdq(opset, weights_in_float)
    graph = exbp.Explainer(model).session.graph
    for name, value in expected.items():
        assert graph.constants[name].dtype == np.float32
        np.testing.assert_allclose(graph.constants[name], value, rtol=1e-6)
    assert not [n.name for n in graph.nodes if n.op_type.endswith("QuantizeLinear")]


def test_batchnorm_folds_across_the_pair_into_the_dequantized_convolution():
    """Conv → Q → DQ → BatchNormalization: the pair leaves and the BN folds into the Conv, whose
    weight is then the dequantised weight times γ/σ (here by hand), as in the float model."""
    b, model, expected = _hand_qdq()
    graph = exbp.Explainer(model).session.graph
    (folded,) = [n for n in graph.nodes if n.op_type == "Conv"]
    assert folded.outputs == ("bn",)
    arrays = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    gamma, _, _, var = (arrays[name] for name in bn.input[1:5])
    assert (gamma < 0).any()
    np.testing.assert_allclose(graph.constants[folded.inputs[1]],
                               expected["conv_weight"] * (gamma / np.sqrt(var + 1e-5))[:, None, None, None],
                               rtol=1e-6)


# ---- layer names ------------------------------------------------------------------------------

def test_qdq_layers_carry_the_float_model_names(quantized):
    """The quantiser's new tensors (``*_QuantizeLinear_Output``, ``*_DequantizeLinear_Output``) are
    not offered as layers, the default layer is the float model's, and naming a new tensor (or the
    pair's node) means the float tensor it quantises."""
    b, _, float_explainer, qdq, explainer = quantized
    float_names = {layer.name for layer in float_explainer.layers()}
    names = [layer.name for layer in explainer.layers()]
    assert set(names) <= float_names and len(names) >= len(float_names) / 2
    assert not [n for n in names if "QuantizeLinear" in n]
    assert explainer.default_layer() == float_explainer.default_layer()
    layer = explainer.default_layer()
    dequantizer = next(n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0]
                       == next(q.output[0] for q in qdq.graph.node
                               if q.op_type == "QuantizeLinear" and q.input[0] == layer))
    assert explainer.resolve_layer(dequantizer.output[0]) == layer
    assert explainer.resolve_layer(dequantizer.name) == layer
    assert explainer.resolve_layer(dequantizer.input[0]) == layer


# ---- (b) QDQ against the float model ----------------------------------------------------------

@pytest.mark.parametrize("method", ["mwp", "cmwp"])
def test_qdq_maps_agree_with_the_float_model(quantized, method):
    b, _, float_explainer, _, explainer = quantized
    x = _images(b)
    for layer in (b.input_name, float_explainer.default_layer()):
        want = float_explainer.explain(x, targets=[1, 3], layer=layer, method=method).maps
        got = explainer.explain(x, targets=[1, 3], layer=layer, method=method).maps
        correlation, distance = _agreement(want, got)
        lowest, highest = QDQ_AGREEMENT[method]
        assert correlation >= lowest and distance <= highest, (layer, correlation, distance)


# ---- (c) float16 against float32 --------------------------------------------------------------

@pytest.fixture(scope="module", params=[True, False], ids=["float_io", "float16_io"])
def half(request, architecture):
    b, model, float_explainer = architecture
    converted = float16.convert_float_to_float16(model, keep_io_types=request.param)
    return b, float_explainer, exbp.Explainer(converted), request.param


@pytest.mark.parametrize("method", ["mwp", "cmwp"])
def test_float16_maps_agree_with_float32(half, method):
    b, float_explainer, explainer, _ = half
    x = _images(b)
    assert explainer.default_layer() == float_explainer.default_layer()
    for layer in (b.input_name, float_explainer.default_layer()):
        want = float_explainer.explain(x, targets=[1, 3], layer=layer, method=method)
        got = explainer.explain(x, targets=[1, 3], layer=layer, method=method)
        assert got.maps.dtype == np.float32 and got.logits.dtype == np.float32
        np.testing.assert_allclose(got.logits, want.logits, rtol=1e-2, atol=1e-2)
        correlation, distance = _agreement(want.maps, got.maps)
        lowest, highest = FLOAT16_AGREEMENT[method]
        assert correlation >= lowest and distance <= highest, (layer, correlation, distance)


def test_float16_input_is_fed_as_float16_and_walked_in_float32(half):
    b, _, explainer, keep_io_types = half
    session = explainer.session
    plan = session.plan(b.input_name)
    assert session.recorder(plan).input_type == (np.float32 if keep_io_types else np.float16)
    x = _images(b)
    _, tensors = session.record(x, plan)
    assert {tensors.value(name).dtype for name in plan.values} == {np.dtype(np.float32)}
    fed = tensors.value(b.input_name)
    np.testing.assert_array_equal(fed, x if keep_io_types else x.astype(np.float16).astype(np.float32))


def test_float16_input_out_of_range_is_a_one_line_error(half):
    b, _, explainer, keep_io_types = half
    if keep_io_types:
        pytest.skip("the model takes float32 input")
    x = _images(b) * 1e5
    with pytest.raises(exbp.errors.InputError, match="float16") as error:
        explainer.explain(x, method="mwp")
    assert "\n" not in str(error.value)


# ---- (d) the QDQ walk is exact ------------------------------------------------------------------

def _float_model_with_dequantized_weights(model, qdq):
    """The float model with each weight replaced by its dequantised value, by hand: the QDQ node of
    the same name reads a DequantizeLinear of a constant where the float one reads a weight."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    qdq_nodes = {n.name: n for n in qdq.graph.node}
    dequantized = {n.output[0] for n in _constant_dequantizers(qdq)}
    values = {}
    for node in model.graph.node:
        twin = qdq_nodes.get(node.name)
        for i, name in enumerate(node.input):
            if twin is not None and i < len(twin.input) and twin.input[i] in dequantized:
                values[name] = _dequantized_by_hand(qdq, twin.input[i]).astype(np.float32)
    assert len(values) >= 5
    for tensor in result.graph.initializer:
        if tensor.name in values:
            tensor.CopyFrom(numpy_helper.from_array(values[tensor.name], tensor.name))
    return result


# the dense oracle's matrices grow with the square of a tensor's size: small networks here
SMALL = {"resnet": (lambda: resnet_like(size=12, negative_scale=True), QDQ_CONFIGS["per_channel_int8"]),
         "depthwise": (lambda: mobilenet_like(size=16), QDQ_CONFIGS["per_tensor_uint8"])}


@pytest.fixture(scope="module", params=sorted(SMALL))
def small_quantized(request, tmp_path_factory):
    build, config = SMALL[request.param]
    b, model = build()
    qdq = qdq_quantized(b, model, tmp_path_factory.mktemp("small"), *config)
    return b, model, exbp.Explainer(model), qdq, exbp.Explainer(qdq)


@pytest.mark.parametrize("layer", ["input", "default"])
def test_qdq_walk_equals_oracle_on_dequantized_float_model(small_quantized, layer, monkeypatch):
    """exbp on the QDQ model against the dense oracle on the float model with the dequantised
    weights, whose activations are forced to the dequantised values the QDQ model computed (as
    exbp recorded them, under the float model's names): MWP and c-MWP, to rtol 1e-5."""
    b, model, float_explainer, qdq, explainer = small_quantized
    layer = b.input_name if layer == "input" else float_explainer.default_layer()
    reference = _float_model_with_dequantized_weights(model, qdq)
    x = _images(b)[:2]
    session = explainer.session
    plan = session.plan(session.resolve_layer(layer))
    _, tensors = session.record(x, plan)
    forced = oracle_module.forward(reference, x)          # every tensor, for its shape
    recorded = {name: np.asarray(tensors.value(name)) for name in plan.values}
    assert set(recorded) <= set(forced)
    assert any(session.canonical.recorded_as.get(name) for name in recorded)
    forced.update(recorded)
    monkeypatch.setattr(oracle_module, "forward", lambda model, x: forced)
    logits = forced[session.logits]
    top = np.zeros((2,) + logits.shape, np.float32)
    top[0, :, 1] = top[1, :, 3] = 1.0
    oracle = Oracle(reference, classifier="classifier")
    got = explainer.propagate(x, top, layer=layer, methods=("mwp", "cmwp"))
    want = np.concatenate([oracle.signal(x, top, layer), oracle.signal(x, top, layer, contrast=(1.0,))])
    assert_close(got, want)


def test_recorded_activations_are_the_qdq_models_values(quantized):
    """What exbp records for a float tensor is its dequantised copy as onnxruntime computes the
    QDQ model: equal to the unoptimised graph's values, but where onnxruntime's integer kernels
    round an element to the neighbouring code (one quantisation step, rarely)."""
    import onnxruntime as ort

    b, _, _, qdq, explainer = quantized
    session = explainer.session
    plan = session.plan(b.input_name)
    x = _images(b)
    _, tensors = session.record(x, plan)
    exposed = onnx.ModelProto()
    exposed.CopyFrom(qdq)
    exposed.graph.output.extend(onnx.ValueInfoProto(name=o) for n in qdq.graph.node for o in n.output
                                if n.op_type == "DequantizeLinear")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    run = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in run.get_outputs()]
    unoptimised = dict(zip(names, run.run(None, {b.input_name: x})))
    scales = {n.output[0]: numpy_helper.to_array(next(t for t in qdq.graph.initializer
                                                      if t.name == n.input[1]))
              for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    checked = 0
    for name in plan.values:
        source = session.canonical.recorded_as.get(name)
        if source is None:
            continue
        got, want = np.asarray(tensors.value(name)), unoptimised[source]
        step = float(np.max(scales[source]))
        assert np.abs(got - want).max() <= step * 1.001, name
        assert np.mean(got != want) < 1e-3, name
        checked += 1
    assert checked >= 4


# ---- (e) what is refused ------------------------------------------------------------------------

def test_quantisation_with_a_run_time_scale_is_refused_naming_the_node():
    b = ModelBuilder((1, 3, 8, 8), seed=3, opset=13)
    scale = b.node("Div", [b.node("ReduceMax", [b.input_name], keepdims=0), b.const(np.float32(127))])
    zero = b.const(np.uint8(128))
    codes = b.node("QuantizeLinear", [b.input_name, scale, zero], name="dynamic_quantize")
    x = b.node("DequantizeLinear", [codes, scale, zero], name="dynamic_dequantize")
    model = b.build(b.gemm(b.flatten(b.gap(b.relu(b.conv(x, 4)))), 3, name="classifier"))
    explainer = exbp.Explainer(model)
    with pytest.raises(exbp.errors.UnsupportedOpError) as error:
        explainer.explain(b.input(), layer=b.input_name, method="mwp")
    message = str(error.value)
    assert "\n" not in message and "'dynamic_dequantize'" in message
    assert "computed at run time" in message and "constant" in message
    # the layers beside it still explain
    assert explainer.explain(b.input(), layer=explainer.layers()[-2].name, method="mwp").maps.shape[0] == 1


def test_pair_on_a_tensor_also_read_in_float_is_walked_through():
    """Where the quantised tensor's float value is also read, the pair stays and passes the signal
    through: at the input, the mass that reaches both reads adds up (conservation)."""
    b = ModelBuilder((1, 3, 8, 8), seed=3, opset=13)
    features = b.relu(b.conv(b.input_name, 4))
    both = b.add(_pair(b, features, 0.05, 0), b.relu(b.conv(features, 4)))
    model = b.build(b.gemm(b.flatten(b.gap(both)), 3, name="classifier"))
    explainer = exbp.Explainer(model)
    assert [n.op_type for n in explainer.session.graph.nodes].count("QuantizeLinear") == 1
    x = b.input(positive=True)
    lost = {}
    signal = explainer.propagate(x, np.eye(3, dtype=np.float32)[:1, None], layer=features, lost=lost)
    np.testing.assert_allclose(signal.sum(), 1 - sum(float(v.sum()) for v in lost.values()), rtol=1e-5)
    assert signal.min() >= 0
