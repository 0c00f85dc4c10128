"""`exbp compare` and exbp.compare: two models of one network agree within the tolerances, and a
perturbed copy does not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

import exbp
from builders import residual_net, vgg_like
from conftest import run, save_model


def _photos(folder, count=2, size=(40, 36)):
    rng = np.random.default_rng(5)
    paths = []
    for index in range(count):
        path = folder / f"photo{index}.png"
        Image.fromarray(rng.integers(0, 255, size[::-1] + (3,), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _perturbed(model: onnx.ModelProto) -> onnx.ModelProto:
    """The first conv weight scaled and one output channel negated."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    weight = next(init for init in copy.graph.initializer if len(init.dims) == 4)
    values = numpy_helper.to_array(weight) * 1.5
    values[0] = -values[0]
    weight.CopyFrom(numpy_helper.from_array(values.astype(np.float32), weight.name))
    return copy


@pytest.fixture
def twins(tmp_path):
    """The same weights channels first and channels last (as tf2onnx or jax2onnx write them)."""
    _, first, _ = residual_net(channels_last=False, preprocessing=True)
    _, last, _ = residual_net(channels_last=True, preprocessing=True)
    return (save_model(first, tmp_path / "first.onnx"), save_model(last, tmp_path / "last.onnx"),
            save_model(_perturbed(last), tmp_path / "perturbed.onnx"))


def test_two_exports_of_one_network_agree(twins, tmp_path):
    first, last, _ = twins
    photos = _photos(tmp_path)
    out = tmp_path / "out"
    result = run("compare", first, last, *photos, "--targets", 2, "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "comparison.json").read_text())
    assert report["within_tolerances"] and len(report["results"]) == 4
    for row in report["results"]:
        assert row["logits_difference"] < 1e-5 and row["top_a"] == row["top_b"]
        for agreement in row["maps"]:
            assert agreement["correlation"] > 0.99999 and agreement["difference"] < 1e-5
            assert agreement["max_point_distance"] == 0
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"photo{i}_{t}_compare.png" for i in range(2) for t in {r["target"] for r in report["results"]
                                                               if r["image"].endswith(f"photo{i}.png")})
    assert "| mwp |" in result.output and "| cmwp |" in result.output


def test_a_perturbed_copy_is_beyond_the_tolerances(twins, tmp_path):
    first, _, perturbed = twins
    result = run("compare", first, perturbed, *_photos(tmp_path), "--out", tmp_path / "out")
    assert result.exit_code == 4, result.output
    report = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert not report["within_tolerances"]
    assert all("logits" in row["beyond"] for row in report["results"])


def test_a_bad_image_is_skipped_and_the_rest_compared(twins, tmp_path):
    first, last, _ = twins
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    result = run("compare", first, last, bad, *_photos(tmp_path, 1), "--out", tmp_path / "out")
    assert result.exit_code == 3, result.output
    assert "skipped" in result.output and "broken.png" in result.output
    report = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert list(report["failures"]) == [str(bad)] and len(report["results"]) == 1


def test_arrays_are_given_to_each_model_in_its_layout(twins):
    first, last, _ = twins
    x = np.random.default_rng(2).normal(size=(1, 3, 32, 32)).astype(np.float32)
    comparison = exbp.compare(first, last, [x], layer_a="input", layer_b="input")
    assert comparison.within and comparison.layer_a == comparison.layer_b == "input"
    with pytest.raises(exbp.InputError, match="unknown tolerances 'f8'"):
        exbp.compare(first, last, [x], tolerances="f8")


def test_named_layers_are_compared(twins, tmp_path):
    first, last, _ = twins
    blocks_a = residual_net(channels_last=False, preprocessing=True)[2]
    blocks_b = residual_net(channels_last=True, preprocessing=True)[2]
    result = run("compare", first, last, *_photos(tmp_path, 1), "--layer-a", blocks_a["residual"],
                 "--layer-b", blocks_b["residual"], "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert f"B: {last} at {blocks_b['residual']}" in result.output
    assert exbp.Explainer(str(last)).default_layer() != blocks_b["residual"]


CONFORMANCE = Path(__file__).parent / "data" / "conformance"


def test_the_cross_exporter_fixtures_compare_within_the_float32_tolerances(tmp_path):
    """The TorchScript export of the MobileNet-like fixture against its Keras, tf2onnx and
    jax2onnx exports (channels last, preprocessing inside), on the fixtures' image."""
    pixels = np.load(CONFORMANCE / "input.npy")[0].transpose(1, 2, 0)
    photo = tmp_path / "fixture.png"
    Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)).save(photo)
    reference = CONFORMANCE / "mobilenet_like" / "torch_script.onnx"
    for export in ("torch_dynamo", "tf2onnx", "keras_export", "jax2onnx"):
        result = run("compare", reference, CONFORMANCE / "mobilenet_like" / f"{export}.onnx", photo,
                     "--targets", 2, "--preset", "none", "--out", tmp_path / export)
        assert result.exit_code == 0, (export, result.output)


def test_a_float16_conversion_compares_within_the_float16_tolerances(tmp_path):
    float16 = pytest.importorskip("onnxconverter_common.float16",
                                  reason="the float16 check needs onnxconverter-common (extra 'test')")
    _, model, _ = residual_net(channels_last=False, size=32)
    half = save_model(float16.convert_float_to_float16(model, keep_io_types=False), tmp_path / "half.onnx")
    full = save_model(model, tmp_path / "full.onnx")
    photos = _photos(tmp_path)
    assert run("compare", full, half, *photos, "--tolerances", "float16", "--out", tmp_path / "a").exit_code == 0
    comparison = exbp.compare(full, half, photos)
    assert all(a.correlation > 0.9999 for row in comparison.rows for a in row.maps)


def test_an_int8_qdq_quantisation_compares_within_the_int8_tolerances(tmp_path):
    from builders import qdq_quantized

    b, model, _ = residual_net(channels_last=False, size=32)
    full = save_model(model, tmp_path / "full.onnx")
    qdq = save_model(qdq_quantized(b, model, tmp_path), tmp_path / "int8.onnx")
    photos = _photos(tmp_path, 3)
    result = run("compare", full, qdq, *photos, "--tolerances", "int8", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    strict = run("compare", full, qdq, *photos, "--out", tmp_path / "strict")
    assert strict.exit_code == 4


def test_methods_at_different_layers_are_each_compared_at_their_own(twins, tmp_path):
    first, last, _ = twins
    out = tmp_path / "out"
    result = run("compare", first, last, *_photos(tmp_path, 1), "--method", "gradient,cmwp", "--out", out)
    assert result.exit_code == 0, result.output
    layers = json.loads((out / "comparison.json").read_text())["layers"]
    assert layers["gradient"] == ["input", "input"] and layers["cmwp"][0] != "input"
    assert "input (gradient)" in result.output


def test_models_of_different_networks_are_refused_in_one_line(twins, tmp_path):
    first, _, _ = twins
    _, other = vgg_like(size=16, classes=7)
    result = run("compare", first, save_model(other, tmp_path / "other.onnx"), *_photos(tmp_path, 1),
                 "--out", tmp_path / "out")
    assert result.exit_code == 1 and "5 classes and model B 7" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
