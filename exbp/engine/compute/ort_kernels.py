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
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from ...errors import ExbpError
from ...graph_rules.onnx_form import weight_part_nodes
from ..record.shared_arrays import placeholder_initializer, share_arrays


def _flip_nodes(weight: str, shape: tuple, group: int, output: str) -> tuple[list, list]:
    """Nodes turning (O, C/g, *k) into (C, O/g, *k) with every spatial axis reversed, and the
    constants they read."""
    out_channels, per_group = shape[:2]
    kernel = tuple(shape[2:])
    n = len(kernel)
    grouped = (group, out_channels // group, per_group) + kernel
    flipped = (group * per_group, out_channels // group) + kernel
    axes = list(range(3, 3 + n))
    constants = [
        onnx.numpy_helper.from_array(np.array(grouped, np.int64), output + "_grouped"),
        onnx.numpy_helper.from_array(np.array(flipped, np.int64), output + "_flipped"),
        onnx.numpy_helper.from_array(np.full(n, -1, np.int64), output + "_starts"),
        onnx.numpy_helper.from_array(np.full(n, np.iinfo(np.int64).min, np.int64), output + "_ends"),
        onnx.numpy_helper.from_array(np.array(axes, np.int64), output + "_axes"),
        onnx.numpy_helper.from_array(np.full(n, -1, np.int64), output + "_steps")]
    nodes = [
        helper.make_node("Reshape", [weight, output + "_grouped"], [output + "_g"]),
        helper.make_node("Transpose", [output + "_g"], [output + "_t"], perm=[0, 2, 1] + axes),
        helper.make_node("Slice", [output + "_t", output + "_starts", output + "_ends",
                                   output + "_axes", output + "_steps"], [output + "_r"]),
        helper.make_node("Reshape", [output + "_r", output + "_flipped"], [output])]
    return nodes, constants


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
        if all(s == 1 for s in strides):
            flipped_pads = [d * (k - 1) - p for d, k, p in zip(dilations * 2, kernel * 2, pads)]
            if all(p >= 0 for p in flipped_pads):
                session = self._session("Conv", weight, part, True, strides, flipped_pads,
                                        dilations, group, None)
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
            nodes = weight_part_nodes("w", part, "w_part")
            constants = [placeholder_initializer("w", weight)]
            kernel_weight = "w_part"
            if flip:
                flip_nodes, flip_constants = _flip_nodes("w_part", weight.shape, group, "w_flipped")
                nodes += flip_nodes
                constants += flip_constants
                kernel_weight = "w_flipped"
            nodes.append(helper.make_node(op, ["x", kernel_weight], ["y"], **attrs))
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
