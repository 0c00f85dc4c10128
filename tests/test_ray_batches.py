"""exbp.ray.ExplainBatch without Ray: the transform Ray Data's map_batches calls, on batches of
paths, decoded images and model inputs, with bad rows kept in place (tests/test_ray.py runs it on
a Ray cluster, where Ray is installed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import exbp
from builders import vgg_like
from conftest import assert_close, save_image, save_model
from exbp.ray import ExplainBatch


@pytest.fixture
def transform(tmp_path):
    b, model = vgg_like(size=16)
    return b, ExplainBatch(save_model(model, tmp_path / "model.onnx"), methods=("mwp", "cmwp"),
                           targets=["top1"]), exbp.Explainer(model)


def test_paths_and_images_give_the_single_process_maps(transform, tmp_path):
    _, batch_transform, explainer = transform
    rng = np.random.default_rng(0)
    good = [tmp_path / f"p{i}.png" for i in range(3)]
    for path in good:
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"no")
    paths = np.array([str(good[0]), str(bad), str(good[1]), str(good[2])], dtype=object)
    result = batch_transform({"path": paths, "id": np.arange(4)})
    assert list(result["id"]) == [0, 1, 2, 3] and "not an image" in result["error"][1]
    assert [bool(e) for e in result["error"]] == [False, True, False, False]
    settings = exbp.resolve_preprocessing(explainer.input_spec, explainer.metadata)
    for row, path in ((0, good[0]), (2, good[1]), (3, good[2])):
        expected = {m.method: m for m in exbp.explain_image(explainer, path, settings, ["top1"], ["mwp", "cmwp"])}
        for method in ("mwp", "cmwp"):
            assert_close(result[method][row][0], expected[method].map)
            assert tuple(result[f"{method}_max_point"][row][0]) == expected[method].max_point
        assert result["target"][row][0] == expected["mwp"].target
    assert np.isnan(result["mwp_max_point"][1]).all()
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in good])
    decoded = batch_transform({"image": images})
    assert_close(decoded["mwp"], result["mwp"][[0, 2, 3]])


def test_inputs_are_explained_as_given(transform):
    b, batch_transform, explainer = transform
    x = b.input(seed=3, batch=2)
    result = batch_transform({"input": x})
    expected = explainer.explain(x, targets="top1", method="cmwp")
    assert_close(result["cmwp"][:, 0], expected.maps[:, 0])
    assert list(result["error"]) == ["", ""]
    bad = batch_transform({"input": np.zeros((1, 2, 16, 16), np.float32)})
    assert "shape" in bad["error"][0]


def test_a_batch_without_a_known_column_is_refused(transform):
    _, batch_transform, _ = transform
    with pytest.raises(exbp.InputError, match="path, image, input"):
        batch_transform({"pictures": np.zeros(2)})
