"""Reading an ONNX model from disk (or taking a ModelProto) and refusing what exbp cannot use.

Every refusal is a one-line :class:`~exbp.errors.ModelError` that names the file and what was wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper

from ...errors import ModelError, first_line

# Opsets whose definitions of every op in the rule table were checked against the rules (the
# schemas of those ops changed only their type lists after opset 22).
MIN_OPSET = 7
MAX_OPSET = 28
PROTOBUF_LIMIT = 2 ** 31 - 1    # bytes: a larger ModelProto cannot be serialised


def load_model(source: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Return a checked ModelProto from a path or a ModelProto (which is not modified)."""
    path = None
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        label = f"model {model.graph.name or '<unnamed>'!r}"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        model = _read_file(path)
        label = str(source)
    else:
        raise ModelError(
            f"cannot load a model from a {type(source).__name__}; pass a path to an .onnx file "
            "or an onnx.ModelProto")
    _check_opset(model, label)
    try:
        if path is not None:        # by path: its external data beside it, whatever its size
            onnx.checker.check_model(str(path))
        elif model.ByteSize() < PROTOBUF_LIMIT:
            onnx.checker.check_model(model)
        # (a ModelProto over protobuf's 2 GB cannot be serialised for the checker; reading its
        # graph below still refuses what exbp cannot use)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"{label} is not a valid ONNX model: {first_line(exc)}") from None
    return model


def _read_file(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelError(f"model file {path} does not exist; give the path of an .onnx file")
    if not path.is_file():
        raise ModelError(f"model path {path} is not a file; pass an .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning or others by version
        raise ModelError(f"{path} is not an ONNX model ({type(exc).__name__}); "
                         "pass a file saved by onnx.save or a framework's ONNX exporter") from None
    if not model.graph.node and not model.graph.output:
        # protobuf parses many non-ONNX files into an empty message without complaint
        raise ModelError(f"{path} is not an ONNX model (no graph found); "
                         "pass a file saved by onnx.save or a framework's ONNX exporter")
    _load_contained_external_data(model, path)
    return model


def _load_contained_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Load external tensor data, refusing any location outside the model's folder."""
    base = path.resolve().parent
    for tensor in _all_tensors(model.graph):
        if not external_data_helper.uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(base):
            raise ModelError(
                f"{path}: tensor {tensor.name!r} points its external data at {location!r}, outside "
                f"the model's folder {base}; external data must lie in that folder")
        if not target.is_file():
            raise ModelError(f"{path}: external data file {location!r} of tensor "
                             f"{tensor.name!r} is missing from {base}; keep the data files beside the model")
    try:
        external_data_helper.load_external_data_for_model(model, str(base))
    except Exception as exc:
        raise ModelError(f"{path}: its external data could not be read ({exc})") from None


def _all_tensors(graph: onnx.GraphProto):
    """Initializers and attribute tensors of a graph and of its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            subgraphs = list(attribute.graphs)
            if attribute.HasField("g"):
                subgraphs.append(attribute.g)
            for subgraph in subgraphs:
                yield from _all_tensors(subgraph)


def _check_opset(model: onnx.ModelProto, label: str) -> None:
    versions = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    version = versions.get("ai.onnx")
    if version is None:
        raise ModelError(f"{label} imports no default ONNX opset; exbp supports opsets "
                         f"{MIN_OPSET} to {MAX_OPSET}")
    if not MIN_OPSET <= version <= MAX_OPSET:
        raise ModelError(f"{label} uses opset {version}; exbp supports opsets {MIN_OPSET} to "
                         f"{MAX_OPSET} (convert it with onnx.version_converter)")


def default_opset(model: onnx.ModelProto) -> int:
    return next(imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx"))
