"""Forward recording through onnxruntime.

An InferenceSession over the user's model (the original, not the canonical graph, so the logits
are exactly the model's) in which every tensor one walk plan reads is also a graph output, every
tensor whose shape alone it needs feeds a Shape node, and the rules' derived quantities
(:mod:`exbp.engine.record.recorded`) are extra nodes. onnxruntime runs every node of a session on every
call, so each walk plan gets its own session, built once, holding only what that walk needs.

The session reads the model's weights in place from exbp's arrays (external initializers,
:mod:`exbp.engine.record.shared_arrays`), so the weights exist once in memory however many
sessions use them.

Graph optimisations stay on: the recorded values equal those of the unoptimised graph up to float
rounding (tests/test_recording.py checks it), and they make the forward pass much faster.

The walk names tensors as the canonical graph does; ``recorded_as`` maps a canonical tensor to the
model's tensor that holds its values (a QDQ model's float tensor to its dequantised copy,
docs/method.md §3.6). The input is fed in the dtype the model takes (float16 for a float16 model),
and recorded float16 values come back as float32, in which the walk computes.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from ...errors import InputError, ModelError, first_line
from .shared_arrays import placeholder_initializer, share_arrays

SHAPE_SUFFIX = "::exbp_shape"
# onnxruntime's own log lines (warnings about unused initializers, graph transformations) would
# reach stderr beside exbp's one-line messages; errors are raised, and reported, anyway
ort.set_default_logger_severity(3)


class Recorder:
    def __init__(self, model: onnx.ModelProto, input_name: str, values: Iterable[str],
                 shapes: Iterable[str], shared: Mapping[str, np.ndarray],
                 extra_nodes: Sequence[onnx.NodeProto] = (),
                 session_options: Optional[ort.SessionOptions] = None, backend=None,
                 recorded_as: Mapping[str, str] = {}):
        """``shared``: arrays by name, among them those of the initializers whose data the model
        no longer holds and those the extra nodes read (the canonical graph's constants); only
        what some node reads is given to the session. ``values`` may name the extra nodes'
        outputs. With a CUDA ``backend`` the session runs on its GPU and the recorded tensors stay
        there. ``recorded_as``: canonical tensor -> the model's tensor holding its values; names
        given here and to :meth:`run`, and the extra nodes' inputs, are canonical."""
        self.input_name = input_name
        self._source = dict(recorded_as)
        values, shapes = self._sources(set(values) | {input_name}), self._sources(shapes)
        recording = onnx.ModelProto()
        recording.CopyFrom(model)
        graph = recording.graph
        graph.node.extend(_reading_sources(node, self._source) for node in extra_nodes)
        # onnxruntime drops unused initializers before it takes shared arrays, so share only
        # what some node reads
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        unused = [t for t in graph.initializer if t.name not in read]
        for tensor in unused:
            graph.initializer.remove(tensor)
        inline = {t.name for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL}
        produced = {name for node in graph.node for name in node.output}
        shared = {name: value for name, value in shared.items()
                  if name in read and name not in inline and name not in produced}
        known = {t.name for t in graph.initializer}
        graph.initializer.extend(placeholder_initializer(name, np.asarray(value))
                                 for name, value in shared.items() if name not in known)
        present = {output.name for output in graph.output}
        initializers = {t.name for t in graph.initializer}
        for name in sorted(set(values) - present - {input_name} - initializers):
            graph.output.append(onnx.ValueInfoProto(name=name))
        # A Shape node is a second consumer of its tensor and can block onnxruntime's fusions
        # (Conv+Add in residual blocks), so tensors exposed anyway give their shape by value.
        self._exposed = set(values) | present
        self._shape_sources = set(shapes) - self._exposed - {input_name} - initializers
        for name in sorted(self._shape_sources):
            graph.node.append(helper.make_node("Shape", [name], [name + SHAPE_SUFFIX],
                                               name=name + SHAPE_SUFFIX))
            graph.output.append(onnx.ValueInfoProto(name=name + SHAPE_SUFFIX))
        options = session_options or default_session_options()
        self._keep_alive = share_arrays(options, dict(shared))
        self._backend = backend
        self._binding_device = getattr(backend, "binding_device", None)
        providers = list(getattr(backend, "onnxruntime_providers", ["CPUExecutionProvider"]))
        try:
            self.session = ort.InferenceSession(recording.SerializeToString(), options,
                                                providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelError(f"onnxruntime cannot run the model: {first_line(exc)}") from None
        model_input = next(i for i in self.session.get_inputs() if i.name == input_name)
        self.input_type = _NUMPY_TYPES.get(model_input.type, np.float32)

    def _sources(self, names: Iterable[str]) -> set[str]:
        return {self._source.get(name, name) for name in names}

    def run(self, x: np.ndarray, values: Iterable[str], shapes: Iterable[str]):
        """(values, shapes): the named (canonical) tensors as arrays — float16 ones as float32 —
        and the named tensors' shapes."""
        values, shapes = set(values) | {self.input_name}, set(shapes)
        recorded, shape_of = self._run(x, self._sources(values), self._sources(shapes))
        canonical = {self._source.get(name, name): name for name in values | shapes}
        if self.input_name in self._source:   # the walk reads the input's dequantised copy
            del recorded[self.input_name]
        return ({canonical.get(name, name): _walk_precision(value) for name, value in recorded.items()},
                {canonical.get(name, name): shape for name, shape in shape_of.items()})

    def _run(self, x, values, shapes):
        """``run`` on the model's own tensor names."""
        check_input_range(x, self.input_type)
        wanted_shapes = set(shapes) - set(values) - {self.input_name}
        by_value = wanted_shapes - self._shape_sources
        values = sorted((set(values) | by_value) - {self.input_name})
        wanted_shapes = sorted(wanted_shapes & self._shape_sources)
        shape_outputs = [name + SHAPE_SUFFIX for name in wanted_shapes]
        try:
            if self._binding_device is None:
                x = np.ascontiguousarray(x, dtype=self.input_type)
                outputs = self.session.run(values + shape_outputs, {self.input_name: x})
            else:
                x, outputs = self._run_bound(x, values, shape_outputs)
        except Exception as exc:
            raise InputError(f"the model could not run on an input of shape {tuple(x.shape)}: "
                             f"{first_line(exc)}") from None
        recorded = dict(zip(values, outputs[:len(values)]))
        recorded[self.input_name] = x
        shape_of = {name: tuple(int(d) for d in shape)
                    for name, shape in zip(wanted_shapes, outputs[len(values):])}
        return recorded, shape_of

    def _run_bound(self, x, values, shape_outputs):
        """One run through IOBinding: the values stay in the device's memory and become the
        backend's arrays through DLPack (no copy); only the small Shape outputs come to the host.
        Returns (the input as recorded, the outputs)."""
        binding = self.session.io_binding()
        if isinstance(x, np.ndarray):
            x = np.ascontiguousarray(x, dtype=self.input_type)
            binding.bind_cpu_input(self.input_name, x)
        else:
            if getattr(x, "dtype", self.input_type) != self.input_type:   # float16 models
                x = x.astype(self.input_type)
            value = ort.OrtValue.from_dlpack(x)
            binding.bind_ortvalue_input(self.input_name, value)
            x = self._backend.from_onnxruntime(value)
        device_type, device_id = self._binding_device
        for name in values:
            binding.bind_output(name, device_type, device_id)
        for name in shape_outputs:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        outputs = binding.get_outputs()
        return x, ([self._backend.from_onnxruntime(v) for v in outputs[:len(values)]]
                   + [v.numpy() for v in outputs[len(values):]])


# Initializers smaller than this stay in the model: onnxruntime reads shapes, axes and pads
# while loading it, which a placeholder cannot give.
SHARED_MIN_SIZE = 4096


def without_initializer_data(model: onnx.ModelProto, arrays: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """A new model whose large numeric initializers in ``arrays`` are placeholders. A new
    message, because protobuf frees nothing of a message still referenced; the caller drops the
    original, and a Recorder given the arrays supplies them."""
    stripped = onnx.ModelProto()
    initializers = list(model.graph.initializer)
    model.graph.ClearField("initializer")
    try:
        stripped.CopyFrom(model)
    finally:
        model.graph.initializer.extend(initializers)
    for tensor in initializers:
        value = arrays.get(tensor.name)
        if value is not None and value.dtype.kind in "biuf" and value.size >= SHARED_MIN_SIZE:
            stripped.graph.initializer.append(placeholder_initializer(tensor.name, value))
        else:
            stripped.graph.initializer.add().CopyFrom(tensor)
    return stripped


def default_session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3   # errors only: exported models often warn about unused inputs
    # The CPU arena stays on: without it every run maps the recorded tensors' memory afresh and
    # pays its page faults (measured, ResNet-50 to the pixels: recording 197 ms without, 125 ms
    # with; peak memory 868 → 890 MB).
    return options


_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                "tensor(float16)": np.float16}
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _walk_precision(value):
    """A recorded array as the walk computes with it: float16 as float32 (exactly)."""
    return value.astype(np.float32) if value.dtype == np.float16 else value


def check_input_range(x, input_type) -> None:
    """InputError where a model taking float16 input is given values beyond float16's range."""
    if input_type == np.float16 and float(abs(x).max()) > _FLOAT16_MAX:
        raise InputError(f"the input holds values up to {float(abs(x).max()):g}, beyond "
                         f"float16's range (±{_FLOAT16_MAX:g}), and the model takes float16 "
                         "input; scale the input into that range")


def _reading_sources(node: onnx.NodeProto, sources: Mapping[str, str]) -> onnx.NodeProto:
    """``node`` reading the model's tensors where it names canonical ones."""
    if not any(name in sources for name in node.input):
        return node
    renamed = onnx.NodeProto()
    renamed.CopyFrom(node)
    renamed.input[:] = [sources.get(name, name) for name in node.input]
    return renamed
