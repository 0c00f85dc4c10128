"""exbp.http: the prediction and the maps for an uploaded image (the optional extra "http";
skips without FastAPI), through FastAPI's test client."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import exbp
from builders import vgg_like
from conftest import assert_close

pytest.importorskip("fastapi", reason="the HTTP service needs the extra 'http' (pip install -e \".[http]\")")
pytest.importorskip("multipart", reason="FastAPI's uploads need python-multipart (extra 'http')")
from fastapi.testclient import TestClient  # noqa: E402

from exbp.http import create_app  # noqa: E402


@pytest.fixture(scope="module")
def service():
    _, model = vgg_like(size=16)
    return TestClient(create_app(model)), exbp.Explainer(model)


def _png(width=30, height=20, seed=1):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def test_explain_returns_the_prediction_and_the_maps_of_the_image(service):
    client, explainer = service
    data = _png()
    response = client.post("/explain?targets=top1&targets=3&method=cmwp", files={"image": ("p.png", data)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"width": 30, "height": 20}
    settings = exbp.resolve_preprocessing(explainer.input_spec, explainer.metadata)
    expected = exbp.explain_images(explainer, [Image.open(io.BytesIO(data))], settings, ["top1", 3], ["cmwp"])[0]
    assert [m["target"] for m in body["maps"]] == [m.target for m in expected]
    for got, want in zip(body["maps"], expected):
        assert_close(np.array(got["map"], np.float32), want.map)
        assert (got["max_point"]["x"], got["max_point"]["y"]) == want.max_point
    assert body["top_classes"][0]["class"] == expected[0].top_classes[0][0]


def test_bad_requests_answer_422_with_one_line(service):
    client, _ = service
    for files, query, words in (({"image": ("x.png", b"not a png")}, "", "not an image"),
                                ({"image": ("x.png", b"")}, "", "empty"),
                                ({"image": ("x.png", _png())}, "?targets=99", "class"),
                                ({"image": ("x.png", _png())}, "?layer=nope", "unknown layer"),
                                ({"image": ("x.png", _png())}, "?method=magic", "unknown method")):
        response = client.post("/explain" + query, files=files)
        assert response.status_code == 422, (query, response.text)
        detail = response.json()["detail"]
        assert words in detail and "\n" not in detail


def test_model_describes_its_input_and_layers(service):
    client, explainer = service
    body = client.get("/model").json()
    assert body["input"] == explainer.input_spec.name and body["default_layer"] in body["layers"]
