"""A torchvision ResNet-18 (random weights, eval mode), exported to ONNX, quantised to int8 QDQ
with calibration on random images and converted to float16: all three explain, and their maps at
the pixels and at layer3 agree with the float model's (docs/method.md §3.6). Needs torch and
torchvision (the optional `reference` extra) and skips cleanly without them.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import onnx
import pytest

import exbp

torch = pytest.importorskip("torch", reason="the ResNet-18 check needs torch (extra 'reference')")
torchvision = pytest.importorskip("torchvision", reason="the ResNet-18 check needs torchvision")
quantization = pytest.importorskip("onnxruntime.quantization")
float16 = pytest.importorskip("onnxconverter_common.float16", reason="needs onnxconverter-common")

SIZE = 224
LAYER3 = "/layer3/layer3.1/relu_1/Relu_output_0"
# (min correlation, max relative L1) per converted model and method, at both layers. Measured
# (docs/method.md §3.6): QDQ MWP 0.9997 / 0.012, c-MWP 0.998 / 0.056; float16 1.0000 / 0.0014.
BOUNDS = {("qdq", "mwp"): (0.99, 0.05), ("qdq", "cmwp"): (0.98, 0.15),
          ("float16", "mwp"): (0.9999, 0.01), ("float16", "cmwp"): (0.9999, 0.01)}


def _images(seed, count):
    return np.random.default_rng(seed).normal(size=(count, 3, SIZE, SIZE)).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    network = torchvision.models.resnet18(weights=None).eval()
    buffer = io.BytesIO()
    torch.onnx.export(network, torch.zeros(1, 3, SIZE, SIZE), buffer, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"])
    model = onnx.load_from_string(buffer.getvalue())
    folder = tmp_path_factory.mktemp("resnet18")
    onnx.save(model, folder / "float.onnx")
    q = quantization

    class Calibration(q.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": image[None]} for image in _images(1, 8)])

        def get_next(self):
            return next(self.batches, None)
    logging.disable(logging.WARNING)
    try:
        q.quantize_static(str(folder / "float.onnx"), str(folder / "qdq.onnx"), Calibration(),
                          quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    return {"float": model, "qdq": onnx.load(str(folder / "qdq.onnx")),
            "float16": float16.convert_float_to_float16(model, keep_io_types=False)}


def agreement(want, got):
    want = want.reshape(-1, int(np.prod(want.shape[2:]))).astype(np.float64)
    got = got.reshape(want.shape).astype(np.float64)
    return (min(np.corrcoef(w, g)[0, 1] for w, g in zip(want, got)),
            max(np.abs(w - g).sum() / np.abs(w).sum() for w, g in zip(want, got)))


@pytest.mark.parametrize("converted", ["qdq", "float16"])
def test_converted_resnet18_maps_agree_with_the_float_model(models, converted):
    reference, explainer = exbp.Explainer(models["float"]), exbp.Explainer(models[converted])
    assert explainer.default_layer() == reference.default_layer() == LAYER3
    x = _images(2, 2)
    targets = reference.explain(x, targets="top1", method="mwp").targets
    for method in ("mwp", "cmwp"):
        for layer in ("image", LAYER3):
            want = reference.explain(x, targets=targets, layer=layer, method=method).maps
            got = explainer.explain(x, targets=targets, layer=layer, method=method).maps
            correlation, distance = agreement(want, got)
            print(f"{converted} {method} {layer}: correlation {correlation:.4f}, relative L1 {distance:.4f}")
            lowest, highest = BOUNDS[converted, method]
            assert correlation >= lowest and distance <= highest, (method, layer, correlation, distance)


@pytest.mark.parametrize("converted, tolerances", [("qdq", "int8"), ("float16", "float16")])
def test_converted_resnet18_compares_within_its_tolerances(models, converted, tolerances):
    from PIL import Image

    rng = np.random.default_rng(3)
    photos = [Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(2)]
    comparison = exbp.compare(models["float"], models[converted], photos, targets=2, tolerances=tolerances)
    for row in comparison.rows:
        print(converted, row.logits_difference, row.top_a == row.top_b,
              [(a.method, round(a.correlation, 5), round(a.difference, 4), a.max_point_distance)
               for a in row.maps])
    assert comparison.within, comparison.table()
    assert not exbp.compare(models["float"], models[converted], photos[:1], tolerances="float32").within
