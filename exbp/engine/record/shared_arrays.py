"""Sharing exbp's arrays with onnxruntime sessions, so that every weight exists once in memory:
a session's initializer is a placeholder without data, and the session reads exbp's array in place.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper


def placeholder_initializer(name: str, value: np.ndarray) -> onnx.TensorProto:
    """An initializer without data, for one that :func:`share_arrays` supplies."""
    tensor = onnx.TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(value.dtype),
                              dims=value.shape)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="exbp-shared-memory")
    return tensor


def share_arrays(options: ort.SessionOptions, arrays: dict) -> list:
    """Let a session read ``arrays`` in place as the initializers of those names; the returned
    OrtValues (and the arrays) must outlive the session."""
    names = list(arrays)
    values = [ort.OrtValue.ortvalue_from_numpy(np.require(arrays[n], requirements="C")) for n in names]
    options.add_external_initializers(names, values)
    return values


def weight_part_nodes(weight: str, part: str, output: str) -> list[onnx.NodeProto]:
    """Nodes computing W⁺ = Relu(W) or W⁻ = −Relu(−W) from the initializer ``weight``."""
    if part == "positive":
        return [helper.make_node("Relu", [weight], [output], name=output)]
    return [helper.make_node("Neg", [weight], [output + "_negated"], name=output + "_negated"),
            helper.make_node("Relu", [output + "_negated"], [output + "_relu"], name=output + "_relu"),
            helper.make_node("Neg", [output + "_relu"], [output], name=output)]
