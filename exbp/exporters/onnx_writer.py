"""Writing an ONNX model: one file, or beside it a ``.data`` file of its weights where the model
passes protobuf's 2 GB limit on one message (as PyTorch's exporter writes large models)."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper

from .atomic import write_atomically

PROTOBUF_LIMIT = 2 ** 31 - 1


def write_onnx(model: onnx.ModelProto, path: Path) -> Path:
    """``model`` at ``path``; past the limit its tensors then refer to the ``.data`` file."""
    path = Path(path)
    if _weight_bytes(model) < PROTOBUF_LIMIT - 2 ** 26:      # room for the graph itself
        return write_atomically(path, lambda file: file.write(model.SerializeToString()))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return path


def _weight_bytes(model: onnx.ModelProto) -> int:
    """The initializers' size, from their shapes (protobuf cannot even size a message past 2 GB)."""
    total = 0
    for tensor in model.graph.initializer:
        count = 1
        for dim in tensor.dims:
            count *= dim
        total += count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return total
