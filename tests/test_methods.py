"""The comparison methods (docs/method.md §9) against independent oracles.

Every rule case of tests/test_rules.py, walked with each propagation kind, against
tests/gradient_oracle.py's chain of dense finite-difference Jacobians in float64; the gradient at
the pixels also against the whole model's finite-difference Jacobian; Grad-CAM and CAM against
their formulas from the recorded activations (and, for CAM, the classifier's weights). A
registry-coverage test: every registered op has a variant or an explicit refusal for every kind,
and every op a kind walks has a case here.
"""

from __future__ import annotations

import numpy as np
import pytest

import exbp
from builders import ModelBuilder, resnet_like, vgg_like
from conftest import assert_close
from gradient_oracle import EPSILON, GradientOracle, input_jacobian
from oracle import forward
from test_pointing_game import colour_model, voc_dataset  # noqa: F401 (a fixture, a dataset)
from test_rules import CASES, case_model, random_top
from exbp.graph_rules import RULES, Propagation

KINDS = {"gradient": exbp.METHODS["gradient"], "deconvnet": exbp.METHODS["deconvnet"],
         "guided": exbp.METHODS["guided"], "lrp": exbp.METHODS["lrp"]}
# deconvnet and guided backprop differ from the gradient only at ReLUs: the cases with one
RECTIFIED = ("pass_through_relu", "max_min_relu6", "concat", "mul_squeeze_excitation_gate",
             "sum_three", "slice_bounds_from_static_shape", "conv_groups")
REFUSED = {("lrn", kind) for kind in ("gradient", "deconvnet", "guided")}
KIND_CASES = [(name, "gradient") for name in sorted(CASES)] + [
    (name, "lrp") for name in sorted(CASES)] + [
    (name, kind) for name in RECTIFIED for kind in ("deconvnet", "guided")]


def against(kind: str) -> str:
    """Finite differences in float64 against float32 walks: the reference tolerances; LRP's
    division by the outputs, the relevance tolerances."""
    return "relevance" if kind == "lrp" else "reference"


@pytest.mark.parametrize("name,kind", KIND_CASES)
def test_rule_variant_matches_dense_oracle(name, kind):
    b, model = case_model(CASES[name])
    x = b.input(seed=11)
    top = random_top(model, x)
    if kind == "lrp":   # relevance at the top is the output's value (LRP's own start): R / z stays bounded
        top = top * forward(model, x)[model.graph.output[0].name]
    explainer = exbp.Explainer(model)
    if (name, kind) in REFUSED:
        with pytest.raises(exbp.UnsupportedOpError, match=r"no gradient rule.*LRN node .*supported ops"):
            explainer.propagate(x, top, layer=b.input_name, methods=(KINDS[kind],))
        return
    got = explainer.propagate(x, top, layer=b.input_name, methods=(KINDS[kind],))
    want = GradientOracle(model).signal(x, top, b.input_name, kind)
    assert got.shape == want.shape
    assert_close(got, want, against(kind))


def test_every_op_has_a_variant_or_a_refusal_for_every_kind():
    """A rule without a variant for a kind would be refused with 'no ... rule'; every op with a
    backward says what each kind does, and every op a kind walks has a case above."""
    for op, entry in RULES.items():
        if entry.backward is None:
            continue
        for kind in Propagation:
            assert entry.variant(kind) is not None, (op, kind)
    covered = {kind: set() for kind in ("gradient", "deconvnet", "guided", "lrp")}
    for name, kind in KIND_CASES:
        covered[kind] |= {node.op_type for node in case_model(CASES[name])[1].graph.node}
    for kind, ops in covered.items():
        walked = set(exbp.supported_ops(Propagation(kind)))
        if kind in ("deconvnet", "guided"):   # the gradient's variant but at ReLUs
            assert {"Relu", "Max"} <= ops
            continue
        assert walked <= ops, (kind, sorted(walked - ops))


# ---- whole networks ----------------------------------------------------------------------------

def _se_net(size=8):
    b = ModelBuilder((1, 3, size, size), seed=5)
    x = b.relu(b.conv(b.input_name, 6))
    gate = b.node("Sigmoid", [b.conv(b.relu(b.conv(b.gap(x), 3, kernel=1, pad=0)), 6, kernel=1, pad=0)])
    x = b.maxpool(b.node("Mul", [x, gate]))
    x = b.conv(x, 6, group=6)                       # depthwise
    x = b.relu(b.add(b.batchnorm(b.conv(x, 6, bias=False)), x))
    return b, b.build(b.gemm(b.flatten(b.gap(x)), 5, name="classifier"))


NETWORKS = {"vgg": lambda: vgg_like(size=8, classes=5), "resnet": lambda: resnet_like(size=8, classes=5),
            "se_depthwise": _se_net}


def _logits(model, x):
    return forward(model, x)[GradientOracle(model).logits]


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_gradient_saliency_is_the_jacobian_row(network):
    """Simonyan et al.'s saliency: max over channels of |d logit_t / d x|, the Jacobian from finite
    differences of the whole float64 model."""
    b, model = NETWORKS[network]()
    x = b.input(seed=2)
    got = exbp.Explainer(model).explain(x, targets=[1, 3], method="gradient")
    oracle = GradientOracle(model)
    rows = input_jacobian(model, x, oracle.logits).reshape((-1,) + x.shape)    # (classes, *x)
    for column, target in enumerate((1, 3)):
        assert_close(got.maps[:, column], np.abs(rows[target]).max(axis=1), "reference")
    assert got.layer == b.input_name


@pytest.mark.parametrize("device", ["cpu", "numpy"])
@pytest.mark.parametrize("method", ["gradient", "deconvnet", "guided", "lrp"])
@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_pixel_maps_match_the_oracle_chain(network, method, device):
    """``numpy``: exbp's own kernels (the CuPy backend's) rather than onnxruntime's convolutions."""
    b, model = NETWORKS[network]()
    x = b.input(seed=3)
    targets = [0, 4]
    got = exbp.Explainer(model, device=device).explain(x, targets=targets, method=method)
    oracle = GradientOracle(model)
    logits = _logits(model, x)
    top = np.zeros((2,) + logits.shape)
    for row, target in enumerate(targets):
        top[row, :, target] = logits[:, target] if method == "lrp" else 1.0
    signal = oracle.signal(x, top, b.input_name, method)
    want = signal.sum(axis=2) if method == "lrp" else np.abs(signal).max(axis=2)
    assert_close(got.maps, np.moveaxis(want, 0, 1), against(method))


def test_lrp_conserves_relevance_without_biases():
    """ε-LRP on a bias-free ReLU network: the relevance at the pixels sums to the logit (up to
    the ε stabiliser and the mass of the image's own sign)."""
    b = ModelBuilder((1, 3, 8, 8), seed=4)
    x = b.maxpool(b.relu(b.conv(b.input_name, 4, bias=False)))
    weight = b.const(b.rng.normal(size=(5, 64)).astype(np.float32))
    model = b.build(b.node("Gemm", [b.flatten(x), weight], transB=1))
    image = b.input(seed=1)
    got = exbp.Explainer(model).explain(image, targets=[2], method="lrp")
    np.testing.assert_allclose(got.maps.sum(), _logits(model, image)[0, 2], rtol=1e-4)
    assert EPSILON == 1e-6


def _layer_before_gap(model):
    gap = [node for node in model.graph.node if node.op_type == "GlobalAveragePool"][-1]
    return gap.input[0]


@pytest.mark.parametrize("network", ["resnet", "se_depthwise"])
def test_grad_cam_is_the_weighted_activation(network):
    """ReLU(Σ_c α_c A_c), α_c the spatial mean of the gradient at the layer (the oracle's chain)."""
    b, model = NETWORKS[network]()
    x = b.input(seed=5)
    layer = _layer_before_gap(model)
    got = exbp.Explainer(model).explain(x, targets=[2], method="gradcam")
    assert got.layer == layer
    top = np.zeros((1,) + _logits(model, x).shape)
    top[0, :, 2] = 1
    gradient = GradientOracle(model).signal(x, top, layer, "gradient")[0]
    activation = forward(model, x)[layer]
    weights = gradient.mean(axis=(2, 3), keepdims=True)
    assert_close(got.maps[:, 0], np.maximum((weights * activation).sum(axis=1), 0), "reference")


@pytest.mark.parametrize("network", ["resnet", "se_depthwise"])
def test_cam_is_the_classifier_weights_on_the_pooled_activation(network):
    """Σ_c w_tc A_c (Zhou et al.) from the Gemm's weights and the recorded activation."""
    b, model = NETWORKS[network]()
    x = b.input(seed=6, batch=2)
    layer = _layer_before_gap(model)
    got = exbp.Explainer(model).explain(x, targets=[1, 4], method="cam")
    assert got.layer == layer
    gemm = next(node for node in model.graph.node if node.name == "classifier")
    weight = {t.name: t for t in model.graph.initializer}[gemm.input[1]]
    weight = np.frombuffer(weight.raw_data, np.float32).reshape(tuple(weight.dims))   # (classes, C)
    activation = forward(model, x)[layer]
    want = np.einsum("kc,nchw->nkhw", weight[[1, 4]].astype(np.float64), activation)
    assert_close(got.maps, want, "reference")


def test_cam_needs_a_global_average_pooling_head():
    b, model = vgg_like(size=8, classes=5)
    explainer = exbp.Explainer(model)
    with pytest.raises(exbp.MethodError, match="CAM needs a global average pooling"):
        explainer.explain(b.input(), method="cam")
    b, model = resnet_like(size=8, classes=5)
    with pytest.raises(exbp.MethodError, match="maps only at the global average pooling's input"):
        exbp.Explainer(model).explain(b.input(), method="cam", layer=b.input_name)


def test_methods_share_one_forward_pass_and_agree_with_separate_calls():
    b, model = resnet_like(size=8, classes=5)
    x = b.input(seed=7)
    explainer = exbp.Explainer(model)
    names = ("mwp", "cmwp", "gradient", "guided", "gradcam", "cam", "lrp")
    together = explainer.explain_methods(x, targets=[0, 2], methods=names)
    assert len(explainer.session._recordings) == 1
    assert list(together) == list(names)
    for name in names:
        alone = exbp.Explainer(model).explain(x, targets=[0, 2], method=name)
        assert_close(together[name].maps, alone.maps)
        assert together[name].layer == alone.layer
    # one walk per layer and kind: the gradient and Grad-CAM at one named layer share theirs
    layer = explainer.default_layer()
    plans = explainer.session.plans_for(exbp.engine.walk.methods.methods_named(("gradient", "gradcam")),
                                        layer, x.shape)
    assert len(plans) == 1 and layer in plans[0][0].values


def test_propagate_refuses_mixed_kinds():
    b, model = vgg_like(size=8, classes=5)
    with pytest.raises(exbp.MethodError, match="one propagation kind"):
        exbp.Explainer(model).propagate(b.input(), np.zeros((1, 1, 5), np.float32),
                                        methods=("mwp", "gradient"))


# ---- the command line ------------------------------------------------------------------------------

def test_cli_explain_takes_method_names_and_comma_lists(tmp_path):
    from conftest import run, save_image, save_model, summary
    b, model = resnet_like(size=16, classes=5)
    path = save_model(model, tmp_path / "resnet.onnx")
    image = save_image(tmp_path / "photo.png", (16, 16), (200, 30, 60))
    out = tmp_path / "out"
    result = run("explain", path, image, "--method", "both,gradient,gradcam", "--out", out, "--format", "json")
    assert result.exit_code == 0, result.output
    records = summary(out)["results"]
    assert [r["method"] for r in records] == ["mwp", "cmwp", "gradient", "gradcam"]
    assert {r["method"]: r["layer"] for r in records}["gradient"] == b.input_name
    bad = run("explain", path, image, "--method", "mwp,smoothgrad", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "smoothgrad" in bad.stderr and "gradcam" in bad.stderr
    refused = run("explain", save_model(vgg_like(size=16)[1], tmp_path / "vgg.onnx"), image,
                  "--method", "cam", "--out", tmp_path / "vgg")
    assert refused.exit_code == 1 and "CAM needs a global average pooling" in refused.stderr


def test_cli_pointing_game_takes_the_comparison_methods(colour_model, tmp_path):
    """The colour model's CAM for "red" is the red pixels' mean: it points at the red boxes."""
    import json

    from conftest import run
    model = colour_model
    (tmp_path / "classes.txt").write_text("cat: red\ndog: green\n")
    out = tmp_path / "out"
    result = run("pointing-game", model, "--voc", voc_dataset(tmp_path / "voc"), "--classes",
                 tmp_path / "classes.txt", "--method", "mwp", "--method", "cam,gradient", "--out", out)
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads((out / "pointing.json").read_text())["table"]}
    assert set(rows) == {"mwp", "cam", "gradient", "centre"}
    assert rows["cam"]["all"] == 100.0
