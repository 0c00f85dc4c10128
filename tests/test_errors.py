"""Bad input gets one line that names the thing and what would be accepted."""

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import exbp
from builders import ModelBuilder, vgg_like


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def _raises(error, function, *args, **kwargs) -> str:
    with pytest.raises(error) as excinfo:
        function(*args, **kwargs)
    return one_line(excinfo)


# ---- model files ------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    message = _raises(exbp.ModelError, exbp.Explainer, tmp_path / "nope.onnx")
    assert "nope.onnx" in message and "does not exist" in message


def test_directory(tmp_path):
    assert "is not a file" in _raises(exbp.ModelError, exbp.Explainer, tmp_path)


@pytest.mark.parametrize("content", [b"\x00\xff garbage \x13" * 40, b"just some text\n", b""])
def test_not_an_onnx_file(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    message = _raises(exbp.ModelError, exbp.Explainer, path)
    assert str(path) in message and "not an ONNX model" in message


def test_wrong_source_type():
    assert "path to an .onnx file" in _raises(exbp.ModelError, exbp.Explainer, 42)


def test_opset_out_of_range():
    _, model = vgg_like()
    model.opset_import[0].version = 5
    message = _raises(exbp.ModelError, exbp.Explainer, model)
    assert "opset 5" in message and "7 to 28" in message


def test_invalid_graph():
    _, model = vgg_like()
    model.graph.node[0].input[0] = "nowhere"
    assert "not a valid ONNX model" in _raises(exbp.ModelError, exbp.Explainer, model)


def _save_with_external_data(model, folder):
    path = folder / "model.onnx"
    model = onnx.ModelProto.FromString(model.SerializeToString())   # onnx.save edits its argument
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    return path


def test_external_data_inside_folder_loads(tmp_path):
    b, model = vgg_like()
    path = _save_with_external_data(model, tmp_path)
    x = b.input()
    np.testing.assert_allclose(exbp.Explainer(path).explain(x).maps,
                               exbp.Explainer(model).explain(x).maps, rtol=1e-6)


def test_external_data_outside_folder_is_refused(tmp_path):
    _, model = vgg_like()
    inner = tmp_path / "inner"
    inner.mkdir()
    path = _save_with_external_data(model, tmp_path)
    moved = onnx.load(str(path), load_external_data=False)
    for tensor in moved.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save(moved, str(inner / "model.onnx"))
    message = _raises(exbp.ModelError, exbp.Explainer, inner / "model.onnx")
    assert "outside the model's folder" in message and "../weights.bin" in message


def test_external_data_missing(tmp_path):
    _, model = vgg_like()
    path = _save_with_external_data(model, tmp_path)
    (tmp_path / "weights.bin").unlink()
    assert "weights.bin" in _raises(exbp.ModelError, exbp.Explainer, path)


def test_two_image_inputs():
    b = ModelBuilder((1, 3, 4, 4))
    b.inputs.append(helper.make_tensor_value_info("second", TensorProto.FLOAT, [1, 3, 4, 4]))
    model = b.build(b.add(b.input_name, "second"), softmax=False)
    assert "input, second" in _raises(exbp.ModelError, exbp.Explainer, model)


# ---- ops without rules -------------------------------------------------------------------------

def _model_with_erf(position):
    """Erf (no rule) at the stem, between the features and the classifier, or off the path."""
    b = ModelBuilder((1, 3, 8, 8), seed=1)
    x = b.node("Erf", [b.input_name], name="stem_erf") if position == "stem" else b.input_name
    features = b.maxpool(b.relu(b.conv(x, 4)))
    if position == "middle":
        features = b.node("Erf", [features], name="middle_erf")
    model = b.build(b.gemm(b.flatten(features), 5, name="classifier"))
    if position == "off_path":
        side = helper.make_node("Erf", [features], ["side_output"], name="side_erf")
        model.graph.node.append(side)
        model.graph.output.append(helper.make_tensor_value_info("side_output", TensorProto.FLOAT,
                                                                [1, 4, 4, 4]))
    return b, model, features


def test_unsupported_op_on_the_path_is_named():
    b, model, features = _model_with_erf("middle")
    explainer = exbp.Explainer(model)
    message = _raises(exbp.UnsupportedOpError, explainer.explain, b.input(), layer=b.input_name)
    assert "Erf" in message and "'middle_erf'" in message and "on the path" in message
    assert "supported ops:" in message and "Conv" in message and "MaxPool" in message


def test_unsupported_op_below_the_layer_or_off_the_path_is_harmless():
    b, model, features = _model_with_erf("stem")
    explainer = exbp.Explainer(model)
    assert explainer.explain(b.input(), layer=features).maps.shape == (1, 1, 4, 4)
    message = _raises(exbp.UnsupportedOpError, explainer.explain, b.input(), layer=b.input_name)
    assert "'stem_erf'" in message
    b, model, features = _model_with_erf("off_path")
    assert exbp.Explainer(model).explain(b.input(), layer=b.input_name).maps.shape == (1, 1, 8, 8)


def test_unsupported_nodes_report_whether_on_path():
    _, model, _ = _model_with_erf("off_path")
    found = exbp.Explainer(model).unsupported_nodes()
    assert [(op, name, on_path) for op, name, _, on_path in found] == [("Erf", "side_erf", False)]
    _, model, _ = _model_with_erf("middle")
    assert [(n, on) for _, n, _, on in exbp.Explainer(model).unsupported_nodes()] == [("middle_erf", True)]


def test_unsupported_configuration_is_named():
    b = ModelBuilder((1, 3, 6, 6), seed=2)
    product = b.node("Mul", [b.relu(b.conv(b.input_name, 3)), b.conv(b.input_name, 3)], name="product")
    model = b.build(b.gemm(b.flatten(product), 4), softmax=False)
    message = _raises(exbp.UnsupportedOpError, exbp.Explainer(model).explain, b.input(),
                      layer=b.input_name)
    assert "'product'" in message and "gate" in message


def test_cmwp_needs_a_classifier():
    b = ModelBuilder((1, 3, 6, 6), seed=3)
    features = b.flatten(b.maxpool(b.relu(b.conv(b.input_name, 3))))
    model = b.build(b.add(b.gemm(features, 4), b.gemm(features, 4)))
    explainer = exbp.Explainer(model)
    assert "classifier" in _raises(exbp.MethodError, explainer.explain, b.input(), method="cmwp")
    assert explainer.explain(b.input(), method="mwp").maps.shape == (1, 1, 3, 3)


# ---- arguments ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vgg():
    b, model = vgg_like()
    return b, exbp.Explainer(model)


def test_unknown_layer_suggests_close_names(vgg):
    b, explainer = vgg
    message = _raises(exbp.LayerError, explainer.explain, b.input(), layer="relu_4")
    assert "'relu_4'" in message and "'relu4'" in message


def test_layer_without_spatial_axes(vgg):
    b, explainer = vgg
    flat = next(layer for layer in explainer.session.graph.nodes if layer.op_type == "Flatten").outputs[0]
    assert "cannot carry a map" in _raises(exbp.LayerError, explainer.explain, b.input(), layer=flat)


@pytest.mark.parametrize("targets, fragment", [
    (10, "out of range; the model has 10 classes"), (-1, "out of range"), ("top11", "top10"),
    ("best", "unknown target"), (True, "class indices"), (2.5, "class indices"), ([], "class indices"),
    ([[1], [2]], "2 rows for 1 images")])
def test_bad_targets(vgg, targets, fragment):
    b, explainer = vgg
    assert fragment in _raises(exbp.TargetError, explainer.explain, b.input(), targets=targets)


def test_unknown_method(vgg):
    b, explainer = vgg
    message = _raises(exbp.MethodError, explainer.explain, b.input(), method="smoothgrad")
    assert "'smoothgrad'" in message and "mwp, cmwp" in message


@pytest.mark.parametrize("x, fragment", [
    (np.zeros((1, 3, 8, 8), np.float32), "(N, 3, 16, 16)"),
    (np.zeros((3, 16, 16), np.float32), "(N, 3, 16, 16)"),
    (np.full((1, 3, 16, 16), np.nan, np.float32), "NaN"),
    (np.array([["a"]]), "numbers"),
    (np.zeros((0, 3, 16, 16), np.float32), "no images")])
def test_bad_input(vgg, x, fragment):
    _, explainer = vgg
    assert fragment in _raises(exbp.InputError, explainer.explain, x)


def test_unknown_device():
    _, model = vgg_like()
    assert "'tpu'" in _raises(exbp.ExbpError, exbp.Explainer, model, device="tpu")


def test_cuda_when_unavailable_says_why_and_auto_falls_back():
    from exbp import cuda_unavailable

    reason = cuda_unavailable()
    if reason is None:
        pytest.skip("a CUDA backend is available here; tests/test_gpu.py covers it")
    _, model = vgg_like()
    message = _raises(exbp.ExbpError, exbp.Explainer, model, device="cuda:0")
    assert reason in message and "device='cpu'" in message
    assert exbp.Explainer(model, device="auto").device == "cpu"


def test_cuda_reasons_name_what_to_install(monkeypatch):
    """With a GPU visible but no CUDA provider, the reason says which onnxruntime to install."""
    import importlib.metadata
    import types

    import onnxruntime
    from exbp.engine.compute import backends

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 2)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime)))
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert "no CUDA device 3; this machine has 2 (0 to 1)" in backends.cuda_unavailable(3)

    installed = {"onnxruntime"}

    def distribution(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    assert "install onnxruntime-gpu in place of onnxruntime" in backends.cuda_unavailable(0)
    installed.add("onnxruntime-gpu")
    assert "both installed" in backends.cuda_unavailable(1)
