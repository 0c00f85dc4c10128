"""Excitation Backprop compiled into the model's own ONNX graph (docs/method.md §10).

The walk runs once, at compile time, on the graph backend (:mod:`.compute.graph_backend`): every
rule, the top signal and the map reduction are the eager walk's own code, and each array operation
they perform writes an ONNX node instead of computing. The nodes read the model's tensors by name,
so the compiled model is the user's model, untouched, plus those nodes and a map output per
method; any onnxruntime session returns the prediction and the maps from one run.

What the eager walk decides from one input's values the compiled graph must decide for every
input. The static sign analysis (§1.2) decides which inputs need their x⁻ terms: a tensor it
cannot prove ≥ 0 gets them, where the eager walk scans the recorded values and skips them for an
input that happens to have none (the terms are then zero, so the maps agree). Each rule that
shares by sign (§3.1) chooses per element by the recorded sign, as it does eagerly.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from typing import Optional, Sequence, Union

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ..errors import InputError, MethodError, ModelError, TargetError
from ..graph_rules import Propagation, Recorded, entry_for
from .compute.constants import ConstantStore
from .compute.graph_arrays import Batch, GraphBuilder, SymbolicArray, element_type
from .compute.graph_backend import GraphBackend
from .record.recording import (Recorder, check_input_range, default_session_options,
                               without_initializer_data)
from .record.shared_arrays import share_arrays
from .session import ModelSession
from .walk.maps import Explanation, class_scores
from .walk.methods import MethodLike, methods_named
from .walk.targets import TOP_K, resolve_targets, top_signal
from .walk.tensors import TensorStore
from .walk.walker import plan_maps, walk

MIN_COMPILE_OPSET = 9
TARGETS_INPUT = "exbp_targets"      # int64 (N, K): the classes to explain, with targets="input"
TARGETS_OUTPUT = "exbp_targets"     # int64 (N, K): the classes explained, with targets="topK"
LOGITS_OUTPUT = "exbp_logits"       # float32: the logits the maps explain
TOP_INPUT, SIGNAL_OUTPUT = "exbp_top", "exbp_signal"   # compile_propagation's
METADATA_KEY = "exbp.compiled"


def map_output(method: str) -> str:
    return f"exbp_{method}"


class CompiledTensors(TensorStore):
    """What the rules read when they are compiled: symbolic activations and constants. A tensor's
    sign is known only from the static analysis, for every input at once.

    A max pooling's winners are its rule's derived quantity here as in the eager recording — a
    MaxPool twin's Indices, which the rule routes to with ``bincount`` (a ScatterElements adding,
    from opset 16; before it, the rule finds the winners itself). The normaliser Z is the rule's
    own convolution either way."""

    def __init__(self, *args, builder: GraphBuilder, recorded_as):
        super().__init__(*args)
        self._builder = builder
        self._recorded_as = recorded_as

    def holds_negatives(self, name: str) -> bool:
        return self.may_be_negative(name)

    def recorded(self, node, kind: Recorded):
        build = entry_for(node).derived.get(kind) if entry_for(node) is not None else None
        if kind is not Recorded.WINNERS or build is None or self._builder.opset < 16:
            return None
        out = self._builder.name("winners")
        nodes = build(node, not self.may_be_negative(node.inputs[0]), out)
        if not nodes:
            return None
        for proto in nodes:
            proto.input[:] = [self._recorded_as.get(name, name) for name in proto.input]
            proto.output[:] = [name if name == out else self._builder.name("unused") for name in proto.output]
        self._builder.nodes.extend(nodes)
        return SymbolicArray(self._builder, out, self.shape(node.outputs[0]), np.int64)


class _Compilation:
    """One compilation's state: the user's model with its weights, the builder its nodes go to,
    the graph backend, and every tensor's shape with the batch axis symbolic."""

    def __init__(self, session: ModelSession, input_shape, with_weights: bool = True):
        graph = session.graph
        if graph.opset < MIN_COMPILE_OPSET:
            raise ModelError(f"exbp compile writes opset {MIN_COMPILE_OPSET} nodes and the model uses "
                             f"opset {graph.opset}; convert it with onnx.version_converter first")
        self.session = session
        self.example, self.dynamic_batch = _example_shape(session, input_shape)
        self.shapes: dict = {}
        # the weights go into the model only where it leaves exbp: an in-process session reads
        # the engine's arrays in place
        self.model = _full_model(session) if with_weights else _structure(session)
        self.builder = GraphBuilder(graph.opset, batch=(graph.input_name, 0) if self.dynamic_batch else None)
        self.backend = GraphBackend(self.builder, _named_values(self.model))
        self.batch_dim = _batch_dim(self.model, graph.input_name) if self.dynamic_batch else self.example[0]
        self.inputs: list = []
        self.outputs: list = []

    @property
    def xp(self):
        return self.backend.xp

    def tensors(self, plans) -> CompiledTensors:
        """What the rules of ``plans`` read, the logits among it."""
        session = self.session
        self.shapes = _run_shapes(session, plans, self.example, self.dynamic_batch)
        needed = frozenset().union(*(plan.values for plan in plans)) | {session.logits}
        types = _element_types(session.model)
        values = {name: _recorded(self.builder, session, name, self.shapes, types) for name in needed}
        return CompiledTensors(ConstantStore(self.backend, session.constants.host), values, self.shapes,
                               {}, session.non_negative, session.no_negative_signal,
                               builder=self.builder, recorded_as=session.canonical.recorded_as)

    def symbolic_dims(self, shape) -> list:
        """A shape as a value_info takes it: the batch axis by its name."""
        return [(self.batch_dim if dim.factor == 1 else None) if isinstance(dim, Batch) else int(dim)
                for dim in shape]

    def add_input(self, name: str, shape, dtype) -> SymbolicArray:
        self.inputs.append(helper.make_tensor_value_info(name, element_type(dtype), self.symbolic_dims(shape)))
        return SymbolicArray(self.builder, name, shape, dtype)

    def add_output(self, name: str, array: SymbolicArray) -> None:
        self.builder.node("Identity", [array.name], names=[name])
        self.outputs.append(helper.make_tensor_value_info(name, element_type(array.dtype),
                                                          self.symbolic_dims(array.shape)))

    def finished(self, metadata: dict) -> onnx.ModelProto:
        _assemble(self.model, self.builder, self.inputs, self.outputs)
        props = {p.key: p.value for p in self.model.metadata_props}
        helper.set_model_props(self.model, {**props, METADATA_KEY: json.dumps(metadata)})
        return self.model


def compile_session(session: ModelSession, layer: Optional[str] = None,
                    methods: Sequence[MethodLike] = ("mwp", "cmwp"),
                    targets: Union[str, int, Sequence[int]] = "top1", target_count: int = 1,
                    resize: Union[bool, Sequence[int]] = False,
                    input_shape: Optional[Sequence[int]] = None, labels=None,
                    with_weights: bool = True) -> onnx.ModelProto:
    """The model of ``session`` with the maps of ``methods`` (MWP, c-MWP) at ``layer`` as extra
    outputs ``exbp_<method>``, float32 (N, K, h, w). ``targets``: "topK" (the K best classes of
    each image, also output as ``exbp_targets``), "input" (an int64 input ``exbp_targets`` of
    shape (N, ``target_count``) carries them), or fixed classes. ``resize``: maps at the
    input's size (True) or at (H, W). ``input_shape``: the input's shape where the model leaves
    more than its batch size open. ``with_weights`` False: the model's large weights stay
    placeholders, for a session that reads the engine's arrays (:class:`SharedSession`)."""
    methods = methods_named(methods)
    for method in methods:
        if method.propagation is not Propagation.EXCITATION:
            raise MethodError(f"exbp compile writes Excitation Backprop (mwp, cmwp); {method.name!r} "
                              "runs only in the eager walk (Explainer.explain)")
    compilation = _Compilation(session, input_shape, with_weights)
    plans = session.plans_for(methods, layer, compilation.example)
    tensors = compilation.tensors([plan for plan, _ in plans])
    xp = compilation.xp
    logits = tensors.value(session.logits)
    target_array = _targets(compilation, logits, targets, target_count, labels)
    one_hot = top_signal(xp, logits, target_array)
    spatial = session_spatial(session, compilation.example)
    size = spatial if resize is True else (tuple(int(s) for s in resize) if resize else None)
    compilation.add_output(LOGITS_OUTPUT, logits)
    layers = {}
    for plan, members in plans:
        with _writable(plan.layer):
            maps = plan_maps(plan, members, tensors, one_hot, logits,
                             session.catalogue.layout(plan.layer), target_array.shape[1], size)
        for name, array in maps.items():
            compilation.add_output(map_output(name), array)
            layers[name] = plan.layer
    return compilation.finished({
        "methods": [m.name for m in methods], "layers": layers,
        "targets": targets if isinstance(targets, str) else np.asarray(targets).reshape(-1).tolist(),
        "maps": [map_output(m.name) for m in methods], "resize": list(size) if size else None})


def compile_propagation(session: ModelSession, layer: str, rows: int,
                        methods: Sequence[MethodLike] = ("mwp",),
                        input_shape: Optional[Sequence[int]] = None) -> onnx.ModelProto:
    """The compiled form of :meth:`Explainer.propagate`: the model with an input ``exbp_top``,
    (rows, N, *logits shape), the signal at the logits, and an output ``exbp_signal``, the whole
    signal at ``layer`` (a block of rows per method) — every rule's compiled form, for the tests."""
    methods = methods_named(methods)
    compilation = _Compilation(session, input_shape)
    plan = session.plan(session.resolve_layer(layer, compilation.example, needs_map=False),
                        methods[0].propagation)
    tensors = compilation.tensors([plan])
    logits_shape = tensors.shape(session.logits)
    top = compilation.add_input(TOP_INPUT, (rows,) + tuple(logits_shape), np.float32)
    with _writable(plan.layer):
        signal = walk(plan, tensors, top, methods)
    compilation.add_output(SIGNAL_OUTPUT, signal)
    return compilation.finished({"propagation": plan.layer})


@contextlib.contextmanager
def _writable(layer: str):
    """ModelError where a rule does what the graph namespace cannot write: a value's truth or a
    slice assignment it has no form for (TypeError), an operation it does not have
    (AttributeError)."""
    try:
        yield
    except (TypeError, AttributeError) as exc:
        raise ModelError(f"exbp compile cannot write the walk to layer {layer!r}: {exc}; "
                         "Explainer(model, engine='walk') explains it") from None


def session_spatial(session: ModelSession, shape) -> tuple:
    layout = session.catalogue.layout(session.graph.input_name)
    axes = layout.spatial_axes if layout is not None else tuple(range(2, len(shape)))
    return tuple(int(shape[axis]) for axis in axes)


def _example_shape(session: ModelSession, input_shape) -> tuple[tuple, bool]:
    """(a concrete input shape, whether the batch size is left to run time)."""
    declared = tuple(session.graph.input_shape or ())
    if input_shape is not None:
        shape = tuple(int(d) for d in input_shape)
        if declared and (len(shape) != len(declared) or any(
                d is not None and i > 0 and d != s for i, (d, s) in enumerate(zip(declared, shape)))):
            raise InputError(f"input_shape {shape} does not fit the model's input "
                             f"{tuple('N' if d is None else d for d in declared)}")
    elif not declared or any(d is None for d in declared[1:]):
        raise InputError(f"the model's input {session.graph.input_name!r} has shape "
                         f"{tuple('?' if d is None else d for d in declared)}; give input_shape "
                         "(--input-shape) with its sizes, e.g. 1,3,224,224")
    else:
        shape = (1,) + declared[1:]
    dynamic = not declared or declared[0] is None
    return (1,) + shape[1:] if dynamic else shape, dynamic


def _run_shapes(session: ModelSession, plans, example: tuple, dynamic_batch: bool) -> dict:
    """The shape of every tensor the rules of ``plans`` read, the batch axis as :class:`Batch`:
    onnxruntime's shapes for a batch of one and of two (exactly what the compiled graph will
    meet — shape inference and onnxruntime disagree on some pooling windows), an axis that
    doubles being the batch size times its size at one."""
    names = frozenset().union(*(plan.values | plan.shapes | {  # and the outputs whose winners are read
        step.node.outputs[0] for step in plan.steps if Recorded.WINNERS in step.variant.derived}
        for plan in plans)) | {session.logits}

    graph = session.graph
    names -= set(graph.constants)
    recorder = Recorder(session.model, graph.input_name, (), names, shared=session.constants.host,
                        recorded_as=session.canonical.recorded_as)

    def recorded(batch: int) -> dict:
        values, shapes = recorder.run(np.zeros((batch,) + tuple(example[1:]), np.float32), (), names)
        return {**{name: tuple(value.shape) for name, value in values.items()}, **shapes}
    one = recorded(example[0])
    shapes = {name: tuple(value.shape) for name, value in session.graph.constants.items()}
    if not dynamic_batch:
        return {**shapes, **one}
    two = recorded(2)
    for name, shape in one.items():
        dims = [d if d == o else (Batch(d) if o == 2 * d else None) for d, o in zip(shape, two[name])]
        if None not in dims:
            shapes[name] = tuple(dims)
    return shapes


def _structure(session: ModelSession) -> onnx.ModelProto:
    """The user's model as the session keeps it: its large weights placeholders."""
    model = onnx.ModelProto()
    model.CopyFrom(session.model)
    return model


def _full_model(session: ModelSession) -> onnx.ModelProto:
    """The user's model with its weights: the session keeps the structure, and the arrays apart."""
    model = _structure(session)
    host = session.constants.host
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL and tensor.name in host:
            tensor.CopyFrom(numpy_helper.from_array(np.asarray(host[tensor.name]), tensor.name))
    return model


def _named_values(model: onnx.ModelProto) -> frozenset:
    graph = model.graph
    return frozenset({t.name for t in graph.initializer} | {v.name for v in graph.input}
                     | {name for node in graph.node for name in node.output})


def _element_types(model: onnx.ModelProto) -> dict:
    """Every tensor's element type, by shape inference on the model's structure (its weights are
    placeholders there: nothing large is serialised)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    graph = inferred.graph
    return {info.name: info.type.tensor_type.elem_type
            for info in (*graph.input, *graph.value_info, *graph.output)}


def _recorded(builder, session: ModelSession, name: str, shapes: dict, types: dict) -> SymbolicArray:
    """The activation ``name`` as the rules read it: the model's tensor holding its values, in
    float32."""
    if name not in shapes:
        raise ModelError(f"exbp compile cannot follow the batch axis of tensor {name!r} (its shape "
                         "changes other than by doubling from a batch of one to two); export the "
                         "model with a fixed batch size")
    source = session.canonical.recorded_as.get(name, name)
    elem = types.get(source, onnx.TensorProto.FLOAT)
    dtype = helper.tensor_dtype_to_np_dtype(elem) if elem else np.dtype(np.float32)
    array = SymbolicArray(builder, source, shapes[name], dtype)
    return array.astype(np.float32) if array.dtype.kind == "f" else array


def _batch_dim(model: onnx.ModelProto, input_name: str) -> str:
    """The name the model gives its batch axis ("N" where it gives none)."""
    for value in model.graph.input:
        if value.name == input_name:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].dim_param:
                return dims[0].dim_param
    return "N"


def _targets(compilation: _Compilation, logits, targets, target_count, labels) -> SymbolicArray:
    """The classes to explain as an int64 (N, K) array: a graph input ("input"), each image's
    top K ("topK", also an output), or the same classes for every image."""
    builder, classes, batch = compilation.builder, logits.shape[1], logits.shape[0]
    if isinstance(targets, (list, tuple)) and len(targets) == 1:
        targets = targets[0]
    text = targets.strip().lower() if isinstance(targets, str) else None
    if text == "input":
        if isinstance(target_count, bool) or not isinstance(target_count, int) or target_count < 1:
            raise TargetError(f"target_count must be a positive int, got {target_count!r}")
        return compilation.add_input(TARGETS_INPUT, (batch, target_count), np.int64)
    if text is not None and TOP_K.match(text):
        k = int(TOP_K.match(text).group(1))
        if not 1 <= k <= classes:
            raise TargetError(f"unknown target {targets!r}; use 'top1' ... 'top{classes}', 'input' "
                              "or class indices")
        chosen = SymbolicArray(builder, builder.top_k(class_scores(logits).name, k), (batch, k), np.int64)
        compilation.add_output(TARGETS_OUTPUT, chosen)
        return chosen
    listed = targets if isinstance(targets, (list, tuple)) else [targets]
    if any(isinstance(t, str) and (TOP_K.match(t.strip().lower()) or t.strip().lower() == "input")
           for t in listed) or np.ndim(targets) > 1:
        raise TargetError(f"compiled targets are 'topK' or 'input' alone, or classes for every "
                          f"image; got {targets!r}")
    fixed = resolve_targets(targets, np.zeros((1, classes), np.float32), labels)
    return compilation.xp.broadcast_to(compilation.xp.asarray(fixed), (batch, fixed.shape[1]))


def _assemble(model: onnx.ModelProto, builder: GraphBuilder, inputs, outputs) -> None:
    """The builder's nodes that the new outputs need (a rule may write a value it then
    replaces), and their initializers, added to ``model``."""
    wanted = {info.name for info in outputs}
    by_output = {name: node for node in builder.nodes for name in node.output}
    kept, stack = set(), list(wanted)
    while stack:
        node = by_output.get(stack.pop())
        if node is None or id(node) in kept:
            continue
        kept.add(id(node))
        stack.extend(node.input)
    used = {name for node in builder.nodes if id(node) in kept for name in node.input}
    graph = model.graph
    graph.node.extend(node for node in builder.nodes if id(node) in kept)
    graph.initializer.extend(t for t in builder.initializers if t.name in used)
    graph.input.extend(inputs)
    graph.output.extend(outputs)



class CompiledRunner:
    """:meth:`Explainer.explain_methods` served by compiled models: one onnxruntime session per
    (layers, methods, targets' form, map size, input shape), built on first use and kept (the
    :attr:`MAX_SESSIONS` most recently used). The session reads the model's weights in place
    from the engine's arrays (as the recording sessions do), so they are not held twice.
    Thread-safe: a session runs concurrently; building one holds the lock (a first call per
    configuration waits for it)."""

    # sessions kept, least recently used dropped first: each holds its own folded weight parts
    MAX_SESSIONS = 8

    def __init__(self, session: ModelSession):
        self.session = session
        self._sessions: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def explain(self, x, targets, layer, methods, size, labels):
        """{method: Explanation}, or None where this call cannot be compiled (its methods, or
        targets mixing "topK" with classes); ExbpError for what the walk would refuse too."""
        if any(m.propagation is not Propagation.EXCITATION for m in methods):
            return None
        spec = _targets_form(targets)
        if spec is None:
            return None
        classes = self.session.classes
        if spec == "input":
            target_array = resolve_targets(targets, np.zeros((x.shape[0], classes), np.float32), labels)
            form = ("input", target_array.shape[1])
        else:
            target_array, form = None, (spec, 0)
        key = (layer, tuple(m.name for m in methods), form, size, tuple(x.shape[1:]))
        entry = self._session_for(key, layer, methods, form, size, x.shape)
        if entry is None:
            return None
        runner, layers = entry
        check_input_range(x, runner.input_type)
        feeds = {self.session.graph.input_name: np.ascontiguousarray(x, dtype=runner.input_type)}
        if target_array is not None:
            feeds[TARGETS_INPUT] = target_array
        names = [m.name for m in methods]
        outputs = runner.run(feeds, names)
        logits = outputs[LOGITS_OUTPUT]
        if not np.isfinite(logits).all():
            raise InputError("the model's logits are not finite for this input (its activations "
                             "overflow float32); check the input's scale")
        chosen = outputs.get(TARGETS_OUTPUT, target_array)
        results = {}
        for name in names:
            maps = outputs[map_output(name)]
            if not np.isfinite(maps).all():
                raise InputError(f"the signal at layer {layers[name]!r} is not finite for this input "
                                 "(the model's activations overflow float32); check the input's scale")
            results[name] = Explanation(maps=maps, targets=chosen, logits=logits, layer=layers[name],
                                        method=name)
        return results

    def _session_for(self, key, layer, methods, form, size, shape):
        with self._lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key]
            entry = self._sessions[key] = self._build(layer, methods, form, size, shape)
            while len(self._sessions) > self.MAX_SESSIONS:
                self._sessions.popitem(last=False)
            return entry

    def _build(self, layer, methods, form, size, shape):
        targets, count = form
        try:
            model = compile_session(self.session, layer, methods, targets, max(count, 1),
                                    size if size is not None else False, (1,) + tuple(shape[1:]),
                                    with_weights=False)
        except (ModelError, InputError):
            return None       # beyond what exbp compile writes: the walk explains it
        return SharedSession(model, self.session.constants.host), compiled_metadata(model)["layers"]


class SharedSession:
    """An InferenceSession of a compiled model whose weights it reads from ``shared`` in place."""

    def __init__(self, model: onnx.ModelProto, shared):
        stripped = without_initializer_data(model, shared)
        used = {t.name for t in stripped.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
        options = default_session_options()
        self._keep_alive = share_arrays(options, {name: shared[name] for name in used})
        self.session = ort.InferenceSession(stripped.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_type = np.float16 if model_input.type == "tensor(float16)" else np.float32
        self.reads_targets = any(i.name == TARGETS_INPUT for i in self.session.get_inputs())
        self._gives_targets = any(o.name == TARGETS_OUTPUT for o in self.session.get_outputs())

    def run(self, feeds, methods):
        names = [LOGITS_OUTPUT, *(map_output(m) for m in methods)]
        if self._gives_targets:
            names.append(TARGETS_OUTPUT)
        return dict(zip(names, self.session.run(names, feeds)))


def compiled_metadata(model: onnx.ModelProto) -> Optional[dict]:
    """What ``exbp compile`` recorded in a compiled model (methods, layers, targets, map outputs,
    resize), or None for a model it did not write."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return None


def _targets_form(targets) -> Optional[str]:
    """"topK" where the targets are each image's best K, "input" where they are classes known
    before the run, None where they mix the two."""
    if isinstance(targets, str) and TOP_K.match(targets.strip().lower()):
        return targets.strip().lower()
    listed = targets if isinstance(targets, (list, tuple)) else [targets]
    if any(isinstance(t, str) and TOP_K.match(t.strip().lower()) for t in listed):
        return None
    return "input"

