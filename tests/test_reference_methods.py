"""The comparison methods (docs/method.md §9) against their PyTorch implementations.

A small network with BatchNorm, a residual Add, max pooling, global average pooling and a Linear
head, exported to ONNX: exbp's gradient against torch autograd, guided backprop and deconvnet
against Captum's GuidedBackprop and Deconvolution, LRP-ε against a Zennit composite of its
Epsilon rule (ε = 1e-6, the bias kept) on every convolution, linear and average-pooling layer, and
Grad-CAM against the grad-cam package's GradCAM. These checks need the optional `reference` extra
(torch, Captum, Zennit, grad-cam; see README) and skip cleanly without it.
"""

import io

import numpy as np
import onnx
import pytest

import exbp
from conftest import assert_close

torch = pytest.importorskip("torch", reason="the reference checks need torch (extra 'reference')")

TARGETS = (1, 6)


class _Add(torch.nn.Module):
    def forward(self, a, b):
        return a + b


class _StackedSum(torch.nn.Module):
    """The residual Add as Zennit's Sum module, so that a rule applies to it (a bare ``+`` only
    passes the gradient); ONNX sees Unsqueeze, Concat and ReduceSum."""

    def __init__(self):
        super().__init__()
        from zennit.layer import Sum
        self.sum = Sum()

    def forward(self, a, b):
        return self.sum(torch.stack([a, b], dim=-1))


def _network(merge=_Add):
    torch.manual_seed(0)
    nn = torch.nn

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.MaxPool2d(2))
            self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
            self.merge = merge()
            self.after = nn.ReLU()
            self.head = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(12, 10)

        def forward(self, x):
            x = self.stem(x)
            x = self.after(self.merge(self.branch(x), x))
            return self.classifier(torch.flatten(self.pool(self.head(x)), 1))
    network = Small()
    with torch.no_grad():      # BatchNorm statistics that are not the identity
        network.stem[1].running_mean.uniform_(-0.2, 0.2)
        network.stem[1].running_var.uniform_(0.5, 2.0)
        network.stem[1].weight.uniform_(0.5, 1.5)
    return network.eval()


def _exported(network):
    buffer = io.BytesIO()
    torch.onnx.export(network, torch.zeros(1, 3, 16, 16), buffer, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    model = onnx.load_from_string(buffer.getvalue())
    x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    return network, exbp.Explainer(model), x


@pytest.fixture(scope="module")
def exported():
    return _exported(_network())


def _one_hots(target, images=2, scale=None):
    top = np.zeros((1, images, 10), np.float32)
    top[0, :, target] = 1 if scale is None else scale[:, target]
    return top


def _input_gradient(network, x, target, scale=None):
    image = torch.from_numpy(x).requires_grad_(True)
    output = network(image)
    weight = torch.from_numpy(_one_hots(target, len(x), scale)[0])
    (gradient,) = torch.autograd.grad(output, image, weight)
    return gradient.numpy()


def test_gradient_is_torch_autograd(exported):
    network, explainer, x = exported
    for target in TARGETS:
        got = explainer.propagate(x, _one_hots(target), layer="image", methods=("gradient",))[0]
        want = _input_gradient(network, x, target)
        assert_close(got, want, "reference")
        saliency = explainer.explain(x, targets=target, method="gradient").maps[:, 0]
        assert_close(saliency, np.abs(want).max(axis=1), "reference")


@pytest.mark.parametrize("method,captum_class", [("guided", "GuidedBackprop"), ("deconvnet", "Deconvolution")])
def test_guided_backprop_and_deconvnet_are_captums(exported, method, captum_class):
    attr = pytest.importorskip("captum.attr", reason="Captum is not installed (extra 'reference')")
    network, explainer, x = exported
    for target in TARGETS:
        want = getattr(attr, captum_class)(network).attribute(torch.from_numpy(x), target=target)
        got = explainer.propagate(x, _one_hots(target), layer="image", methods=(method,))[0]
        assert_close(got, want.detach().numpy(), "reference")


def test_lrp_epsilon_is_zennits():
    composites = pytest.importorskip("zennit.composites", reason="Zennit is not installed (extra 'reference')")
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.layer import Sum
    from zennit.rules import Epsilon, Norm, Pass
    from zennit.types import Activation, AvgPool, Linear
    network, explainer, x = _exported(_network(_StackedSum))
    composite = composites.LayerMapComposite(
        [(Activation, Pass()), (Linear, Epsilon(epsilon=1e-6)), (AvgPool, Norm(stabilizer=1e-6)),
         (Sum, Norm(stabilizer=1e-6))], canonizers=[SequentialMergeBatchNorm()])
    logits = network(torch.from_numpy(x)).detach().numpy()
    for target in TARGETS:
        image = torch.from_numpy(x).requires_grad_(True)
        with composite.context(network) as modified:
            output = modified(image)
            (relevance,) = torch.autograd.grad(output, image, torch.from_numpy(_one_hots(target, 2, logits)[0]))
        got = explainer.explain(x, targets=target, method="lrp").maps[:, 0]
        assert_close(got, relevance.numpy().sum(axis=1), "relevance")


def test_grad_cam_is_the_grad_cam_packages(exported):
    grad_cam = pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed (extra 'reference')")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    network, explainer, x = exported
    for target in TARGETS:
        with grad_cam.GradCAM(model=network, target_layers=[network.head]) as cam:
            want = cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(target)] * 2)
        got = explainer.explain(x, targets=target, method="gradcam").maps[:, 0]
        # the package resizes each map to the image (bilinear, half-pixel) and scales it to [0, 1]
        resized = exbp.resize_map(got, x.shape[2:])
        low, high = resized.min(axis=(1, 2), keepdims=True), resized.max(axis=(1, 2), keepdims=True)
        assert_close((resized - low) / (high - low), want, "reference")
