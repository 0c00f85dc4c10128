"""Layouts derived from the graph (docs/method.md §5.1): which axis of each tensor holds the
channels, read from what the graph does with the input, never guessed from a shape.

The channels-last graphs below are written the way TensorFlow and JAX exporters write them: NHWC
tensors between Transposes around each Conv, element-wise ops, residual Adds and a ReduceMean over
axes (1, 2) on NHWC tensors, and a Keras preprocessing layer's Mul and Add by (1, 1, 1, 3)
constants before the first Transpose. Each is checked against the independent oracle, and against
the same weights written channels first.
"""

from __future__ import annotations

import numpy as np
import pytest

import exbp
from builders import TO_NCHW, ModelBuilder, residual_net
from conftest import assert_close
from oracle import Oracle
from exbp.preprocessing import resolve_preprocessing

def _inputs(size=32, seed=4):
    nchw = np.random.default_rng(seed).normal(size=(2, 3, size, size)).astype(np.float32)
    return nchw, np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))


def test_channels_last_block_maps_equal_the_oracle():
    b, model, blocks = residual_net(channels_last=True)
    _, x = _inputs()
    explainer = exbp.Explainer(model)
    top = np.zeros((1, 2, 5), np.float32)
    top[0, :, 1] = 1
    for layer in (blocks["residual"], b.input_name):
        expected = Oracle(model).signal(x, top, layer).sum(axis=-1)   # the channels are last here
        result = explainer.explain(x, targets=1, layer=layer, method="mwp")
        assert result.maps.shape == (2, 1) + expected.shape[2:]
        assert_close(result.maps[:, 0], expected[0])


@pytest.mark.parametrize("preprocessing", [False, True])
def test_the_same_weights_give_the_same_maps_in_either_layout(preprocessing):
    _, first, first_blocks = residual_net(channels_last=False, preprocessing=preprocessing)
    _, last, last_blocks = residual_net(channels_last=True, preprocessing=preprocessing)
    x_first, x_last = _inputs()
    a, b = exbp.Explainer(first), exbp.Explainer(last)
    assert_close(a.logits(x_first), b.logits(x_last))
    assert b.input_spec.channels_last and not a.input_spec.channels_last
    for name in ("stem", "residual", "down"):
        for method in ("mwp", "cmwp"):
            assert_close(b.explain(x_last, targets=[0, 3], layer=last_blocks[name], method=method).maps,
                         a.explain(x_first, targets=[0, 3], layer=first_blocks[name], method=method).maps)
    for method in ("mwp", "cmwp"):
        assert_close(b.explain(x_last, targets=2, layer=last.graph.input[0].name, method=method).maps,
                     a.explain(x_first, targets=2, layer=first.graph.input[0].name, method=method).maps)
    # the same block by default, not the Transpose that copies it to channels first
    by_tensor = {tensor: name for name, tensor in first_blocks.items()}
    assert by_tensor[a.default_layer()] == {t: n for n, t in last_blocks.items()}[b.default_layer()]


def test_layers_list_their_layout_and_skip_transposed_copies_for_the_default():
    b, model, blocks = residual_net(channels_last=True, preprocessing=True)
    explainer = exbp.Explainer(model)
    layouts = {layer.name: layer.layout for layer in explainer.layers()[:-1]}
    assert layouts[b.input_name] == "NHWC"
    assert layouts[blocks["residual"]] == "NHWC"
    # the Transposes' outputs, channels first, are layers too
    transposed = [n.output[0] for n in model.graph.node if n.op_type == "Transpose"
                  and list(n.attribute[0].ints) == TO_NCHW]
    assert {layouts[name] for name in transposed} == {"NCHW"}
    assert explainer.default_layer() == blocks["down"]


def test_preprocessing_reads_the_layout_the_graph_derives():
    """A channels-last input of 4 channels: the shape alone would say channels first."""
    b = ModelBuilder((1, 12, 12, 4), seed=2)
    features = b.relu(b.conv(b.node("Transpose", [b.input_name], perm=TO_NCHW), 5))
    model = b.build(b.gemm(b.flatten(b.gap(features)), 3))
    explainer = exbp.Explainer(model)
    assert explainer.input_spec.channels_last
    assert resolve_preprocessing(explainer.input_spec, {}).layout == "nhwc"
    assert resolve_preprocessing(explainer.input_spec.shape, {}).layout == "nchw"   # the shape's guess
    x = np.abs(np.random.default_rng(1).normal(size=(1, 12, 12, 4))).astype(np.float32)
    assert explainer.explain(x, layer=b.input_name).maps.shape == (1, 1, 12, 12)


def _shuffle_net():
    """A channel shuffle (Reshape → Transpose → Reshape) between convolutions, and a Reshape that
    mixes channels with rows."""
    b = ModelBuilder((1, 3, 8, 8), seed=5)
    x = b.relu(b.conv(b.input_name, 8))
    split = b.node("Reshape", [x, b.const(np.array([-1, 2, 4, 8, 8], np.int64))], name="split")
    swapped = b.node("Transpose", [split], perm=[0, 2, 1, 3, 4], name="swapped")
    shuffled = b.node("Reshape", [swapped, b.const(np.array([-1, 8, 8, 8], np.int64))], name="shuffled")
    features = b.relu(b.conv(shuffled, 4))
    mixed = b.node("Reshape", [features, b.const(np.array([-1, 32, 8], np.int64))], name="mixed")
    return b, b.build(b.gemm(b.flatten(mixed), 3, name="classifier"))


def test_a_channel_shuffle_keeps_the_channels_and_a_mixing_reshape_has_no_layout():
    b, model = _shuffle_net()
    explainer = exbp.Explainer(model)
    names = {layer.name: layer.layout for layer in explainer.layers()[:-1]}
    assert names["shuffled"] == "NCHW"
    assert "split" not in names and "mixed" not in names
    x = b.input(seed=2)
    top = np.zeros((1, 1, 3), np.float32)
    top[0, 0, 0] = 1
    expected = Oracle(model).signal(x, top, "shuffled").sum(axis=2)
    assert_close(explainer.explain(x, targets=0, layer="shuffled", method="mwp").maps[:, 0], expected[0])
    for layer, why in (("split", "split its channels"), ("mixed", "mixes channels and positions")):
        with pytest.raises(exbp.LayerError, match=why):
            explainer.explain(x, layer=layer)


def test_the_default_layer_is_never_above_the_classifier():
    """SqueezeNet's head: a 1×1 Conv classifier, ReLU, global pooling. Its output is the deepest
    cut of the right size, but c-MWP needs the classifier above the layer; and at its input (and
    below it through element-wise ops) MWP and the dual put the same mass on every position, so
    c-MWP keeps only what one of them lost where its Z is 0."""
    b = ModelBuilder((1, 3, 64, 64), seed=7)
    x = b.relu(b.conv(b.input_name, 6, stride=2))
    x = b.relu(b.conv(x, 8, stride=2))
    features = b.relu(b.conv(x, 8, stride=2))          # 8×8
    classifier_input = b.relu(b.conv(features, 8))
    scores = b.relu(b.conv(classifier_input, 5, kernel=1, pad=0, name="classifier"))
    model = b.build(b.flatten(b.gap(scores)))
    explainer = exbp.Explainer(model)
    assert explainer.default_layer() == features
    assert explainer.explain(b.input(), method="cmwp").maps.max() > 0



def test_squeeze_and_unsqueeze_keep_the_layout_when_the_sizes_are_known_only_at_run_time():
    """An excitation gate through Squeeze → Gemm → Unsqueeze on an input of any size."""
    b = ModelBuilder((1, 3, 12, 12), seed=8)
    b.inputs[0].type.tensor_type.shape.dim[2].dim_param = "height"
    b.inputs[0].type.tensor_type.shape.dim[3].dim_param = "width"
    x = b.relu(b.conv(b.input_name, 4))
    squeezed = b.node("Squeeze", [b.gap(x), b.const(np.array([2, 3], np.int64))])
    gate = b.node("Sigmoid", [b.gemm(squeezed, 4)])
    gated = b.node("Mul", [x, b.node("Unsqueeze", [gate, b.const(np.array([2, 3], np.int64))])],
                   name="gated")
    model = b.build(b.gemm(b.flatten(b.gap(gated)), 3, name="classifier"))
    explainer = exbp.Explainer(model)
    assert {layer.name: layer.layout for layer in explainer.layers()}["gated"] == "NCHW"
    x_in = b.input(seed=3)
    top = np.zeros((1, 1, 3), np.float32)
    top[0, 0, 2] = 1
    expected = Oracle(model).signal(x_in, top, "gated").sum(axis=2)
    assert_close(explainer.explain(x_in, targets=2, layer="gated", method="mwp").maps[:, 0], expected[0])


def test_a_transposed_copy_of_a_padded_tensor_is_no_layer_either():
    """jax2onnx pads channels last, then transposes to channels first for the max-pool."""
    b = ModelBuilder((1, 8, 8, 3), seed=9)
    x = b.relu(b.node("Transpose", [b.conv(b.node("Transpose", [b.input_name], perm=TO_NCHW), 4)],
                      perm=[0, 2, 3, 1]))
    padded = b.node("Pad", [x, b.const(np.array([0, 1, 1, 0, 0, 1, 1, 0], np.int64))], name="padded")
    copy = b.node("Transpose", [padded], perm=TO_NCHW, name="copy")
    model = b.build(b.gemm(b.flatten(b.gap(b.maxpool(copy, kernel=3, stride=2))), 3))
    explainer = exbp.Explainer(model)
    names = [layer.name for layer in explainer.layers()]
    assert x in names and "padded" not in names and "copy" not in names
    with pytest.raises(exbp.LayerError, match="border holds no image"):
        explainer.explain(b.input(), layer="copy")


def test_a_channel_shuffle_whose_shape_is_computed_keeps_its_layout():
    """torchvision's ShuffleNetV2 computes the shuffle's Reshape targets from Shape(x) (batch at
    run time): once that arithmetic is folded, the shapes are inferred again and the shuffled
    tensor is a layer — and the deepest cut, the default."""
    b = ModelBuilder((1, 3, 16, 16), seed=5)
    x = b.relu(b.conv(b.input_name, 8, stride=2))
    batch = b.node("Slice", [b.node("Shape", [x]), _ints(b, [0]), _ints(b, [1]), _ints(b, [0])])
    channels = b.node("Gather", [b.node("Shape", [x]), b.const(np.array(1, np.int64))])
    half = b.node("Unsqueeze", [b.node("Div", [channels, b.const(np.array(2, np.int64))]), _ints(b, [0])])
    split = b.node("Reshape", [x, b.node("Concat", [batch, _ints(b, [2]), half, _ints(b, [8, 8])], axis=0)])
    swapped = b.node("Transpose", [split], perm=[0, 2, 1, 3, 4])
    shuffled = b.node("Reshape", [swapped, b.node("Concat", [batch, _ints(b, [8, 8, 8])], axis=0)],
                      name="shuffled")
    weight = b.const(b.rng.normal(0, 0.5, (4, 8, 3, 3)).astype(np.float32))
    features = b.relu(b.node("Conv", [shuffled, weight], pads=[1, 1, 1, 1]))
    pooled = b.node("Flatten", [b.node("GlobalAveragePool", [features])])
    model = b.build(b.node("Gemm", [pooled, b.const(b.rng.normal(size=(4, 3)).astype(np.float32))],
                           name="classifier"), check=False)
    explainer = exbp.Explainer(model)
    assert {layer.name: layer.layout for layer in explainer.layers()}.get("shuffled") == "NCHW"
    x_in = b.input(seed=2)
    top = np.zeros((1, 1, 3), np.float32)
    top[0, 0, 1] = 1
    expected = Oracle(model).signal(x_in, top, "shuffled").sum(axis=2)
    assert_close(explainer.explain(x_in, targets=1, layer="shuffled", method="mwp").maps[:, 0], expected[0])


def _ints(b, values):
    return b.const(np.array(values, np.int64))
