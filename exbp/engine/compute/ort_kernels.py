"""The linear rule's convolutions on onnxruntime's CPU kernels.

NumPy has no convolution; onnxruntime's (MLAS, with its blocked NCHWc layouts) run several times
faster than a tap-by-tap matmul. Each (op, weight, part, geometry) gets a one-node-ish
InferenceSession, built once and reused. The session reads the original weight array in place (an
external initializer) and derives W⁺ or W⁻ — and, for a transpose, the flipped weights — in its own
graph, which onnxruntime folds into constants when the session is built: exbp keeps no host copy.
The transpose of a stride-1 convolution is itself a convolution, with the weights flipped and their
channel axes swapped, which onnxruntime runs faster than ConvTranspose; strided ones use
ConvTranspose.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from ...errors import ExbpError
from ...graph_rules.onnx_form import NEGATIVE, POSITIVE, WHOLE
from .graph_arrays import GraphBuilder, GraphNamespace, SymbolicArray
from .kernels import flipped_weight, transpose_as_conv_pads
from ..record.shared_arrays import placeholder_initializer, share_arrays


def _kernel_graph(op: str, weight: np.ndarray, part: str, flip: bool, group: int, attrs: dict):
    """(nodes, constants) of ``y = op(x, the weight's part)``, the part flipped for a transpose
    written as a convolution, built with the graph namespace: the weight "w" is read in place."""
    builder = GraphBuilder(17, prefix="kernel")
    xp = GraphNamespace(builder)
    w = SymbolicArray(builder, "w", weight.shape, weight.dtype)
    w_part = {POSITIVE: xp.maximum(w, 0), NEGATIVE: xp.minimum(w, 0), WHOLE: w}[part]
    if flip:
        w_part = flipped_weight(xp, w_part, group)
    builder.node(op, ["x", w_part.name], names=["y"], **attrs)
    return builder.nodes, builder.initializers


class OrtConvolutions:
    def __init__(self, threads: Optional[int] = None):
        self._threads = threads
        self._sessions: dict[tuple, tuple] = {}

    """Kernel sessions keyed by (op, weight name, part, geometry); ``weight`` is a
    :class:`~exbp.engine.compute.constants.Weight`, whose host array the session reads in place."""

    def conv(self, x, weight, part, strides, pads, dilations, group):
        session = self._session("Conv", weight, part, False, strides, pads, dilations, group, None)
        return _run(session, x, weight.host.ndim - 2)

    def conv_transpose(self, signal, weight, part, strides, pads, dilations, group, in_spatial):
        """None where ConvTranspose cannot express the geometry."""
        n = weight.host.ndim - 2
        kernel = weight.host.shape[2:]
        flipped_pads = transpose_as_conv_pads(kernel, strides, pads, dilations)
        if flipped_pads is not None:
            session = self._session("Conv", weight, part, True, strides, flipped_pads, dilations,
                                    group, None)
            return _run(session, signal, n)
        out_spatial = signal.shape[-n:]
        output_padding = [size - ((o - 1) * s + (k - 1) * d + 1 - pads[i] - pads[n + i])
                          for i, (size, o, s, k, d) in enumerate(zip(in_spatial, out_spatial, strides,
                                                                     kernel, dilations))]
        if any(not 0 <= p < max(s, d) for p, s, d in zip(output_padding, strides, dilations)):
            return None
        session = self._session("ConvTranspose", weight, part, False, strides, pads, dilations,
                                group, tuple(output_padding))
        return _run(session, signal, n)

    def _session(self, op, weight, part, flip, strides, pads, dilations, group, output_padding):
        key = (op, weight.name, part, flip, tuple(strides), tuple(pads), tuple(dilations), group,
               output_padding)
        if key not in self._sessions:
            attrs = {"strides": list(strides), "pads": list(pads), "dilations": list(dilations),
                     "group": group}
            if output_padding is not None:
                attrs["output_padding"] = list(output_padding)
            weight = np.require(weight.host, dtype=np.float32, requirements="C")
            nodes, constants = _kernel_graph(op, weight, part, flip, group, attrs)
            constants = [placeholder_initializer("w", weight), *constants]
            rank = weight.ndim
            graph = helper.make_graph(
                nodes, "exbp_kernel",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [f"d{i}" for i in range(rank)])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], constants)
            # IR 8 is opset 17's: a newer onnx would write its own, which an older onnxruntime refuses
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            # one pool per kernel session: idle pools must sleep, not spin, or they take the
            # cores the next kernel needs
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # and must not each keep an arena the size of their largest output
            options.enable_cpu_mem_arena = False
            if self._threads:
                options.intra_op_num_threads = self._threads
            value = share_arrays(options, {"w": weight})
            try:
                session = ort.InferenceSession(model.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
            except Exception as exc:
                raise ExbpError(f"onnxruntime could not build a {op} kernel: {exc}") from None
            self._sessions[key] = (session, weight, value)
        return self._sessions[key][0]


def _run(session, x, spatial_rank: int):
    """Run on (..., C, *spatial): leading axes fold into the batch and back."""
    leading = x.shape[:-spatial_rank - 1]
    batch = int(np.prod(leading)) if leading else 1
    flat = np.ascontiguousarray(x.reshape((batch,) + x.shape[-spatial_rank - 1:]), dtype=np.float32)
    out = session.run(None, {"x": flat})[0]
    return out.reshape(leading + out.shape[1:])
