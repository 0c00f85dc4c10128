"""Serving: Excitation Backprop compiled into the model's own ONNX graph, and the check that the
compiled model gives the eager walk's maps.

    exbp.compile("resnet50.onnx", "resnet50-exbp.onnx", methods=("mwp", "cmwp"), targets="top1")

The compiled file runs in any onnxruntime session (a Python service, Triton's onnxruntime
backend, C++, the browser), nothing of exbp installed; :func:`exbp.write_triton_repository` lays
it out for Triton.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import onnx

from .engine.compiling import TARGETS_INPUT, TARGETS_OUTPUT, SharedSession, map_output
from .engine.explainer import Explainer
from .engine.walk.methods import methods_named
from .errors import ModelError, first_line
from .exporters.onnx_writer import write_onnx


def compile_model(model: Union[str, os.PathLike, onnx.ModelProto], output: Union[str, os.PathLike, None] = None,
                  *, layer: Optional[str] = None, methods: Sequence[str] = ("mwp", "cmwp"),
                  targets: Union[str, int, Sequence] = "top1", target_count: int = 1,
                  resize: Union[bool, Sequence[int]] = False, input_shape: Optional[Sequence[int]] = None,
                  labels=None) -> onnx.ModelProto:
    """``model`` with Excitation Backprop's maps as extra outputs (:meth:`Explainer.compile`),
    written to ``output`` when given."""
    compiled = Explainer(model, labels=labels).compile(layer, methods, targets, target_count, resize,
                                                       input_shape)
    if output is not None:
        write_onnx(compiled, Path(output))
    return compiled


def compiled_differences(explainer: Explainer, compiled: onnx.ModelProto, x: np.ndarray,
                         methods: Sequence[str], targets, layer: Optional[str] = None,
                         resize: Union[bool, Sequence[int]] = False) -> dict[str, float]:
    """Per method, the largest difference between the compiled model's maps for ``x`` and the
    eager walk's (``targets`` as :meth:`Explainer.explain_methods` takes them: with "input", the
    classes fed to the compiled model), relative to the walk's map's peak — for c-MWP, to the
    peak of the MWP map it is the difference of."""
    try:    # reading the engine's weights in place: any size of model, no second copy
        session = SharedSession(compiled, explainer.session.constants.host)
    except Exception as exc:
        raise ModelError(f"onnxruntime cannot load the compiled model: {first_line(exc)}") from None
    feeds = {explainer.input_spec.name: np.ascontiguousarray(x, dtype=session.input_type)}
    if session.reads_targets:
        feeds[TARGETS_INPUT] = np.asarray(targets, np.int64)
    outputs = session.run(feeds, methods)
    # c-MWP subtracts the dual's map from MWP's and can cancel to a small fraction of either
    # (a random-weight AlexNet's: 1/8000): its rounding is measured against MWP's peak
    scales = ("mwp",) if any(methods_named(m)[0].contrastive for m in methods) else ()
    eager = explainer.with_engine("walk").explain_methods(
        x, targets, layer, tuple(dict.fromkeys((*methods, *scales))), resize)
    differences = {}
    for method in methods:
        explanation = eager[method]
        scale = explanation.maps if not methods_named(method)[0].contrastive else eager["mwp"].maps
        peak = max(float(np.abs(scale).max()), float(np.abs(explanation.maps).max()), 1e-30)
        if TARGETS_OUTPUT in outputs and not np.array_equal(outputs[TARGETS_OUTPUT], explanation.targets):
            differences[method] = float("inf")
            continue
        differences[method] = float(np.abs(outputs[map_output(method)] - explanation.maps).max()) / peak
    return differences
