"""The hand-computed cases of docs/method.md §7, with expected values worked out on paper."""

import numpy as np
import pytest

import exbp
from builders import ModelBuilder


def _propagate(model, x, top, layer, methods=("mwp",)):
    """The signal from both backends, which must agree exactly on these hand cases."""
    signals = [exbp.Explainer(model, device=device).propagate(
        np.asarray(x, np.float32), np.asarray(top, np.float32), layer=layer, methods=methods)
        for device in ("cpu", "numpy")]
    np.testing.assert_allclose(signals[0], signals[1], rtol=1e-6, atol=1e-7)
    return signals[0]


def test_max_pool_routes_everything_to_the_first_winner():
    b = ModelBuilder((1, 1, 2, 4), dynamic_batch=False)
    model = b.build(b.flatten(b.maxpool(b.input_name)), softmax=False)
    # window 1 holds 3 at (0, 1) and at (1, 0); window 2 holds 5 three times
    x = [[[[1, 3, 5, 5], [3, 2, 5, 1]]]]
    got = _propagate(model, x, [[[0.3, 0.7]]], b.input_name)
    expected = np.zeros((1, 1, 1, 2, 4), np.float32)
    expected[0, 0, 0, 0, 1] = 0.3
    expected[0, 0, 0, 0, 2] = 0.7
    np.testing.assert_array_equal(got, expected)


def test_concat_splits_exactly():
    b = ModelBuilder((1, 2, 1, 1), dynamic_batch=False)
    first, second = b.relu(b.input_name), b.node("Sigmoid", [b.input_name])
    model = b.build(b.concat([first, second]), softmax=False)
    top = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 4, 1, 1)
    x = [[[[0.5]], [[2.0]]]]
    np.testing.assert_array_equal(_propagate(model, x, top, first).reshape(-1), [1.0, 2.0])
    np.testing.assert_array_equal(_propagate(model, x, top, second).reshape(-1), [3.0, 4.0])
    np.testing.assert_array_equal(_propagate(model, x, top, b.input_name).reshape(-1), [4.0, 6.0])


def test_add_shares_by_contribution():
    b = ModelBuilder((1, 2, 1, 1), dynamic_batch=False)
    starts, ends, axes = (b.const(np.array(v, np.int64)) for v in ([0], [1], [1]))
    left = b.node("Slice", [b.input_name, starts, ends, axes])
    right = b.node("Slice", [b.input_name, ends, b.const(np.array([2], np.int64)), axes])
    model = b.build(b.add(left, right), softmax=False)
    got = _propagate(model, [[[[1.0]], [[3.0]]]], [[[[[1.0]]]]], b.input_name)
    np.testing.assert_allclose(got.reshape(-1), [0.25, 0.75], rtol=1e-7)


@pytest.fixture
def gemm_case():
    """x = (1, 2, 0, 3) as a 2×2 image; class 0's weights w = (1, −1, 2, 0.5)."""
    b = ModelBuilder((1, 1, 2, 2), dynamic_batch=False)
    weights = np.array([[1, -1, 2, 0.5], [0.3, 0.2, 0.1, 1.0]], np.float32)
    logits = b.node("Gemm", [b.flatten(b.input_name), b.const(weights), b.const(np.zeros(2, np.float32))],
                    transB=1, name="classifier")
    return b, b.build(logits), np.array([1, 2, 0, 3], np.float32).reshape(1, 1, 2, 2)


def test_gemm_mwp_and_dual(gemm_case):
    b, model, x = gemm_case
    top = np.array([[[1.0, 0.0]]])
    mwp, cmwp = _propagate(model, x, top, b.input_name, methods=("mwp", "cmwp"))
    np.testing.assert_allclose(mwp.reshape(-1), [0.4, 0, 0, 0.6], rtol=1e-6)
    dual = mwp - cmwp                       # P_dual = P_W − (P_W − P_dual)
    np.testing.assert_allclose(dual.reshape(-1), [0, 1, 0, 0], rtol=1e-6, atol=1e-7)


def test_gemm_maps_through_the_public_api(gemm_case):
    b, model, x = gemm_case
    explainer = exbp.Explainer(model)
    mwp = explainer.explain(x, targets=0, layer=b.input_name, method="mwp")
    cmwp = explainer.explain(x, targets=0, layer=b.input_name, method="cmwp")
    np.testing.assert_allclose(mwp.maps[0, 0], [[0.4, 0], [0, 0.6]], rtol=1e-6)
    # pre-clamp c-MWP is (0.4, −1, 0, 0.6); the clamp keeps the positive part
    np.testing.assert_allclose(cmwp.maps[0, 0], [[0.4, 0], [0, 0.6]], rtol=1e-6)


def test_mass_at_zero_normaliser_is_lost_not_nan():
    b = ModelBuilder((1, 1, 2, 2), dynamic_batch=False)
    weights = np.array([[1, 1, 1, 1]], np.float32)
    model = b.build(b.node("Gemm", [b.flatten(b.input_name), b.const(weights)], transB=1),
                    softmax=False)
    got = _propagate(model, np.zeros((1, 1, 2, 2)), [[[1.0]]], b.input_name)
    np.testing.assert_array_equal(got, np.zeros((1, 1, 1, 2, 2)))


@pytest.mark.parametrize("opset", [9, 17])
def test_which_tensors_are_known_non_negative(opset):
    """The static sign analysis that lets a normaliser skip its x⁻ term, by hand: a ReLU output
    stays ≥ 0 through a zero-filled Pad and a linear Resize, not through a negative fill value or
    a cubic Resize (its kernel has negative lobes)."""
    from exbp.engine.graph.model import Graph
    from exbp.engine.graph.signs import non_negative_tensors

    b = ModelBuilder((1, 2, 4, 4), opset=opset)
    relu = b.relu(b.input_name)
    pads = [0, 0, 1, 1, 0, 0, 1, 1]
    if opset < 11:
        zero_fill = b.node("Pad", [relu], pads=pads, value=0.0)
        negative_fill = b.node("Pad", [relu], pads=pads, value=-1.0)
        resized = {}
    else:
        zero_fill = b.node("Pad", [relu, b.const(np.array(pads, np.int64))])
        negative_fill = b.node("Pad", [relu, b.const(np.array(pads, np.int64)), b.const(np.float32(-1.0))])
        scales = np.array([1, 1, 2, 2], np.float32)
        resized = {mode: b.node("Resize", [relu, "", b.const(scales)], mode=mode)
                   for mode in ("linear", "cubic")}
    outputs = [zero_fill, negative_fill, *resized.values()]
    model = b.build(b.concat([b.gap(name) for name in outputs]), softmax=False)
    found = non_negative_tensors(Graph.from_model(model, opset))
    assert {relu, zero_fill} <= found and negative_fill not in found
    if resized:
        assert resized["linear"] in found and resized["cubic"] not in found
