"""A minimal HTTP service beside a model server (extra ``http``: FastAPI): the prediction and
the maps for an uploaded image.

    uvicorn --factory "exbp.http:app_from_environment"      # EXBP_MODEL=model.onnx
    curl -F image=@photo.jpg "localhost:8000/explain?method=cmwp&targets=top1&targets=281"

``POST /explain`` takes the image as a multipart ``image`` field and answers JSON: the image's
size, the top classes (index, label, probability), and per target and method the map at the
layer (as nested lists, float32 values), its size, and its maximum point in the image's pixels.
``GET /model`` describes the model (input, layers, default layer, classes). A bad image, target,
layer or method answers 422 with the one-line message of its :class:`~exbp.ExbpError`; nothing
else of exbp's raises. One :class:`~exbp.Explainer` serves every request (it is thread-safe).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time
import os
from typing import List, Optional

from .engine.explainer import Explainer
from .errors import ExbpError, InputError
from .image_maps import explain_images
from .preprocessing import load_image, resolve_preprocessing


def create_app(model, preset: Optional[str] = None, max_layer_values: int = 1 << 16):
    """A FastAPI app explaining ``model`` (a path, an onnx.ModelProto or an Explainer)."""
    try:
        from fastapi import FastAPI, File, HTTPException, Query, UploadFile
    except ImportError:
        raise ImportError("exbp.http needs FastAPI: pip install -e \".[http]\"") from None
    explainer = model if isinstance(model, Explainer) else Explainer(model)
    settings = resolve_preprocessing(explainer.input_spec, explainer.metadata, preset)
    app = FastAPI(title="exbp", description="Excitation Backprop maps beside the prediction")

    @app.get("/model")
    def describe():
        return {"input": explainer.input_spec.name, "input_shape": explainer.input_spec.described(),
                "channels_last": explainer.input_spec.channels_last, "classes": explainer.classes,
                "default_layer": explainer.default_layer(settings.input_shape(explainer.input_spec.shape)),
                "layers": [layer.name for layer in explainer.layers()[:-1]]}

    @app.post("/explain")
    def explain(image: UploadFile = File(...), targets: List[str] = Query(["top1"]),
                method: List[str] = Query(["mwp", "cmwp"]), layer: Optional[str] = None):
        try:
            picture = load_image(image.file.read())
            picture.filename = image.filename or "upload"
            (result,) = explain_images(explainer, [picture], settings, targets, method, layer)
            if isinstance(result, ExbpError):
                raise result
        except ExbpError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        first = result[0]
        maps = []
        for m in result:
            if m.map.size > max_layer_values:
                raise HTTPException(status_code=422, detail=f"the map at layer {m.layer!r} has "
                                    f"{m.map.size} values, more than {max_layer_values}; choose a deeper layer")
            maps.append({"target": m.target, "label": m.label, "method": m.method, "layer": m.layer,
                         "logit": m.logit, "probability": m.probability, "size": list(m.map.shape),
                         "map": m.map.tolist(),
                         "max_point": None if m.max_point is None else {"x": m.max_point[0], "y": m.max_point[1]}})
        return {"image": {"width": first.image.width, "height": first.image.height},
                "top_classes": [{"class": c, "label": label, "probability": p} for c, label, p in first.top_classes],
                "maps": maps}

    return app


def app_from_environment():
    """The app for ``EXBP_MODEL`` (and ``EXBP_PRESET``), for ``uvicorn --factory``."""
    model = os.environ.get("EXBP_MODEL")
    if not model:
        raise InputError("set EXBP_MODEL to the .onnx file the service explains")
    return create_app(model, os.environ.get("EXBP_PRESET") or None)

