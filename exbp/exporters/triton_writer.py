"""A Triton Inference Server model repository for a compiled model (``exbp compile --triton``).

Triton's onnxruntime backend serves an ONNX file from ``REPOSITORY/NAME/1/model.onnx`` with the
``config.pbtxt`` beside its version folder; the config states every input and output with its
type and dims. Where the model's batch axis is dynamic, the config lets Triton batch requests
(``max_batch_size``, dims without the batch axis, dynamic batching on); a model of fixed batch
gets ``max_batch_size: 0`` and its full shapes. Dims unknown before run time are ``-1``.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from .atomic import write_atomically
from .onnx_writer import write_onnx

_TRITON_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
                 onnx.TensorProto.DOUBLE: "TYPE_FP64", onnx.TensorProto.INT64: "TYPE_INT64",
                 onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.UINT8: "TYPE_UINT8",
                 onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.BOOL: "TYPE_BOOL"}


def _dims(info: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in info.type.tensor_type.shape.dim]


def _batched(infos) -> bool:
    """Whether every tensor's first axis is the (dynamic) batch axis."""
    return all(_dims(info) and _dims(info)[0] == -1 for info in infos)


def triton_config(model: onnx.ModelProto, name: str, max_batch_size: int = 8) -> str:
    """The config.pbtxt text for ``model`` served as ``name``."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    batched = max_batch_size > 0 and _batched([*inputs, *graph.output])

    def tensors(infos) -> str:
        rows = []
        for info in infos:
            dims = _dims(info)[1:] if batched else _dims(info)
            kind = _TRITON_TYPES.get(info.type.tensor_type.elem_type)
            if kind is None:
                raise ValueError(f"tensor {info.name!r} has a type Triton's config cannot name")
            rows.append(f'  {{\n    name: "{info.name}"\n    data_type: {kind}\n    dims: [ '
                        f'{", ".join(str(d) for d in dims)} ]\n  }}')
        return ",\n".join(rows)
    lines = [f'name: "{name}"', 'backend: "onnxruntime"',
             f"max_batch_size: {max_batch_size if batched else 0}",
             f"input [\n{tensors(inputs)}\n]", f"output [\n{tensors(graph.output)}\n]"]
    if batched:
        lines.append("dynamic_batching { }")
    return "\n".join(lines) + "\n"


def write_triton_repository(model: onnx.ModelProto, repository: Path, name: str,
                            max_batch_size: int = 8) -> Path:
    """``repository/name/config.pbtxt`` and ``repository/name/1/model.onnx``; returns the model
    folder."""
    folder = Path(repository) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    config = triton_config(model, name, max_batch_size)
    write_onnx(model, folder / "1" / "model.onnx")
    write_atomically(folder / "config.pbtxt", lambda file: file.write(config.encode()))
    return folder
