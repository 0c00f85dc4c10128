"""exbp against the reference implementations (docs/method.md §7, external oracles).

A BN-free VGG-style network in PyTorch, exported to ONNX: exbp's maps must equal TorchRay's
excitation backprop and contrastive excitation backprop at the same layer, and Zennit's
ExcitationBackprop composite at the pixels, with zero_params="bias" and a negligible stabiliser
(its defaults keep the bias and add 1e-6 to every normaliser, which leaks mass).
These checks need the optional `reference` extra (torch, torchvision, TorchRay, Zennit; see
README) and skip cleanly without it.
"""

import io

import numpy as np
import onnx
import pytest

import exbp
from conftest import assert_close

torch = pytest.importorskip("torch", reason="the reference checks need torch (extra 'reference')")


def _network():
    torch.manual_seed(0)
    nn = torch.nn

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(12, 16, 3, padding=1), nn.ReLU())
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10))

        def forward(self, x):
            return self.classifier(self.features(x))
    return Small().eval()


@pytest.fixture(scope="module")
def exported():
    network = _network()
    buffer = io.BytesIO()
    torch.onnx.export(network, torch.zeros(1, 3, 32, 32), buffer, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"])
    model = onnx.load_from_string(buffer.getvalue())
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 32, 32)).astype(np.float32)
    return network, exbp.Explainer(model), model, x


def _onnx_tensor(model, module: str) -> str:
    parts = module.split(".")
    prefix = "/" + "/".join(".".join(parts[:i + 1]) for i in range(len(parts))) + "/"
    return [n.output[0] for n in model.graph.node if n.name.startswith(prefix)][-1]



@pytest.mark.parametrize("module", ["features.4", "features.7"])
def test_torchray_excitation_backprop(exported, module):
    excitation = pytest.importorskip("torchray.attribution.excitation_backprop",
                                     reason="TorchRay is not installed (extra 'reference')")
    network, explainer, model, x = exported
    for target in (2, 7):
        want = excitation.excitation_backprop(network, torch.from_numpy(x), target,
                                              saliency_layer=module).detach().numpy()[:, 0]
        got = explainer.explain(x, targets=target, layer=_onnx_tensor(model, module), method="mwp")
        assert_close(got.maps[:, 0], want, "reference")


def test_torchray_contrastive_excitation_backprop(exported):
    excitation = pytest.importorskip("torchray.attribution.excitation_backprop",
                                     reason="TorchRay is not installed (extra 'reference')")
    network, explainer, model, x = exported
    for target in (2, 7):
        want = excitation.contrastive_excitation_backprop(
            network, torch.from_numpy(x), target, saliency_layer="features.4",
            contrast_layer="classifier.2", classifier_layer="classifier.3").detach().numpy()[:, 0]
        got = explainer.explain(x, targets=target, layer=_onnx_tensor(model, "features.4"),
                                method="cmwp")
        assert_close(got.maps[:, 0], want, "reference")


def test_zennit_excitation_backprop_at_the_pixels(exported):
    composites = pytest.importorskip("zennit.composites", reason="Zennit is not installed (extra 'reference')")
    network, explainer, model, x = exported
    composite = composites.ExcitationBackprop(stabilizer=1e-12, zero_params=["bias"])
    image = torch.from_numpy(x).requires_grad_(True)
    with composite.context(network) as modified:
        output = modified(image)
        (relevance,) = torch.autograd.grad(output, image, torch.eye(10)[[5]])
    want = relevance.detach().numpy().sum(axis=1)
    got = explainer.explain(x, targets=5, layer="image", method="mwp").maps[:, 0]
    assert_close(got, want, "reference")


# MWP mass at the pixels on torchvision's mobile networks (random weights, seed 0), measured on
# 2026-12-01: 0.19, 0.075, 0.24, 0.17 with the z⁺ rule everywhere; 0.99999, 0.988, 0.957, 0.963
# with the sign-consistent Add and pooling; 1.00000 for all four once every linear op shares a
# negative output by its negative contributions (docs/method.md §3.1).
MOBILE_NETWORKS = {"mobilenet_v2": 0.999, "mobilenet_v3_large": 0.999, "mobilenet_v3_small": 0.999,
                   "efficientnet_b0": 0.999}


@pytest.mark.parametrize("name", sorted(MOBILE_NETWORKS))
def test_mwp_mass_at_the_pixels_of_torchvision_mobile_networks(name):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    network = getattr(torchvision.models, name)(weights=None).eval()
    buffer = io.BytesIO()
    torch.onnx.export(network, torch.zeros(1, 3, 224, 224), buffer, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"])
    explainer = exbp.Explainer(onnx.load_from_string(buffer.getvalue()))
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    lost = {}
    top = np.zeros((1, 1, 1000), np.float32)
    top[0, 0, 1] = 1.0
    signal = explainer.propagate(x, top, layer="image", lost=lost)
    assert signal.min() >= 0 and signal.sum() >= MOBILE_NETWORKS[name]
    np.testing.assert_allclose(signal.sum(), 1 - sum(float(m[0]) for m in lost.values()), atol=1e-4)
