"""The public API: :class:`Explainer`, a thin front over a :class:`~exbp.engine.session.ModelSession`.

    ex = exbp.Explainer("model.onnx")              # or an onnx.ModelProto; device="cpu"
    r = ex.explain(x, targets=[281], layer=None, method="cmwp", resize=False)
    r.maps     # float32 (N, K, h, w)      r.targets  # int64 (N, K)
    r.logits   # float32 (N, classes)      r.layer    # the tensor the maps are at
"""

from __future__ import annotations

import copy
import os
from typing import Optional, Sequence, Union

import numpy as np
import onnx

from ..errors import InputError, MethodError, ModelError
from ..labels import Labels
from .compiling import CompiledRunner, compile_session
from .graph.layers import LayerInfo
from .inputs import InputSpec
from .report import CheckReport, check_report
from .session import ModelSession
from .walk.maps import Explanation, concatenated
from .walk.methods import MethodLike, methods_named
from .walk.targets import check_targets, resolve_targets, top_signal
from .walk.walker import plan_maps, walk


ENGINES = ("auto", "compiled", "walk")


class Explainer:
    """Excitation Backprop maps for one ONNX model.

    ``model``: a path to an .onnx file or an onnx.ModelProto. ``device``: "cpu" (NumPy) or, with
    the ``gpu`` extra, "cuda" / "cuda:N" / "auto". ``labels``: class names (a :class:`Labels`, a
    list, or a file), default the model's ``exbp.labels`` metadata; with labels, targets may be
    class names. ``engine``: how MWP and c-MWP are computed on the CPU — "compiled" runs the
    model compiled with them (:meth:`compile`, one onnxruntime run), "walk" the eager walk over
    the recorded activations; "auto" (the default) the compiled model wherever it applies (the
    excitation methods, targets that are "topK" or classes), which is the faster
    (docs/method.md §10), else the walk. Both give the same maps to float rounding; the
    comparison methods and other devices always walk."""

    def __init__(self, model: str | os.PathLike | onnx.ModelProto, device: str = "cpu",
                 labels: Union[Labels, Sequence[str], str, os.PathLike, None] = None,
                 engine: str = "auto"):
        if engine not in ENGINES:
            raise MethodError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
        self.session = ModelSession(model, device)
        if engine == "compiled" and self.session.backend.name != "cpu":
            raise MethodError(f"engine 'compiled' runs on the CPU; device {device!r} runs the walk "
                              "(engine 'auto' or 'walk')")
        # the compiled model is faster wherever it applies (benchmarks/compiled_benchmark.py)
        self.engine = engine if self.session.backend.name == "cpu" else "walk"
        self._compiled = CompiledRunner(self.session)
        self.device = self.session.backend.name
        self.metadata = self.session.metadata
        self.labels = Labels.of(labels) if labels is not None else Labels.from_metadata(self.metadata)
        graph = self.session.graph
        input_layout = self.session.catalogue.layout(graph.input_name)
        self.input_spec = InputSpec(graph.input_name, tuple(graph.input_shape or ()),
                                    input_layout is not None and input_layout.channel_axis == input_layout.rank - 1)
        if self.labels is not None and self.classes and len(self.labels) != self.classes:
            raise ModelError(f"the labels name {len(self.labels)} classes but the model has "
                             f"{self.classes}; give {self.classes} names, one per class")

    def with_engine(self, engine: str) -> "Explainer":
        """This Explainer computing with ``engine`` ("auto", "compiled", "walk"), sharing the
        loaded model, its sessions and plans."""
        if engine not in ENGINES:
            raise MethodError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
        if engine == "compiled" and self.session.backend.name != "cpu":
            raise MethodError(f"engine 'compiled' runs on the CPU, not on {self.device}")
        other = copy.copy(self)
        other.engine = engine if self.session.backend.name == "cpu" else "walk"
        return other

    @classmethod
    def from_torch(cls, module, example_input, device: str = "cpu", labels=None, **export) -> "Explainer":
        """An Explainer of a torch.nn.Module, exported to ONNX in memory with ``example_input``
        (``export``: ``opset``, ``dynamo``; see :func:`exbp.frameworks.onnx_from_torch`)."""
        from ..frameworks import onnx_from_torch
        return cls(onnx_from_torch(module, example_input, **export), device, labels)

    @classmethod
    def from_keras(cls, model, device: str = "cpu", labels=None, **export) -> "Explainer":
        """An Explainer of a keras.Model, exported to ONNX in memory (Keras's own exporter, else
        tf2onnx); its input is channels last, which exbp reads from the graph."""
        from ..frameworks import onnx_from_keras
        return cls(onnx_from_keras(model, **export), device, labels)

    # ---- what the model offers ----------------------------------------------------------------

    def layers(self) -> list[LayerInfo]:
        """Every tensor that can carry a map as (name, op type, shape), in topological order,
        then the logits."""
        session = self.session
        logits_op = session.graph.producer.get(session.logits)
        return [*session.catalogue.layers,
                LayerInfo(session.logits, logits_op.op_type if logits_op else "Input",
                          session.graph.shapes.get(session.logits))]

    def default_layer(self, input_shape: Optional[Sequence[int]] = None) -> str:
        """The layer used when none is named (docs/method.md §5), for inputs of ``input_shape``."""
        return self.session.default_layer(input_shape)

    @property
    def classes(self) -> Optional[int]:
        """The number of classes, when the logits' shape is known before running."""
        return self.session.classes

    def resolve_layer(self, layer: str) -> str:
        """The tensor a layer name (tensor, node or removed tensor) means; LayerError if none."""
        return self.session.resolve_layer(layer)

    def check_targets(self, targets) -> None:
        """TargetError unless ``targets`` (as :meth:`explain` takes them) exist in this model."""
        check_targets(targets, self.classes, self.labels)

    def refusal(self, layer: Optional[str] = None, method: MethodLike = "mwp",
                input_shape: Optional[Sequence[int]] = None) -> Optional[str]:
        """Why explaining with ``method`` at ``layer`` would be refused, or None if it would run."""
        return self.session.refusal(layer, methods_named(method)[0], input_shape)

    def unsupported_nodes(self) -> list[tuple[str, str, str, bool]]:
        """(op type, node name, reason, on the input-to-logits path) for every node the walk
        could not pass."""
        return self.session.unsupported_nodes()

    def report(self) -> CheckReport:
        """What ``exbp check`` prints: opset, inputs and outputs, ops, refusals, verdicts."""
        return check_report(self.session)

    def logits(self, x) -> np.ndarray:
        """The model's logits for ``x`` (as :meth:`explain` takes it), without a walk."""
        session = self.session
        x = self.input_spec.checked(x, session.backend)
        with session.backend.computing():
            if self.input_spec.fixed_batch == 1 and x.shape[0] > 1:
                return np.concatenate([session.logits_of(x[i:i + 1]) for i in range(x.shape[0])])
            return session.logits_of(x)

    # ---- compiling -----------------------------------------------------------------------------

    def compile(self, layer: Optional[str] = None, methods: Sequence[MethodLike] = ("mwp", "cmwp"),
                targets: Union[str, int, Sequence[int]] = "top1", target_count: int = 1,
                resize: Union[bool, Sequence[int]] = False,
                input_shape: Optional[Sequence[int]] = None) -> onnx.ModelProto:
        """This model with Excitation Backprop in its own graph (docs/method.md §10): its outputs
        and, per method, ``exbp_mwp`` / ``exbp_cmwp``, float32 (N, K, h, w), which any onnxruntime
        session computes in the same run — the maps :meth:`explain` gives, to float rounding.

        ``targets``: "top1" … "topK" (each image's best classes, also output as ``exbp_targets``),
        "input" (an int64 input ``exbp_targets``, (N, ``target_count``), names the classes), or
        classes (indices or names) for every image. ``layer``, ``methods`` and ``resize`` as
        :meth:`explain_methods` takes them (MWP and c-MWP only). ``input_shape``: the input's
        shape where the model leaves more than its batch size open. The batch axis stays dynamic
        where the model's is."""
        return compile_session(self.session, layer, methods, targets, target_count, resize,
                               input_shape, self.labels)

    # ---- explaining ---------------------------------------------------------------------------

    def explain(self, x, targets="top1", layer: Optional[str] = None, method: MethodLike = "cmwp",
                resize: Union[bool, Sequence[int]] = False) -> Explanation:
        """Maps of ``method`` for ``targets`` at ``layer``: "mwp", "cmwp", the comparison methods
        "gradient", "deconvnet", "guided", "lrp", "gradcam", "cam" (docs/method.md §9), or a
        :class:`Method`.

        ``x``: float32 (N, C, H, W) as the model takes it. ``targets``: an int, a class name, a
        list of them (the same for every image), an (N, K) array of ints, or "top1"/"top5".
        ``layer``: a tensor name (a node name means its first output); None picks the method's
        default: :meth:`default_layer` for MWP and c-MWP, the pixels for the gradient, deconvnet,
        guided backprop and LRP, the global average pooling's input for CAM and Grad-CAM (Grad-CAM
        falls back to :meth:`default_layer`). ``resize``: True for maps at the input's spatial
        size, (H, W) for that size; False keeps the layer's."""
        (chosen,) = methods_named(method)
        return self.explain_methods(x, targets, layer, (chosen,), resize)[chosen.name]

    def explain_methods(self, x, targets="top1", layer: Optional[str] = None,
                        methods: Sequence[MethodLike] = ("mwp", "cmwp"),
                        resize: Union[bool, Sequence[int]] = False) -> dict[str, Explanation]:
        """Like :meth:`explain`, for several methods from one forward pass: one walk per
        layer and propagation kind (MWP and c-MWP share theirs, as do the gradient-based methods
        at one layer), each method at its own default layer where ``layer`` is None."""
        methods = methods_named(methods)
        session = self.session
        x = self.input_spec.checked(x, session.backend)
        plans = session.plans_for(methods, layer, x.shape)
        size = self.input_spec.spatial(x.shape) if resize is True else (tuple(resize) if resize else None)
        one_by_one = self.input_spec.fixed_batch == 1 and x.shape[0] > 1
        with session.backend.computing():
            if not one_by_one:
                return self._explain_batch(x, targets, layer, plans, methods, size)
            parts = [self._explain_batch(x[i:i + 1], targets if np.ndim(targets) < 2 else
                                         np.asarray(targets)[i:i + 1], layer, plans, methods, size)
                     for i in range(x.shape[0])]
        return {m.name: concatenated([p[m.name] for p in parts]) for m in methods}

    def propagate(self, x, top, layer: Optional[str] = None,
                  methods: Sequence[MethodLike] = ("mwp",), lost: Optional[dict] = None) -> np.ndarray:
        """The whole signal at ``layer`` for an arbitrary signal ``top`` at the logits.

        ``top``: (K, N, *logits shape), e.g. one-hots or a class's spatial mask, taken as it is (LRP's
        logit scaling is not applied). Returns (len(methods)·K, N, *layer shape): a block of K rows
        per method, before the method's reduction and clamp; the methods must share one
        propagation kind. ``lost``: a dict that receives, per node name, the mass per row that its
        rule did not pass on (where Z = 0, docs/method.md §1). For research and for tests;
        :meth:`explain` is the everyday call."""
        methods = methods_named(methods)
        kinds = {method.propagation for method in methods}
        if len(kinds) > 1:
            raise MethodError(f"propagate walks one propagation kind; methods "
                              f"{', '.join(m.name for m in methods)} use {len(kinds)}")
        session = self.session
        x = self.input_spec.checked(x, session.backend)
        plan = session.plan(session.resolve_layer(layer, x.shape, needs_map=False),
                            methods[0].propagation)
        with session.backend.computing():
            logits, tensors = session.record(x, plan)
            top = session.backend.asarray(top)
            if tuple(top.shape[1:]) != logits.shape:
                raise InputError(f"top has shape {tuple(top.shape)}; it must be (K,) + the "
                                 f"logits' shape {logits.shape}")
            signal = walk(plan, tensors, top, methods, lost)
            if lost is not None:
                lost.update({name: session.backend.to_host(mass) for name, mass in lost.items()})
            return session.backend.to_host(signal)

    def _explain_batch(self, x, targets, layer, plans, methods, size) -> dict[str, Explanation]:
        if self.engine != "walk":
            compiled = self._compiled.explain(x, targets, layer, methods, size, self.labels)
            if compiled is not None:
                return {method.name: compiled[method.name] for method in methods}
            if self.engine == "compiled":
                raise MethodError(f"{', '.join(m.title for m in methods)} with targets {targets!r} "
                                  "cannot be compiled for this model; use engine 'walk' or 'auto'")
        session = self.session
        logits, tensors = session.record(x, [plan for plan, _ in plans])
        if not np.isfinite(logits).all():
            raise InputError("the model's logits are not finite for this input (its activations "
                             "overflow float32); check the input's scale")
        if logits.ndim < 2 or logits.shape[0] != x.shape[0]:
            raise ModelError(f"the logits {session.logits!r} have shape {logits.shape}; exbp "
                             "needs (N, classes) or (N, classes, *spatial)")
        target_array = resolve_targets(targets, logits, self.labels)
        recorded_logits = tensors.value(session.logits)
        one_hot = top_signal(session.backend.xp, recorded_logits, target_array)
        results = {}
        for plan, members in plans:
            maps = plan_maps(plan, members, tensors, one_hot, recorded_logits,
                             session.catalogue.layout(plan.layer), target_array.shape[1], size)
            for name, values in maps.items():
                if not bool(session.backend.xp.all(session.backend.xp.isfinite(values))):
                    raise InputError(f"the signal at layer {plan.layer!r} is not finite for this "
                                     "input (the model's activations overflow float32); check the "
                                     "input's scale")
                results[name] = Explanation(maps=session.backend.to_host(values).astype(np.float32),
                                            targets=target_array, logits=logits, layer=plan.layer,
                                            method=name)
        return {method.name: results[method.name] for method in methods}
