"""Writing an ONNX model: one file, or beside it a ``.data`` file of its weights where the model
passes protobuf's 2 GB limit on one message (as PyTorch's exporter writes large models)."""

from __future__ import annotations

from pathlib import Path

import onnx

from .atomic import write_atomically

PROTOBUF_LIMIT = 2 ** 31 - 1


def write_onnx(model: onnx.ModelProto, path: Path) -> Path:
    path = Path(path)
    if model.ByteSize() < PROTOBUF_LIMIT:
        return write_atomically(path, lambda file: file.write(model.SerializeToString()))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return path
