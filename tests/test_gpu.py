"""The CuPy backend against the CPU: every rule case and test model, on a CUDA device.

Skipped, with the reason, where CuPy, a CUDA device or onnxruntime's CUDAExecutionProvider is
missing (see README, "GPU"); the CPU suite does not depend on these tests.
"""

import numpy as np
import pytest

import exbp
from exbp import cuda_unavailable
from conftest import assert_close
from builders import inception_like, mobilenet_like, resnet_like, vgg_like
from test_rules import CASES, case_model, random_top

UNAVAILABLE = cuda_unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no CUDA backend: {UNAVAILABLE}")



@pytest.mark.parametrize("positive", [False, True], ids=["mixed_signs", "non_negative"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_on_gpu_matches_numpy(name, positive):
    b, model = case_model(CASES[name])
    x = b.input(seed=11, positive=positive)
    top = random_top(model, x)
    want = exbp.Explainer(model, device="numpy").propagate(x, top, layer=b.input_name)
    got = exbp.Explainer(model, device="cuda").propagate(x, top, layer=b.input_name)
    assert_close(got, want, "device")


@pytest.mark.parametrize("build", [vgg_like, inception_like, resnet_like, mobilenet_like])
def test_compiled_model_on_cuda_execution_provider_matches_cpu(build):
    """The compiled model in a plain onnxruntime session on the CUDA execution provider."""
    import onnxruntime as ort
    b, model = build()
    x = b.input(seed=5, batch=4)
    compiled = exbp.Explainer(model).compile(layer=b.input_name, targets="top2").SerializeToString()
    outputs = {}
    for provider in ("CUDAExecutionProvider", "CPUExecutionProvider"):
        session = ort.InferenceSession(compiled, providers=[provider])
        assert session.get_providers()[0] == provider
        outputs[provider] = session.run(["exbp_mwp", "exbp_cmwp"], {b.input_name: x})
    for got, want in zip(outputs["CUDAExecutionProvider"], outputs["CPUExecutionProvider"]):
        assert_close(got, want, "device")


@pytest.mark.parametrize("build", [vgg_like, inception_like, resnet_like, mobilenet_like])
def test_models_on_gpu_match_cpu(build):
    b, model = build()
    x = b.input(seed=5, batch=2)
    cpu, gpu = exbp.Explainer(model), exbp.Explainer(model, device="cuda")
    assert gpu.device == "cuda:0"
    for layer in (cpu.default_layer(x.shape), b.input_name):
        want = cpu.explain_methods(x, targets=[3, 7], layer=layer)
        got = gpu.explain_methods(x, targets=[3, 7], layer=layer, resize=False)
        for method in ("mwp", "cmwp"):
            assert isinstance(got[method].maps, np.ndarray)
            assert_close(got[method].maps, want[method].maps, "device")
            np.testing.assert_array_equal(got[method].targets, want[method].targets)


COMPARISON_METHODS = ("gradient", "deconvnet", "guided", "lrp", "gradcam", "cam")
METHOD_CASES = ("pass_through_gelu", "pass_through_mish", "layer_normalization_channels_last",
                "mul_squeeze_excitation_gate", "avgpool_pads_include", "conv_all_attributes",
                "gemm_transA", "max_min_relu6", "sum_three")


@pytest.mark.parametrize("kind", ["gradient", "guided", "lrp"])
@pytest.mark.parametrize("name", METHOD_CASES)
def test_rule_variants_on_gpu_match_numpy(name, kind):
    b, model = case_model(CASES[name])
    x = b.input(seed=11)
    top = random_top(model, x)
    want = exbp.Explainer(model, device="numpy").propagate(x, top, layer=b.input_name, methods=(kind,))
    got = exbp.Explainer(model, device="cuda").propagate(x, top, layer=b.input_name, methods=(kind,))
    assert_close(got, want, "device")


def test_comparison_methods_on_gpu_match_cpu():
    b, model = resnet_like()
    x = b.input(seed=5, batch=2)
    want = exbp.Explainer(model).explain_methods(x, targets=[3, 7], methods=COMPARISON_METHODS)
    got = exbp.Explainer(model, device="cuda").explain_methods(x, targets=[3, 7], methods=COMPARISON_METHODS)
    for method in COMPARISON_METHODS:
        assert_close(got[method].maps, want[method].maps, "device")


def test_recorded_tensors_stay_on_the_gpu(monkeypatch):
    import cupy

    from exbp.engine.record.recording import Recorder

    b, model = resnet_like()
    explainer = exbp.Explainer(model, device="cuda")
    seen = []
    original = Recorder.run

    def watching(self, *args, **kwargs):
        recorded, shapes = original(self, *args, **kwargs)
        seen.extend(type(value) for value in recorded.values())
        return recorded, shapes
    monkeypatch.setattr(Recorder, "run", watching)
    x = cupy.asarray(b.input(seed=1))
    result = explainer.explain(x, targets=1, layer=b.input_name)
    assert seen and all(kind is cupy.ndarray for kind in seen)
    assert_close(result.maps, exbp.Explainer(model).explain(cupy.asnumpy(x), targets=1,
                                                            layer=b.input_name).maps, "device")


def test_auto_chooses_the_gpu():
    _, model = vgg_like()
    assert exbp.Explainer(model, device="auto").device == "cuda:0"
