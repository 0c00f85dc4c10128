"""SqueezeNet-, ShuffleNetV2- and ConvNeXt-like networks, as torchvision exports them at opset 17,
against the oracle: MWP and c-MWP at the pixels and at NCHW layers below the classifier."""

import numpy as np
import pytest

import exbp
from builders import ModelBuilder
from conftest import assert_close
from oracle import Oracle, forward


def _int(b, values):
    return b.const(np.asarray(values, dtype=np.int64))


def _floats(b, *shape, low=-1.0, high=1.0):
    return b.const(b.rng.uniform(low, high, shape).astype(np.float32))


def _fire(b, x, squeeze, expand):
    s = b.relu(b.conv(x, squeeze, kernel=1, pad=0))
    return b.concat([b.relu(b.conv(s, expand, kernel=1, pad=0)), b.relu(b.conv(s, expand))])


def squeezenet_like():
    """Stem, two Fire modules, and SqueezeNet's classifier: 1×1 Conv → ReLU → global pooling."""
    b = ModelBuilder((1, 3, 16, 16), seed=12)
    x = b.maxpool(b.relu(b.conv(b.input_name, 8, stride=2)))
    x = _fire(b, _fire(b, x, 4, 4), 4, 4)
    logits = b.flatten(b.gap(b.relu(b.conv(x, 6, kernel=1, pad=0, name="classifier"))))
    return b, b.build(logits)


def _channel_shuffle(b, x, channels, size):
    """PyTorch's channel_shuffle: view (N, 2, C/2, H, W) with N from Shape(x), transpose, view back."""
    batch = b.node("Unsqueeze", [b.node("Gather", [b.node("Shape", [x]), _int(b, 0)], axis=0), _int(b, [0])])
    grouped = b.node("Reshape", [x, b.concat([batch, _int(b, [2, channels // 2, size, size])], axis=0)])
    swapped = b.node("Transpose", [grouped], perm=[0, 2, 1, 3, 4])
    return b.node("Reshape", [swapped, b.concat([batch, _int(b, [channels, size, size])], axis=0)])


def shufflenet_like():
    """Two ShuffleNetV2 units: chunk (bounds from Shape(x)[1]), a branch with a linear depthwise
    conv, concat, channel shuffle."""
    b = ModelBuilder((1, 3, 8, 8), seed=13)
    x = b.relu(b.conv(b.input_name, 6))
    for _ in range(2):
        channels = b.node("Gather", [b.node("Shape", [x]), _int(b, [1])], axis=0)
        half = b.node("Div", [b.node("Add", [channels, _int(b, [1])]), _int(b, [2])])
        kept = b.node("Slice", [x, _int(b, [0]), half, _int(b, [1])])
        branch = b.node("Slice", [x, half, b.node("Mul", [half, _int(b, [2])]), _int(b, [1])])
        weight = b.rng.normal(0, 0.6, (3, 1, 3, 3)).astype(np.float32)
        depthwise = b.node("Conv", [b.relu(branch), b.const(weight)], pads=[1, 1, 1, 1], group=3)
        point = b.node("Conv", [depthwise, b.const(b.rng.normal(0, 0.6, (3, 3, 1, 1)).astype(np.float32))])
        x = _channel_shuffle(b, b.concat([kept, b.relu(point)]), 6, 8)
    pooled = b.node("ReduceMean", [x], axes=[2, 3], keepdims=0)
    weight = b.rng.normal(size=(5, 6)).astype(np.float32)
    return b, b.build(b.node("Gemm", [pooled, b.const(weight)], transB=1, name="classifier"))


def _layer_norm_2d(b, x, channels):
    h = b.node("Transpose", [x], perm=[0, 2, 3, 1])
    h = b.node("LayerNormalization", [h, _floats(b, channels, low=0.5, high=1.5), _floats(b, channels)],
               epsilon=1e-6)
    return b.node("Transpose", [h], perm=[0, 3, 1, 2])


def _gelu(b, x):
    erf = b.node("Erf", [b.node("Div", [x, b.const(np.float32(np.sqrt(2.0)))])])
    return b.node("Mul", [b.node("Mul", [x, b.node("Add", [erf, b.const(np.float32(1.0))])]),
                          b.const(np.float32(0.5))])


def _convnext_block(b, x, channels):
    h = b.node("Transpose", [b.conv(x, channels, group=channels)], perm=[0, 2, 3, 1])
    h = b.node("LayerNormalization", [h, _floats(b, channels, low=0.5, high=1.5), _floats(b, channels)],
               epsilon=1e-6)
    h = b.node("Add", [_floats(b, 2 * channels), b.node("MatMul", [h, _floats(b, channels, 2 * channels)])])
    h = b.node("Add", [_floats(b, channels), b.node("MatMul", [_gelu(b, h), _floats(b, 2 * channels, channels)])])
    h = b.node("Mul", [_floats(b, channels, 1, 1, low=0.2, high=1.0), b.node("Transpose", [h], perm=[0, 3, 1, 2])])
    return b.add(h, x)


def convnext_like():
    """Stem with LayerNorm2d, a block, LayerNorm2d downsampling, a block, pooled LayerNorm, Linear."""
    b = ModelBuilder((1, 3, 8, 8), seed=14)
    x = _convnext_block(b, _layer_norm_2d(b, b.conv(b.input_name, 5, kernel=2, stride=2, pad=0), 5), 5)
    x = _convnext_block(b, b.conv(_layer_norm_2d(b, x, 5), 6, kernel=2, stride=2, pad=0), 6)
    pooled = b.flatten(_layer_norm_2d(b, b.gap(x), 6))
    return b, b.build(b.node("Gemm", [pooled, _floats(b, 5, 6), _floats(b, 5)], transB=1, name="classifier"))


FAMILIES = {"squeezenet": squeezenet_like, "shufflenet": shufflenet_like, "convnext": convnext_like}


def _oracle_maps(model, x, targets, layer, method, channels_last=False):
    oracle = Oracle(model, classifier="classifier")
    logits = forward(model, x)[oracle.logits]
    top = np.zeros((len(targets),) + logits.shape)
    for k, t in enumerate(targets):
        top[k, :, t] = 1.0
    signal = oracle.signal(x, top, layer, (1.0,) if method == "cmwp" else None)
    maps = signal.sum(axis=-1 if channels_last else 2).swapaxes(0, 1)   # (N, H, W, C) sums the last
    return np.maximum(maps, 0) if method == "cmwp" else maps


def _channels_last(model) -> set:
    """The tensors between a Transpose to channels-last and the Transpose back (ConvNeXt's)."""
    found = set()
    for node in model.graph.node:
        perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
        if node.op_type == "Transpose" and perm == [[0, 2, 3, 1]]:
            found.update(node.output)
        elif node.op_type != "Transpose" and any(name in found for name in node.input):
            found.update(node.output)
    return found


def _map_layers(explainer, b, model):
    """The pixels and every 4-D tensor of the catalogue, each with whether its channels are last
    (found here from the Transposes, independently of exbp's layouts, which must agree)."""
    channels_last = _channels_last(model)
    layers = [layer for layer in explainer.layers()[:-1] if layer.shape and len(layer.shape) == 4]
    for layer in layers:
        assert layer.layout == ("NHWC" if layer.name in channels_last else "NCHW"), layer
    return [(layer.name, layer.name in channels_last) for layer in layers]


@pytest.mark.parametrize("method", ["mwp", "cmwp"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_matches_the_oracle_at_the_pixels_and_every_layer(family, method):
    b, model = FAMILIES[family]()
    explainer = exbp.Explainer(model)
    assert explainer.report().explainable and explainer.refusal(b.input_name, "cmwp") is None
    x = b.input(seed=8, batch=2)
    logits = forward(model, x)[model.graph.output[0].name]
    targets = [int(t) for t in np.argsort(-logits[0])[:2]]   # SqueezeNet: classes scoring > 0
    layers = _map_layers(explainer, b, model)
    assert len(layers) > 2 and layers[0][0] == b.input_name
    for layer, channels_last in layers:
        shape = explainer.session.graph.shapes.get(layer) or (0, 0, 0, 0)
        spatial = shape[1:3] if channels_last else shape[2:]
        if method == "cmwp" and (explainer.refusal(layer, "cmwp") is not None or spatial == (1, 1)):
            continue   # above the classifier, or one position, where the difference sums to 0
        got = explainer.explain(x, targets=targets, layer=layer, method=method).maps
        assert_close(got, _oracle_maps(model, x, targets, layer, method, channels_last))


def test_cmwp_at_the_input_of_a_1x1_conv_classifier_is_zero():
    """docs/method.md §4: each position of a 1×1 Conv draws on its own input position only, so the
    target's and the dual's channel sums agree there; one Fire module lower they do not."""
    b, model = squeezenet_like()
    explainer = exbp.Explainer(model)
    x = b.input(seed=8, batch=2)
    classifier_input = next(n.input[0] for n in model.graph.node if n.name == "classifier")
    below = next(n.output[0] for n in model.graph.node if n.op_type == "MaxPool")
    targets = [int(np.argmax(explainer.logits(x)[0]))]
    top = _one_hot(explainer, x, targets[0])
    difference = explainer.propagate(x, top, layer=classifier_input, methods=("cmwp",))[0].sum(axis=1)
    target = explainer.propagate(x, top, layer=classifier_input, methods=("mwp",))[0].sum(axis=1)
    # 0 wherever both the target and the dual have a winner; where the dual has none (every
    # contribution positive), the target's own mass, and where the target has none, -its signal
    zero = np.abs(difference) < 1e-6
    assert np.all(zero | (np.abs(difference - target) < 1e-6) | (target < 1e-9))
    assert zero.mean() > 0.5
    assert explainer.explain(x, targets=targets, layer=below, method="cmwp").maps.max() > 1e-3


def _one_hot(explainer, x, target):
    logits = explainer.logits(x)
    top = np.zeros((1,) + logits.shape, np.float32)
    top[0, :, target] = 1.0
    return top
