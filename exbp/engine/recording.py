"""Forward recording through onnxruntime.

One InferenceSession over a copy of the user's model (the original, not the canonical graph, so the
logits are exactly the model's), in which every tensor a walk may read is also a graph output, and
every tensor whose shape alone is needed feeds a Shape node whose output is a graph output. A run
asks only for the outputs its walk needs, and onnxruntime computes only what those depend on.

Graph optimisations stay on: the recorded values equal those of the unoptimised graph up to float
rounding (tests/test_recording.py checks it), and they make the forward pass much faster.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from ..errors import InputError, ModelError

SHAPE_SUFFIX = "::exbp_shape"


class Recorder:
    def __init__(self, model: onnx.ModelProto, input_name: str, values: Iterable[str],
                 shapes: Iterable[str], providers: Optional[Sequence] = None,
                 session_options: Optional[ort.SessionOptions] = None):
        self.input_name = input_name
        recording = onnx.ModelProto()
        recording.CopyFrom(model)
        graph = recording.graph
        present = {output.name for output in graph.output}
        skip = present | {input_name} | {t.name for t in graph.initializer}
        for name in sorted(set(values) - skip):
            graph.output.append(onnx.ValueInfoProto(name=name))
        self._shape_sources = sorted(set(shapes) - {input_name} - {t.name for t in graph.initializer})
        for name in self._shape_sources:
            graph.node.append(helper.make_node("Shape", [name], [name + SHAPE_SUFFIX],
                                               name=name + SHAPE_SUFFIX))
            graph.output.append(onnx.ValueInfoProto(name=name + SHAPE_SUFFIX))
        options = session_options or default_session_options()
        try:
            self.session = ort.InferenceSession(recording.SerializeToString(), options,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"onnxruntime cannot run the model: {_first_line(exc)}") from None
        model_input = next(i for i in self.session.get_inputs() if i.name == input_name)
        self.input_type = _NUMPY_TYPES.get(model_input.type, np.float32)

    def run(self, x: np.ndarray, values: Iterable[str], shapes: Iterable[str]):
        """(values, shapes): the named activations as host arrays, and the named tensors' shapes."""
        values = sorted(set(values) - {self.input_name})
        wanted_shapes = sorted(set(shapes) - set(values) - {self.input_name})
        names = values + [name + SHAPE_SUFFIX for name in wanted_shapes]
        feed = {self.input_name: np.ascontiguousarray(x, dtype=self.input_type)}
        try:
            outputs = self.session.run(names, feed)
        except Exception as exc:
            raise InputError(f"the model could not run on an input of shape {tuple(x.shape)}: "
                             f"{_first_line(exc)}") from None
        recorded = dict(zip(values, outputs[:len(values)]))
        recorded[self.input_name] = feed[self.input_name]
        shape_of = {name: tuple(int(d) for d in shape)
                    for name, shape in zip(wanted_shapes, outputs[len(values):])}
        return recorded, shape_of


def default_session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3   # errors only: exported models often warn about unused inputs
    return options


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                "tensor(float16)": np.float16}
