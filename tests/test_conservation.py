"""Sign-consistent conservation (docs/method.md §1, §3.1, §3.3) on the blocks of the networks
people deploy — MobileNetV2's linear bottlenecks with residual Adds, EfficientNet's SiLU, SE gates
and signed pooling: MWP mass is lost only where a normaliser is 0, and the loss is counted."""

import numpy as np
import pytest

import exbp
from builders import efficientnet_like, mobilenet_v2_like
from oracle import Oracle

NETWORKS = {"mobilenet_v2_like": mobilenet_v2_like, "efficientnet_like": efficientnet_like}


def _one_hot(target, classes=10):
    top = np.zeros((1, 1, classes), np.float32)
    top[0, 0, target] = 1.0
    return top


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mass_is_conserved_but_where_a_normaliser_is_zero(name, seed):
    b, model = NETWORKS[name](seed=seed)
    explainer = exbp.Explainer(model)
    x = b.input(seed=seed + 10)
    lost = {}
    signal = explainer.propagate(x, _one_hot(seed + 3), layer=b.input_name, lost=lost)
    oracle = Oracle(model)
    expected = oracle.signal(x, _one_hot(seed + 3), b.input_name)
    np.testing.assert_allclose(signal, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert signal.min() >= 0
    total_lost = sum(float(mass[0]) for mass in lost.values())
    np.testing.assert_allclose(signal.sum(), 1.0 - total_lost, rtol=1e-5, atol=1e-6)
    for node, mass in lost.items():         # the engine counts what the oracle counts, node by node
        np.testing.assert_allclose(mass[0], oracle.lost.get(node, [0.0])[0], atol=1e-6, err_msg=node)
    graph = explainer.session.graph
    adds = [n.name for n in graph.nodes if n.op_type == "Add"]
    assert adds and all(abs(float(lost[name][0])) < 1e-6 for name in adds)   # their sums are never all 0


def test_the_residual_add_gives_a_negative_sum_to_its_negative_inputs():
    """Hand case: inputs (−1, −3) at a position give a sum of −4, whose signal goes ¼, ¾; (2, −1)
    gives +1, all to the positive input; (0, 0) has no winner."""
    from builders import ModelBuilder

    b = ModelBuilder((1, 2, 1, 3), dynamic_batch=False)
    starts, ends, axes = (b.const(np.array(v, np.int64)) for v in ([0], [1], [1]))
    left = b.node("Slice", [b.input_name, starts, ends, axes])
    right = b.node("Slice", [b.input_name, ends, b.const(np.array([2], np.int64)), axes])
    model = b.build(b.add(left, right), softmax=False)
    x = np.array([[[[-1, 2, 0]], [[-3, -1, 0]]]], np.float32)
    lost = {}
    got = exbp.Explainer(model).propagate(x, np.ones((1, 1, 1, 1, 3), np.float32), layer=b.input_name,
                                         lost=lost)
    np.testing.assert_allclose(got.reshape(2, 3), [[0.25, 1.0, 0], [0.75, 0, 0]], rtol=1e-6)
    assert float(next(iter(v for k, v in lost.items() if k.startswith("add")))[0]) == pytest.approx(1.0)


def test_signed_global_pooling_gives_a_negative_mean_to_its_negative_inputs():
    """HardSwish before a global average pool (MobileNetV3's head): a channel whose values are all
    negative has a negative mean; the z⁺ rule would lose its signal, here it reaches them."""
    from builders import ModelBuilder

    b = ModelBuilder((1, 2, 2, 2), dynamic_batch=False)
    model = b.build(b.flatten(b.gap(b.input_name)), softmax=False)
    x = np.array([[[[-1, -3], [0, -4]], [[1, -1], [2, 0]]]], np.float32)
    got = exbp.Explainer(model).propagate(x, np.array([[[1.0, 1.0]]], np.float32), layer=b.input_name)
    np.testing.assert_allclose(got.reshape(2, 4), [[0.125, 0.375, 0, 0.5], [1 / 3, 0, 2 / 3, 0]], rtol=1e-6)


def test_a_negative_projection_shares_by_its_negative_contributions():
    """Hand case (§3.1): x = (2, 1); two linear 1×1 projections y = −x₀ + ½x₁ = −1.5 and
    y′ = −¼x₀ − ½x₁ = −1, added: −2.5, which a classifier of weight −1 reads as +2.5. The Add gives
    its negative sum to its negative inputs, 0.6 and 0.4; y, negative, gives its 0.6 to its one
    negative contribution, x₀ (the z⁺ rule would give it to x₁, its positive one); y′ splits 0.4
    as 0.2, 0.2. Nothing is lost."""
    from builders import ModelBuilder

    b = ModelBuilder((1, 2, 1, 1), dynamic_batch=False)
    y = b.node("Conv", [b.input_name, b.const(np.array([[[[-1.0]], [[0.5]]]], np.float32))])
    y2 = b.node("Conv", [b.input_name, b.const(np.array([[[[-0.25]], [[-0.5]]]], np.float32))])
    summed = b.flatten(b.add(y, y2))
    model = b.build(b.node("Gemm", [summed, b.const(np.array([[-1.0]], np.float32))], name="classifier"),
                    softmax=False)
    lost = {}
    got = exbp.Explainer(model).propagate(np.array([[[[2.0]], [[1.0]]]], np.float32),
                                         np.ones((1, 1, 1), np.float32), layer=b.input_name, lost=lost)
    np.testing.assert_allclose(got.reshape(2), [0.8, 0.2], rtol=1e-6)
    assert all(abs(float(mass[0])) < 1e-7 for mass in lost.values())


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_mobile_blocks_keep_their_mass(name):
    """With every negative output shared by sign, MobileNetV2's and EfficientNet's blocks keep
    over 99% of the mass at the pixels (the z⁺ rule everywhere keeps 77% and 82% here); what they
    lose is where an output's contributions of its own sign are all 0 (a bias alone made it)."""
    b, model = NETWORKS[name](seed=3)
    lost = {}
    signal = exbp.Explainer(model).propagate(b.input(seed=4), _one_hot(2), layer=b.input_name, lost=lost)
    assert signal.sum() >= 0.99
    assert signal.sum() == pytest.approx(1.0 - sum(float(mass[0]) for mass in lost.values()), abs=1e-5)
