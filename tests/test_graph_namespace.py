"""The graph-building array namespace (``exbp compile``'s) against NumPy: each operation the rules
use, written as ONNX nodes and run in onnxruntime, gives NumPy's result, with a dynamic batch axis
and at the oldest opset it writes for."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from exbp.engine.compute.graph_arrays import Batch, GraphBuilder, GraphNamespace, SymbolicArray
from exbp.engine.compute.graph_backend import GraphBackend

SHAPE = (3, 4, 5, 6)     # (batch, channels, height, width); the batch is dynamic in the graph


def _run(build, x: np.ndarray, opset: int = 17) -> np.ndarray:
    """``build(xp, a)`` on a symbolic ``a`` of ``x``'s shape (batch axis dynamic), run."""
    builder = GraphBuilder(opset, batch=("x", 0))
    xp = GraphNamespace(builder)
    a = SymbolicArray(builder, "x", (Batch(),) + x.shape[1:], np.float32)
    result = build(xp, a)
    builder.node("Identity", [result.name], names=["y"])
    graph = helper.make_graph(builder.nodes, "namespace",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x.shape[1:]])],
                              [onnx.ValueInfoProto(name="y")], builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    built = tuple(d.factor * x.shape[0] if isinstance(d, Batch) else d for d in result.shape)
    assert got.shape == built, (got.shape, result.shape)
    return got


def _filled(xp, a, index):
    """``a`` with ``a[index]`` replaced by 10 + that region of ``a``, then added to."""
    out = a * 1
    out[index] = out[index] + 10
    out[index] += 1
    return out


OPERATIONS = {
    "arithmetic": lambda xp, a: (a * 2 - 1) / 3 + 0.5 - (-a) ** 2,
    "maximum_minimum": lambda xp, a: xp.maximum(a, 0) + xp.minimum(a, 0.25),
    "where_with_zero": lambda xp, a: xp.where(a < 0, 0, a) + xp.where(a > 0.5, a, 0),
    "where": lambda xp, a: xp.where(a < 0, a * 3, -a),
    "reductions": lambda xp, a: a.sum(axis=(2, 3), keepdims=True) + a.max(axis=1, keepdims=True),
    "reshape_with_batch": lambda xp, a: a.reshape((a.shape[0], -1)).reshape((-1,) + a.shape[1:]),
    "reshape_merging_batch": lambda xp, a: (a[None] * 2).reshape((-1,) + a.shape[2:]).sum(axis=0),
    "transpose_moveaxis_swapaxes": lambda xp, a: xp.moveaxis(xp.swapaxes(xp.transpose(a, (0, 2, 3, 1)), 1, 2), 3, 1),
    "slices": lambda xp, a: a[:, 1:3, ::2, ::-1] * 1,
    "integer_ellipsis_none": lambda xp, a: a[..., 2][:, None, 1] + a[:, 0][:, None, :, 1],
    "set_slice": lambda xp, a: _filled(xp, a, (slice(None), slice(1, 3))),
    "set_strided_slice": lambda xp, a: _filled(xp, a, (slice(None), slice(None), slice(4, None, -2))),
    "set_reversed_slice": lambda xp, a: _filled(xp, a, (Ellipsis, slice(None, None, -1))),
    "set_into_zeros": lambda xp, a: _zeros_set(xp, a),
    "concatenate_split_stack": lambda xp, a: xp.concatenate(
        xp.split(a, [1, 3], axis=1)[::-1], axis=1) + xp.stack([a, a], axis=0).sum(axis=0),
    "matmul_and_transpose": lambda xp, a: xp.matmul(a, xp.asarray(np.arange(36, dtype=np.float32).reshape(6, 6)).T),
    "tensordot_of_a_matrix": lambda xp, a: xp.moveaxis(xp.tensordot(
        xp.asarray(np.linspace(0, 1, 35, dtype=np.float32).reshape(7, 5)), a, axes=([1], [2])), 0, 2),
    "broadcast_and_full": lambda xp, a: xp.broadcast_to(a[:, :1], a.shape) + xp.ones(a.shape) + xp.zeros(a.shape),
    "argmax": lambda xp, a: xp.argmax(a, axis=1).astype(np.float32),
    "comparisons_and": lambda xp, a: ((a > 0) & (a <= 0.5)).astype(np.float32) + (a >= 1).astype(np.float32),
    "exp_sqrt_tanh_abs": lambda xp, a: xp.exp(a) + xp.sqrt(abs(a)) + xp.tanh(a),
}


def _zeros_set(xp, a):
    out = xp.zeros(a.shape, np.float32)
    out[:, 1:3, 1:4] = a[:, :2, :3]
    out[:, 1:2] += 1
    return out


# slices with steps need opset 10 (the namespace refuses them before: see below)
STEPPED = ("slices", "set_strided_slice", "set_reversed_slice")
CASES = [(name, opset) for name in sorted(OPERATIONS) for opset in (9, 17)
         if opset >= 10 or name not in STEPPED]


@pytest.mark.parametrize("name,opset", CASES)
def test_operation_matches_numpy(name, opset):
    x = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    want = OPERATIONS[name](np, x)
    got = _run(OPERATIONS[name], x, opset)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    other = np.random.default_rng(1).normal(size=(1,) + SHAPE[1:]).astype(np.float32)
    np.testing.assert_allclose(_run(OPERATIONS[name], other, opset), OPERATIONS[name](np, other),
                               rtol=1e-6, atol=1e-6)


def test_slice_steps_before_opset_10_are_refused():
    with pytest.raises(TypeError, match="needs opset 10"):
        _run(OPERATIONS["slices"], np.zeros(SHAPE, np.float32), opset=9)


def test_a_value_has_no_truth_at_build_time():
    with pytest.raises(TypeError, match="no truth value"):
        _run(lambda xp, a: a if bool(a.max() > 0) else -a, np.zeros(SHAPE, np.float32))


def test_bincount_adds_repeated_indices():
    x = np.array([[0.5, 1.5, 2.0, 3.0]], np.float32)
    indices = np.array([2, 0, 2, 5], np.int64)

    def build(xp, a):
        return xp.bincount(xp.asarray(indices), a.reshape(-1), 6)
    np.testing.assert_allclose(_run(build, x), np.bincount(indices, x[0], minlength=6))


def test_safe_reciprocal_is_zero_at_zero_and_exact_elsewhere():
    z = np.array([[0.0, 1e-30, 2.5, 3e30]], np.float32)

    def build(xp, a):
        return GraphBackend(xp.builder).safe_reciprocal(a)
    got = _run(build, z)
    np.testing.assert_allclose(got, [[0.0, 1e30, 0.4, 1 / 3e30]], rtol=1e-6)


def test_batch_arithmetic():
    assert Batch(3) * 4 == Batch(12) and 2 * Batch() == Batch(2)
    assert Batch(12) // Batch(3) == 4 and Batch(12) // 4 == Batch(3)
    with pytest.raises(TypeError):
        int(Batch())
    with pytest.raises(TypeError):
        Batch() * Batch()
