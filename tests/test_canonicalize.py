"""Canonicalisation: BN folding invariance, pass-through removal, names of removed tensors."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import exbp
from conftest import assert_close
from builders import ModelBuilder, mobilenet_like, resnet_like


def fold_batchnorms_by_hand(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network exported with BN folded: written here, independently of exbp."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    params = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    keep = []
    for node in graph.node:
        if node.op_type != "BatchNormalization":
            keep.append(node)
            continue
        conv = producers[node.input[0]]
        gamma, beta, mean, var = (params[n] for n in node.input[1:5])
        scale = gamma / np.sqrt(var + 1e-5)
        weight = params[conv.input[1]] * scale[:, None, None, None]
        bias = (params[conv.input[2]] if len(conv.input) > 2 else 0) * scale + beta - mean * scale
        weight_name, bias_name = conv.name + "_folded_w", conv.name + "_folded_b"
        graph.initializer.extend([numpy_helper.from_array(weight.astype(np.float32), weight_name),
                                  numpy_helper.from_array(bias.astype(np.float32), bias_name)])
        conv.input[:] = [conv.input[0], weight_name, bias_name]
        conv.output[0] = node.output[0]
    del graph.node[:]
    graph.node.extend(keep)
    onnx.checker.check_model(folded)
    return folded


@pytest.mark.parametrize("build", [resnet_like, mobilenet_like,
                                   lambda: resnet_like(negative_scale=True)])
def test_folded_and_unfolded_exports_give_the_same_maps(build):
    b, model = build()
    folded = fold_batchnorms_by_hand(model)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    x = b.input(seed=21, batch=2)
    original, refolded = exbp.Explainer(model), exbp.Explainer(folded)
    for layer in (original.default_layer(x.shape), b.input_name):
        for method in ("mwp", "cmwp"):
            want = refolded.explain(x, targets=[0, 4], layer=layer, method=method).maps
            got = original.explain(x, targets=[0, 4], layer=layer, method=method).maps
            assert_close(got, want)


def test_folding_differs_from_identity_batchnorm_when_a_scale_is_negative():
    """Guards the test above: treating BN as identity would give other maps here."""
    b, model = resnet_like(negative_scale=True)
    as_identity = onnx.ModelProto()
    as_identity.CopyFrom(model)
    for node in as_identity.graph.node:
        if node.op_type == "BatchNormalization":
            node.op_type = "Identity"
            del node.input[1:]
            del node.attribute[:]
    x = b.input(seed=22)
    folded = exbp.Explainer(model).explain(x, targets=1, layer=b.input_name, method="mwp").maps
    identity = exbp.Explainer(as_identity).explain(x, targets=1, layer=b.input_name, method="mwp").maps
    assert not np.allclose(folded, identity, rtol=1e-3)


def test_identity_and_dropout_are_removed():
    def build(extra):
        b = ModelBuilder((1, 3, 8, 8), seed=5)
        x = b.relu(b.conv(b.input_name, 4))
        if extra:
            x = b.node("Dropout", [b.node("Identity", [x])])
        return b, b.build(b.gemm(b.flatten(b.maxpool(x)), 5, name="classifier"))
    (b, plain), (_, padded) = build(False), build(True)
    explainer = exbp.Explainer(padded)
    assert not {"Identity", "Dropout"} & {n.op_type for n in explainer.session.graph.nodes}
    x = b.input(seed=1)
    np.testing.assert_allclose(explainer.explain(x, targets=2, layer=b.input_name).maps,
                               exbp.Explainer(plain).explain(x, targets=2, layer=b.input_name).maps,
                               rtol=1e-6)


def test_removed_tensors_and_node_names_still_name_layers():
    b, model = resnet_like()
    explainer = exbp.Explainer(model)
    first_conv = model.graph.node[0]
    batchnorm = model.graph.node[1]
    assert batchnorm.op_type == "BatchNormalization" and first_conv.op_type == "Conv"
    x = b.input(seed=2)
    by_tensor = explainer.explain(x, targets=1, layer=batchnorm.output[0]).maps
    by_removed_tensor = explainer.explain(x, targets=1, layer=first_conv.output[0])
    by_node = explainer.explain(x, targets=1, layer=batchnorm.name)
    assert by_removed_tensor.layer == by_node.layer == batchnorm.output[0]
    np.testing.assert_array_equal(by_removed_tensor.maps, by_tensor)
    np.testing.assert_array_equal(by_node.maps, by_tensor)


def test_gemm_alpha_and_shared_conv_are_handled():
    b = ModelBuilder((1, 3, 6, 6), seed=9)
    conv = b.conv(b.input_name, 3)
    mixed = b.add(b.batchnorm(conv), conv)       # conv feeds BN and the Add: BN cannot fold
    weight = b.const(np.random.default_rng(0).normal(size=(108, 4)).astype(np.float32))
    model = b.build(b.node("Gemm", [b.flatten(mixed), weight], alpha=2.5), softmax=False)
    graph = exbp.Explainer(model).session.graph
    assert "BatchNormalization" in {n.op_type for n in graph.nodes}
    gemm = next(n for n in graph.nodes if n.op_type == "Gemm")
    assert gemm.attrs["alpha"] == 1.0
    np.testing.assert_allclose(graph.constants[gemm.inputs[1]],
                               2.5 * numpy_helper.to_array(
                                   next(t for t in model.graph.initializer if t.name == weight)))


@pytest.mark.parametrize("opset", [9, 17])
def test_parameters_are_read_into_one_form_whatever_the_opset(opset):
    """Pad, Slice and ReduceSum took attributes before opsets 11, 10 and 13 and constant inputs
    after; the read_parameters pass gives their rules the same attributes either way."""
    b = ModelBuilder((1, 2, 6, 6), opset=opset)
    ints = lambda values: b.const(np.array(values, np.int64))  # noqa: E731
    if opset < 10:
        padded = b.node("Pad", [b.input_name], pads=[0, 0, 1, 2, 0, 0, 2, 1])
        sliced = b.node("Slice", [padded], starts=[1], ends=[4], axes=[2])
        reduced = b.node("ReduceSum", [sliced], axes=[3], keepdims=1)
    else:
        padded = b.node("Pad", [b.input_name, ints([0, 0, 1, 2, 0, 0, 2, 1])])
        sliced = b.node("Slice", [padded, ints([1]), ints([4]), ints([2])])
        reduced = b.node("ReduceSum", [sliced, ints([3])], keepdims=1)
    graph = exbp.Explainer(b.build(b.flatten(reduced), softmax=False)).session.graph
    attrs = {n.op_type: n.attrs for n in graph.nodes}
    assert attrs["Pad"]["pads"] == (0, 0, 1, 2, 0, 0, 2, 1) and attrs["Pad"]["pad_axes"] is None
    assert (attrs["Slice"]["starts"], attrs["Slice"]["ends"], attrs["Slice"]["axes"],
            attrs["Slice"]["steps"]) == ((1,), (4,), (2,), (1,))
    assert tuple(attrs["ReduceSum"]["axes"]) == (3,)
