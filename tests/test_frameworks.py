"""Explainer.from_torch and Explainer.from_keras (optional: each skips without its framework).
The exported model's maps must equal those of the same module exported to a file by hand, and
the framework's own logits."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest

import exbp
from conftest import assert_close


def test_from_torch_explains_the_module():
    torch = pytest.importorskip("torch", reason="Explainer.from_torch needs torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    module.train()
    x = torch.randn(2, 3, 16, 16)
    explainer = exbp.Explainer.from_torch(module, x[:1])
    assert module.training      # handed back as it was
    module.eval()
    with torch.no_grad():
        assert_close(explainer.logits(x.numpy()), module(x).numpy(), against="reference")
    buffer = io.BytesIO()
    torch.onnx.export(module, (x[:1],), buffer, dynamo=False, opset_version=17,
                      input_names=["input"], dynamic_axes={"input": {0: "N"}})
    by_hand = exbp.Explainer(onnx.load_from_string(buffer.getvalue()))
    for method in ("mwp", "cmwp"):
        assert_close(explainer.explain(x.numpy(), targets=1, layer="input", method=method).maps,
                     by_hand.explain(x.numpy(), targets=1, layer="input", method=method).maps)


def test_from_torch_refuses_what_is_not_a_module():
    pytest.importorskip("torch", reason="Explainer.from_torch needs torch")
    with pytest.raises(exbp.ModelError, match="takes a torch.nn.Module"):
        exbp.Explainer.from_torch(lambda x: x, np.zeros((1, 3, 4, 4), np.float32))


def test_from_keras_explains_a_channels_last_model():
    """With a preprocessing layer before the first convolution (whose mean and variance Keras's
    exporter leaves as unused graph inputs)."""
    keras = pytest.importorskip("keras", reason="Explainer.from_keras needs keras and tensorflow")
    pytest.importorskip("tensorflow", reason="Explainer.from_keras needs tensorflow")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 127.5, offset=-1),
        keras.layers.Normalization(mean=[0.1, -0.2, 0.0], variance=[0.8, 1.2, 1.0]),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)])
    x = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    explainer = exbp.Explainer.from_keras(model)
    assert explainer.input_spec.channels_last
    assert_close(explainer.logits(x), np.asarray(model(x)), against="reference")
    maps = explainer.explain(x, targets=2, layer=explainer.input_spec.name, method="mwp").maps
    assert maps.shape == (2, 1, 16, 16) and abs(maps.sum() - 2) < 1e-3


def test_from_keras_without_keras_says_what_to_install(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_keras(name, *args, **kwargs):
        if name == "keras":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_keras)
    with pytest.raises(exbp.ModelError, match="pip install keras"):
        exbp.Explainer.from_keras(object())
