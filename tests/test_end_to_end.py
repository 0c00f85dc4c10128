"""The public API on VGG-, Inception-, ResNet- and MobileNet-like models against the oracle."""

import numpy as np
import pytest
from PIL import Image

import exbp
from conftest import assert_close
from builders import ModelBuilder, inception_like, mobilenet_like, resnet_like, vgg_like
from oracle import Oracle, forward

ARCHITECTURES = {"vgg": vgg_like, "inception": inception_like, "resnet": resnet_like,
                 "mobilenet": mobilenet_like}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def architecture(request):
    builder, model = ARCHITECTURES[request.param]()
    return builder, model, exbp.Explainer(model)


@pytest.fixture(scope="module", params=["cpu", "numpy"])
def device(request):
    return request.param


def _oracle_maps(model, x, targets, layer, method):
    """Maps from the oracle: one-hot top signal, channel sum, c-MWP clamp; (N, K, h, w)."""
    oracle = Oracle(model, classifier="classifier")
    logits = forward(model, x)[oracle.logits]
    top = np.zeros((len(targets),) + logits.shape)
    for k, t in enumerate(targets):
        top[k, :, t] = 1.0
    contrast = (1.0,) if method == "cmwp" else None
    maps = oracle.signal(x, top, layer, contrast).sum(axis=2).swapaxes(0, 1)
    return np.maximum(maps, 0) if method == "cmwp" else maps



@pytest.mark.parametrize("method", ["mwp", "cmwp"])
def test_maps_match_oracle_at_default_layer_and_pixels(architecture, method, device):
    b, model, _ = architecture
    explainer = exbp.Explainer(model, device=device)
    x = b.input(seed=5, batch=2)
    for layer in (explainer.default_layer(x.shape), b.input_name):
        result = explainer.explain(x, targets=[3, 7], layer=layer, method=method)
        assert result.maps.dtype == np.float32 and result.maps.shape[:2] == (2, 2)
        assert result.layer == layer and result.method == method
        np.testing.assert_array_equal(result.targets, [[3, 7], [3, 7]])
        assert_close(result.maps, _oracle_maps(model, x, [3, 7], layer, method))


def test_logits_and_top_k_targets(architecture):
    b, model, explainer = architecture
    x = b.input(seed=6, batch=2)
    oracle_logits = forward(model, x)[Oracle(model).logits]
    result = explainer.explain(x, targets="top5", method="mwp")
    np.testing.assert_allclose(result.logits, oracle_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(result.targets, np.argsort(-oracle_logits, axis=1)[:, :5])
    top1 = explainer.explain(x, method="mwp")
    np.testing.assert_array_equal(top1.targets[:, 0], oracle_logits.argmax(axis=1))


def test_one_pass_equals_separate_calls(architecture):
    b, _, explainer = architecture
    x = b.input(seed=7, batch=2)
    both = explainer.explain_methods(x, targets=[1, 4, 9])
    for method in ("mwp", "cmwp"):
        for k, target in enumerate([1, 4, 9]):
            alone = explainer.explain(x, targets=target, method=method)
            assert_close(both[method].maps[:, k:k + 1], alone.maps)


def test_per_image_targets(architecture):
    b, _, explainer = architecture
    x = b.input(seed=8, batch=2)
    result = explainer.explain(x, targets=[[2], [5]], method="cmwp")
    np.testing.assert_array_equal(result.targets, [[2], [5]])
    assert_close(result.maps[1:], explainer.explain(x[1:], targets=5, method="cmwp").maps)


def test_targets_written_as_text(architecture):
    """A class index as a command line or a query writes it ("5") is that index."""
    b, _, explainer = architecture
    x = b.input(seed=8)
    np.testing.assert_array_equal(explainer.explain(x, targets=["5", " top1", 2]).targets[0][:1], [5])
    assert_close(explainer.explain(x, targets="5").maps, explainer.explain(x, targets=5).maps)
    with pytest.raises(exbp.TargetError, match="99"):
        explainer.check_targets(["99"])


def test_linearity(architecture):
    b, model, explainer = architecture
    x = b.input(seed=9)
    rng = np.random.default_rng(0)
    first, second = rng.uniform(size=(2, 1, 1, 10)).astype(np.float32)
    combined = explainer.propagate(x, 2.0 * first + 0.5 * second, layer=b.input_name)
    separate = (2.0 * explainer.propagate(x, first, layer=b.input_name)
                + 0.5 * explainer.propagate(x, second, layer=b.input_name))
    assert_close(combined, separate)


def test_conservation_at_every_cut_layer(architecture):
    """With a one-hot top signal, the MWP mass at a layer every path crosses is 1 minus what
    the oracle lost above it, and never negative."""
    b, model, explainer = architecture
    x = b.input(seed=10)
    top = np.zeros((1, 1, 10), np.float32)
    top[0, 0, 2] = 1.0
    order = [n.name for n in model.graph.node]
    producer = {o: n.name for n in model.graph.node for o in n.output}
    for layer in explainer.session.catalogue.cuts:
        signal = explainer.propagate(x, top, layer=layer)
        oracle = Oracle(model)
        oracle.signal(x, top, layer)
        start = order.index(producer[layer]) + 1 if layer in producer else 0
        lost_above = sum(float(oracle.lost.get(name, [0])[0]) for name in order[start:])
        assert signal.min() >= 0
        np.testing.assert_allclose(signal.sum(), 1.0 - lost_above, rtol=1e-5)


def test_contrastive_signal_sums_to_zero_at_classifier_input(architecture):
    b, model, explainer = architecture
    classifier = next(n for n in model.graph.node if n.name == "classifier")
    x = b.input(seed=12)
    top = np.zeros((1, 1, 10), np.float32)
    top[0, 0, 6] = 1.0
    signal = explainer.propagate(x, top, layer=classifier.input[0], methods=("cmwp",))
    assert abs(signal.sum()) < 1e-5
    assert signal.min() < 0 < signal.max()


def test_resize_matches_pillow_bilinear(architecture):
    b, _, explainer = architecture
    x = b.input(seed=13)
    small = explainer.explain(x, targets=1, method="mwp")
    large = explainer.explain(x, targets=1, method="mwp", resize=True)
    assert large.maps.shape == (1, 1) + x.shape[2:]
    expected = Image.fromarray(small.maps[0, 0], mode="F").resize(x.shape[:1:-1], Image.BILINEAR)
    np.testing.assert_allclose(large.maps[0, 0], np.asarray(expected), rtol=1e-5, atol=1e-7)


def _kernel_calls(explainer, monkeypatch, x, layer):
    """(conv calls, conv_transpose calls) for 1 and for 5 targets."""
    calls = {"conv": 0, "conv_transpose": 0}
    backend_type = type(explainer.session.backend)
    for kernel in calls:
        original = getattr(backend_type, kernel)

        def counting(self, *args, _kernel=kernel, _original=original, **kwargs):
            calls[_kernel] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(backend_type, kernel, counting)
    counts = []
    for targets in ([1], [1, 2, 3, 4, 5]):
        calls.update(conv=0, conv_transpose=0)
        explainer.explain(x, targets=targets, layer=layer, method="cmwp")
        counts.append(dict(calls))
    return counts


def test_normaliser_is_computed_once_for_all_targets(architecture, monkeypatch):
    """Z takes one forward-like pass whatever the number of targets: in the CPU walk the recording
    computes it (no conv call but the negative contributions' sums of the Convs whose negative
    outputs carry signal, §3.1: at most two each); with exbp's own kernels one conv per Conv op."""
    b, model, explainer = architecture
    x = b.input(seed=14)
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    signed = sum(n.op_type == "Conv" and any(
        r.op_type != "Relu" for r in model.graph.node if n.output[0] in r.input) for n in model.graph.node)
    one, five = _kernel_calls(exbp.Explainer(model, engine="walk"), monkeypatch, x, b.input_name)
    assert one == five and one["conv"] <= 2 * signed and one["conv_transpose"] >= convs
    one, five = _kernel_calls(exbp.Explainer(model, device="numpy"), monkeypatch, x, b.input_name)
    assert one == five and one["conv"] >= convs


def test_fixed_batch_model_runs_image_by_image():
    b = ModelBuilder((1, 3, 16, 16), seed=2, dynamic_batch=False)
    x = b.relu(b.conv(b.input_name, 4))
    model = b.build(b.gemm(b.flatten(b.maxpool(x)), 5, name="classifier"))
    explainer = exbp.Explainer(model)
    images = b.input(seed=3, batch=3)
    together = explainer.explain(images, targets="top1")
    for i in range(3):
        alone = explainer.explain(images[i:i + 1], targets="top1")
        assert_close(together.maps[i:i + 1], alone.maps)
        np.testing.assert_array_equal(together.targets[i:i + 1], alone.targets)


def test_convolutional_head_uses_softmax_over_positions():
    b = ModelBuilder((1, 3, 12, 12), seed=4)
    features = b.maxpool(b.relu(b.conv(b.input_name, 6)))
    model = b.build(b.conv(features, 4, kernel=1, pad=0, name="classifier"), softmax=False)
    x = b.input(seed=5)
    logits = forward(model, x)[model.graph.output[0].name]           # (1, 4, 6, 6)
    weights = np.exp(logits[0, 2] - logits[0, 2].max())
    top = np.zeros((1,) + logits.shape)
    top[0, 0, 2] = weights / weights.sum()
    expected = np.maximum(Oracle(model, classifier="classifier").signal(
        x, top, b.input_name, contrast=(1.0,)).sum(axis=2), 0)
    result = exbp.Explainer(model).explain(x, targets=2, layer=b.input_name, method="cmwp")
    assert_close(result.maps[:, 0], expected[0])


def test_channels_last_input():
    b = ModelBuilder((1, 10, 10, 3), seed=6)
    nchw = b.node("Transpose", [b.input_name], perm=[0, 3, 1, 2])
    features = b.maxpool(b.relu(b.conv(nchw, 4)))
    model = b.build(b.gemm(b.flatten(features), 5, name="classifier"))
    explainer = exbp.Explainer(model)
    x = b.input(seed=7)
    result = explainer.explain(x, targets=1, layer=b.input_name, method="mwp", resize=True)
    assert explainer.input_spec.channels_last
    expected = Oracle(model).signal(x, np.eye(5, dtype=np.float32)[None, 1:2], b.input_name).sum(axis=-1)
    assert_close(result.maps[:, 0], expected[0])
