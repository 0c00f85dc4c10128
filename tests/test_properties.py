"""Property-based tests over random small CNN graphs (docs/method.md §1 and §7).

A Hypothesis strategy draws a tiny network from the supported ops — Conv (kernel 1–3, stride 1–2,
grouped or depthwise, with or without bias), a foldable BatchNormalization after a Conv, Relu,
LeakyRelu, Clip (ReLU6), SiLU written as ``x * sigmoid(x)``, MaxPool and AveragePool, a residual
Add of a block with its input and a Concat of two branches — ending in GlobalAveragePool, Flatten
and a Gemm named ``classifier``. Each example has its own seed for weights and inputs. On every
drawn graph:

1. the walk runs and returns finite maps of the documented shape (N, K, h, w), for MWP and c-MWP,
   at the default layer and at the input pixels;
2. MWP is ≥ 0 and, with a one-hot top signal, the mass at every cut tensor is 1 less what the
   oracle lost above it;
3. c-MWP's signal at the classifier's input, before the clamp, sums to 0 (when both the target
   and its dual have a winner; to 1 or −1 when only one does);
4. a batch gives the same maps as its images one at a time;
5. the signal at the input pixels equals the dense oracle's, for mixed-sign and non-negative
   inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import numpy_helper

import exbp
from builders import ModelBuilder
from conftest import TOLERANCES, assert_close
from oracle import Oracle, forward

SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_CHANNELS = 6


class Net:
    """A drawn network: its builder (for inputs), the model, and what the properties need."""

    def __init__(self, builder: ModelBuilder, seed: int, model: onnx.ModelProto, classes: int,
                 classifier_input: str, description: list):
        self.builder, self.seed, self.model, self.classes = builder, seed, model, classes
        self.classifier_input, self.description = classifier_input, description

    def __repr__(self):  # what Hypothesis prints for a falsifying example
        return (f"Net(input={self.builder.input_shape}, seed={self.seed}, "
                f"classes={self.classes}, blocks={self.description})")


# ---- the strategy --------------------------------------------------------------------------------

def _out_size(size, kernel, stride, pad_total):
    return (size + pad_total - kernel) // stride + 1


def _draw_conv(draw, b, x, channels, size, log, *, same_shape=False, out_channels=None):
    """A Conv (+ optional folded BatchNormalization); returns (tensor, channels, size)."""
    kernel = draw(st.sampled_from([1, 3])) if same_shape else draw(st.integers(1, 3))
    stride = 1 if same_shape or size < 4 else draw(st.integers(1, 2))
    if kernel == 2:
        pad = draw(st.sampled_from([[0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]]))
    else:
        pad = [kernel // 2] * 4
    if out_channels is None:
        out_channels = channels if same_shape else draw(st.integers(1, MAX_CHANNELS))
    # groups: plain, depthwise (with multiplier), or any common divisor of in and out channels
    options = [1] + [g for g in range(2, channels + 1) if channels % g == 0 and out_channels % g == 0]
    group = draw(st.sampled_from(options))
    bias = draw(st.booleans())
    batchnorm = draw(st.booleans())
    x = b.conv(x, out_channels, kernel=kernel, stride=stride, pad=pad, group=group, bias=bias)
    size = _out_size(size, kernel, stride, pad[0] + pad[2])
    log.append(f"conv(out={out_channels}, k={kernel}, s={stride}, pad={pad}, group={group}, "
               f"bias={bias})")
    if batchnorm:
        x = b.batchnorm(x, negative_scale=draw(st.booleans()))
        log.append("batchnorm")
    return x, out_channels, size


def _draw_activation(draw, b, x, log):
    kind = draw(st.sampled_from(["relu", "leaky_relu", "relu6", "silu"]))
    log.append(kind)
    if kind == "relu":
        return b.relu(x)
    if kind == "leaky_relu":
        return b.node("LeakyRelu", [x], alpha=0.1)
    if kind == "relu6":
        return b.clip(x)
    return b.node("Mul", [x, b.node("Sigmoid", [x])])


@st.composite
def networks(draw):
    channels = draw(st.integers(1, 3))
    size = draw(st.integers(6, 12))
    seed = draw(st.integers(0, 2 ** 16))
    b = ModelBuilder((1, channels, size, size), seed=seed)
    x, log = b.input_name, []
    for _ in range(draw(st.integers(1, 5))):
        block = draw(st.sampled_from(["conv", "activation", "pool", "residual", "concat"]))
        if block == "conv":
            x, channels, size = _draw_conv(draw, b, x, channels, size, log)
            if draw(st.booleans()):
                x = _draw_activation(draw, b, x, log)
        elif block == "activation":
            x = _draw_activation(draw, b, x, log)
        elif block == "pool":
            op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
            # onnx's ReferenceEvaluator (the oracle's forward pass) reads a MaxPool's asymmetric
            # pads in the wrong order and gives the wrong shape: only AveragePool gets them
            windows = [(2, 2, [0] * 4), (3, 2, [0] * 4), (3, 1, [1] * 4), (2, 1, [0] * 4)]
            if op == "AveragePool":
                windows += [(2, 1, [0, 0, 1, 1]), (3, 2, [1, 1, 0, 0])]
            kernel, stride, pads = draw(st.sampled_from(windows))
            if size < kernel or _out_size(size, kernel, stride, pads[0] + pads[2]) < 2:
                continue
            x = b.node(op, [x], kernel_shape=[kernel] * 2, strides=[stride] * 2, pads=pads)
            size = _out_size(size, kernel, stride, pads[0] + pads[2])
            log.append(f"{op}(k={kernel}, s={stride}, pads={pads})")
        elif block == "residual":
            log.append("residual[")
            branch = x
            for _ in range(draw(st.integers(1, 2))):
                branch, _, _ = _draw_conv(draw, b, branch, channels, size, log, same_shape=True)
                if draw(st.booleans()):
                    branch = _draw_activation(draw, b, branch, log)
            log.append("]")
            x = b.add(branch, x) if draw(st.booleans()) else b.add(x, branch)
            if draw(st.booleans()):
                x = b.relu(x)
                log.append("relu")
        else:  # concat of two branches of the same spatial size (at most MAX_CHANNELS + 3)
            log.append("concat[")
            parts, total = [], 0
            for _ in range(2):
                kind = draw(st.sampled_from(["conv", "identity", "maxpool"]))
                if kind == "conv" or total + channels > MAX_CHANNELS:
                    part, part_channels, _ = _draw_conv(
                        draw, b, x, channels, size, log, same_shape=True,
                        out_channels=draw(st.integers(1, 3)))
                    if draw(st.booleans()):
                        part = _draw_activation(draw, b, part, log)
                elif kind == "identity":
                    part, part_channels = x, channels
                    log.append("identity")
                else:
                    part = b.maxpool(x, kernel=3, stride=1, pads=[1, 1, 1, 1])
                    part_channels = channels
                    log.append("maxpool(k=3, s=1, pads=1)")
                parts.append(part)
                total += part_channels
                log.append("|")
            log[-1] = "]"
            x, channels = b.concat(parts), total
    classes = draw(st.integers(3, 6))
    features = b.flatten(b.gap(x))
    model = b.build(b.gemm(features, classes, name="classifier"))
    return Net(b, seed, model, classes, features, log)


def _inputs(net, data, batch=None):
    """Inputs of mixed sign or non-negative, from a seed Hypothesis draws."""
    seed = data.draw(st.integers(0, 2 ** 16), label="input seed")
    positive = data.draw(st.booleans(), label="non-negative input")
    return net.builder.input(seed=seed, batch=batch, positive=positive)


def _explainer(net, data):
    """``cpu``: onnxruntime records Z and the max-pool winners; ``numpy``: exbp's own kernels
    (the CuPy backend's) compute them in the rules."""
    return exbp.Explainer(net.model, device=data.draw(st.sampled_from(["cpu", "numpy"]),
                                                      label="device"))


def _one_hot(classes, target):
    top = np.zeros((1, 1, classes), np.float32)
    top[0, 0, target] = 1.0
    return top


# ---- the properties ------------------------------------------------------------------------------

@settings(max_examples=40, **SETTINGS)
@given(net=networks(), data=st.data())
def test_walk_returns_finite_maps_of_the_documented_shape(net, data):
    explainer = exbp.Explainer(net.model)
    x = _inputs(net, data)
    values = forward(net.model, x)
    for layer in (explainer.default_layer(x.shape), net.builder.input_name):
        results = explainer.explain_methods(x, targets="top1", layer=layer)
        assert set(results) == {"mwp", "cmwp"}
        assert layer in values, layer
        spatial = values[layer].shape[2:]
        for method, result in results.items():
            assert result.layer == layer and result.method == method
            assert result.maps.dtype == np.float32
            assert result.maps.shape == (1, 1) + tuple(spatial), (method, layer, result.maps.shape)
            assert np.isfinite(result.maps).all(), (method, layer)
            assert result.maps.min() >= 0, (method, layer)   # MWP ≥ 0; c-MWP clamped
        np.testing.assert_array_equal(results["mwp"].targets, [[values[Oracle(net.model).logits]
                                                                 .argmax()]])


@settings(max_examples=40, **SETTINGS)
@given(net=networks(), data=st.data())
def test_mwp_is_non_negative_and_conserved_at_every_cut(net, data):
    explainer = _explainer(net, data)
    x = _inputs(net, data)
    target = data.draw(st.integers(0, net.classes - 1), label="target")
    top = _one_hot(net.classes, target)
    oracle = Oracle(net.model)
    oracle.signal(x, top, net.builder.input_name)   # the whole walk: every node's lost mass
    order = [n.name for n in net.model.graph.node]
    producer = {o: n.name for n in net.model.graph.node for o in n.output}
    cuts = explainer.session.catalogue.cuts
    assert cuts[0] == net.builder.input_name and net.classifier_input in cuts
    for layer in cuts:
        assert layer == net.builder.input_name or layer in producer, layer
        signal = explainer.propagate(x, top, layer=layer)
        start = order.index(producer[layer]) + 1 if layer in producer else 0
        lost_above = sum(float(oracle.lost.get(name, [0])[0]) for name in order[start:])
        assert signal.min() >= 0, layer
        np.testing.assert_allclose(signal.sum(), 1.0 - lost_above, rtol=1e-4, atol=1e-6,
                                   err_msg=f"at cut {layer!r}")


@settings(max_examples=40, **SETTINGS)
@given(net=networks(), data=st.data())
def test_contrastive_signal_sums_to_zero_at_classifier_input(net, data):
    explainer = exbp.Explainer(net.model)
    x = _inputs(net, data)
    target = data.draw(st.integers(0, net.classes - 1), label="target")
    signal = explainer.propagate(x, _one_hot(net.classes, target), layer=net.classifier_input,
                                 methods=("cmwp",))
    # The target's mass reaches the features when some contribution x_j·w_tj is > 0, its dual's
    # when some is < 0; each is 1 when it does, so the difference is 0 when both do.
    features = forward(net.model, x)[net.classifier_input].astype(np.float64)[0]
    weight = next(numpy_helper.to_array(t) for t in net.model.graph.initializer
                  if t.name == next(n for n in net.model.graph.node
                                    if n.name == "classifier").input[1])[target]
    contributions = features * weight.astype(np.float64)
    excited, inhibited = bool((contributions > 0).any()), bool((contributions < 0).any())
    expected = float(excited) - float(inhibited)
    assert abs(signal.sum() - expected) < 1e-4, (signal.sum(), expected)
    if excited and inhibited:  # features that excite the target gain mass, the others lose it
        assert signal.min() < 0 < signal.max()


@settings(max_examples=30, **SETTINGS)
@given(net=networks(), data=st.data())
def test_batch_equals_images_one_by_one(net, data):
    explainer = _explainer(net, data)
    x = _inputs(net, data, batch=3)
    target = data.draw(st.integers(0, net.classes - 1), label="target")
    for layer in (explainer.default_layer(x.shape), net.builder.input_name):
        together = explainer.explain_methods(x, targets=[target], layer=layer)
        for i in range(3):
            alone = explainer.explain_methods(x[i:i + 1], targets=[target], layer=layer)
            assert_close(together["mwp"].maps[i:i + 1], alone["mwp"].maps)
            # c-MWP is the clamped difference of two signals as large as MWP's: where they cancel
            # exactly (a map that is 0 everywhere, as on a tensor whose every position is the
            # same) what is left is their float32 rounding, which a batch computes in another
            # order. Its absolute tolerance is therefore 1e-6 of the MWP map's peak.
            _, peak_fraction = TOLERANCES["oracle"]
            scale = max(np.abs(alone["mwp"].maps).max(), np.abs(alone["cmwp"].maps).max())
            np.testing.assert_allclose(together["cmwp"].maps[i:i + 1], alone["cmwp"].maps,
                                       rtol=TOLERANCES["oracle"][0], atol=peak_fraction * scale)
            for method in ("mwp", "cmwp"):
                np.testing.assert_array_equal(together[method].targets[i:i + 1],
                                              alone[method].targets)


@settings(max_examples=40, **SETTINGS)
@given(net=networks(), data=st.data())
def test_signal_at_pixels_matches_dense_oracle(net, data):
    explainer = _explainer(net, data)
    seed = data.draw(st.integers(0, 2 ** 16), label="input seed")
    top = np.random.default_rng(seed).uniform(0.1, 1.0, (2, 1, net.classes)).astype(np.float32)
    for positive in (False, True):   # the z⁺ rule's negative branch, then the paper's case
        x = net.builder.input(seed=seed, positive=positive)
        got = explainer.propagate(x, top, layer=net.builder.input_name)
        want = Oracle(net.model).signal(x, top, net.builder.input_name)
        assert got.shape == want.shape
        assert_close(got, want)
