r"""The linear family: Conv, Gemm, MatMul, AveragePool, GlobalAveragePool, ReduceMean, ReduceSum.

For a linear op ``y_i = Σ_j w_ij x_j (+ b_i)`` a lower neuron j wins from an upper neuron i with

    P(j|i) = (x_j w_ij)⁺ / Σ_k (x_k w_ik)⁺          (bias ignored)

and the marginal winning probability is ``P(x_j) = Σ_i P(j|i) P(y_i)`` (REFERENCE.md §1). Written
with the op's own forward ``f`` and its transpose ``fᵀ`` (vector-Jacobian product), splitting the
input into ``x⁺ = max(x, 0)``, ``x⁻ = min(x, 0)`` and the weights into ``W⁺``, ``W⁻``:

    Z    = f(x⁺, W⁺) + f(x⁻, W⁻)                 # Σ_k (x_k w_ik)⁺, independent of the target
    S    = P_out / Z     where Z > 0, else 0      # the mass at Z == 0 has no winner and is lost
    P_in = x⁺ ⊙ fᵀ(S, W⁺) + x⁻ ⊙ fᵀ(S, W⁻)

When ``x ≥ 0`` (after a ReLU) the x⁻ terms vanish and this is the paper's rule; with negative
inputs (the image, a branch after BatchNorm) it is the z⁺ rule and keeps P non-negative and
conserved. Pooling ops have only positive weights, so they have no W⁻ terms. ``P_out`` carries
a leading axis of targets; ``Z`` is computed once for all of them.

:func:`excite` is that rule, written once; every op below only supplies ``f`` and ``fᵀ``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..engine.graph import Graph, Node
from .geometry import window_geometry
from .registry import activation_inputs, rule

POSITIVE, NEGATIVE = "positive", "negative"


@dataclass(frozen=True)
class LinearOp:
    """``forward(x, part)`` = f(x, W_part); ``transpose(s, part)`` = fᵀ(s, W_part); part is
    POSITIVE or NEGATIVE. ``transpose`` receives the extra leading target axis and returns an array
    that broadcasts against ``(targets,) + x.shape``."""
    forward: Callable
    transpose: Callable
    has_negative_weights: bool = True


def excite(tensors, x_name: str, signal, op: LinearOp, normaliser=None):
    """The rule above for the activation ``x_name``; ``normaliser`` is Z when the recording
    computed it already (it is used up: each recorded Z serves one rule call)."""
    xp = tensors.xp
    x = tensors.value(x_name)
    has_negative_inputs = tensors.may_be_negative(x_name) and bool(x.min() < 0)
    x_pos = xp.maximum(x, 0) if has_negative_inputs else x
    with_negative = has_negative_inputs and op.has_negative_weights
    if with_negative:
        x_neg = xp.minimum(x, 0)
    if normaliser is None:
        z = op.forward(x_pos, POSITIVE)
        if with_negative:
            z = z + op.forward(x_neg, NEGATIVE)
    else:
        z = normaliser
    scaled = signal * tensors.kernels.safe_reciprocal(z)
    result = _times(op.transpose(scaled, POSITIVE), x_pos)
    if with_negative:
        result += _times(op.transpose(scaled, NEGATIVE), x_neg)
    return result


def _times(transposed, x):
    """transposed · x, in place when ``transposed`` already has the result's shape."""
    if (transposed.ndim == x.ndim + 1 and transposed.shape[1:] == x.shape
            and getattr(transposed.flags, "writeable", True)):
        transposed *= x
        return transposed
    return transposed * x


def _activation_value(node: Node, graph: Graph) -> tuple[str, ...]:
    return tuple(node.inputs[i] for i in activation_inputs(node, graph))


def _one_activation(op_name: str):
    def refusal(node: Node, graph: Graph):
        count = len(activation_inputs(node, graph))
        if count > 1:
            return f"{op_name} multiplies {count} run-time tensors; exbp needs one constant weight"
        return None
    return refusal


# ---- Conv -------------------------------------------------------------------------------------

def _conv_refusal(node: Node, graph: Graph):
    if not graph.is_constant(node.inputs[1]):
        return "Conv weights are computed at run time; exbp needs constant weights"
    return None


@rule("Conv", reads_values=lambda node, graph: (node.inputs[0],), refusal=_conv_refusal,
      weight_input=lambda node, graph: 1)
def conv_rule(node, tensors, signals, receivers):
    x, weight_name = tensors.value(node.inputs[0]), node.inputs[1]
    kernel = tensors.shape(weight_name)[2:]
    n = len(kernel)
    in_spatial = tuple(x.shape[-n:])
    out_spatial = tuple(signals[0].shape[-n:])
    geometry = window_geometry(node, kernel, in_spatial).as_kwargs()
    group = node.attrs["group"]
    kernels, weight = tensors.kernels, tensors.value(weight_name)
    op = LinearOp(
        forward=lambda inp, part: kernels.conv(inp, weight, part, group=group,
                                               out_spatial=out_spatial, **geometry),
        transpose=lambda s, part: kernels.conv_transpose(s, weight, part, group=group,
                                                         in_spatial=in_spatial, **geometry))
    return [excite(tensors, node.inputs[0], signals[0], op, tensors.precomputed(node, "normaliser"))]


# ---- Gemm and MatMul --------------------------------------------------------------------------

def _matrix_op(xp, weight_of, act_first: bool, act_transposed: bool, weight_transposed: bool):
    """f for ``y = t(x) @ Wm`` (act_first) or ``y = Wm @ t(x)``, t a transpose of the last two
    axes where asked, Wm the weight part (transposed where asked)."""
    def matrix(part):
        weight = weight_of(part)
        return weight.T if weight_transposed else weight

    def t(a):
        return xp.swapaxes(a, -1, -2) if act_transposed else a

    if act_first:
        return LinearOp(forward=lambda x, part: xp.matmul(t(x), matrix(part)),
                        transpose=lambda s, part: t(xp.matmul(s, matrix(part).T)))
    return LinearOp(forward=lambda x, part: xp.matmul(matrix(part), t(x)),
                    transpose=lambda s, part: t(xp.matmul(matrix(part).T, s)))


def _matrix_activation(node: Node, graph: Graph) -> tuple[int, ...]:
    return tuple(i for i in activation_inputs(node, graph) if i < 2)


def _matrix_weight(node: Node, graph: Graph) -> int:
    return 1 - _matrix_activation(node, graph)[0]


_MATRIX_RULE = dict(signal_inputs=_matrix_activation, weight_input=_matrix_weight,
                    reads_values=lambda node, graph: tuple(node.inputs[i] for i in
                                                           _matrix_activation(node, graph)))


@rule("Gemm", refusal=_one_activation("Gemm"), **_MATRIX_RULE)
def gemm_rule(node, tensors, signals, receivers):
    return _excite_matrix(node, tensors, signals, receivers[0],
                          transposed=(bool(node.attrs["transA"]), bool(node.attrs["transB"])))


@rule("MatMul", refusal=_one_activation("MatMul"), **_MATRIX_RULE)
def matmul_rule(node, tensors, signals, receivers):
    return _excite_matrix(node, tensors, signals, receivers[0], transposed=(False, False))


def _excite_matrix(node, tensors, signals, act: int, transposed: tuple[bool, bool]):
    weight_name = node.inputs[1 - act]
    op = _matrix_op(tensors.xp, lambda part: tensors.weight(weight_name, part), act_first=act == 0,
                    act_transposed=transposed[act], weight_transposed=transposed[1 - act])
    return [excite(tensors, node.inputs[act], signals[0], op)]


# ---- Pooling and reductions: weights all positive ---------------------------------------------

@rule("AveragePool", reads_values=_activation_value)
def average_pool_rule(node, tensors, signals, receivers):
    x = tensors.value(node.inputs[0])
    kernel = node.attrs["kernel_shape"]
    n = len(kernel)
    in_spatial, out_spatial = tuple(x.shape[-n:]), tuple(signals[0].shape[-n:])
    geometry = window_geometry(node, kernel, in_spatial)
    kernels = tensors.kernels
    op = LinearOp(
        forward=lambda inp, part: kernels.window_sum(inp, geometry.kernel, out_spatial=out_spatial,
                                                     **geometry.as_kwargs()),
        transpose=lambda s, part: kernels.window_sum_transpose(s, geometry.kernel,
                                                               in_spatial=in_spatial,
                                                               **geometry.as_kwargs()),
        has_negative_weights=False)
    return [excite(tensors, node.inputs[0], signals[0], op)]


def _sum_op(xp, axes: tuple[int, ...], keepdims: bool, kept_shape: tuple[int, ...]) -> LinearOp:
    """f = sum over ``axes``; fᵀ broadcasts back (the multiplication by x does the broadcast)."""
    return LinearOp(forward=lambda x, part: xp.sum(x, axis=axes, keepdims=keepdims),
                    transpose=lambda s, part: s.reshape((s.shape[0],) + kept_shape),
                    has_negative_weights=False)


@rule("GlobalAveragePool", reads_values=_activation_value)
def global_average_pool_rule(node, tensors, signals, receivers):
    x = tensors.value(node.inputs[0])
    axes = tuple(range(2, x.ndim))
    op = _sum_op(tensors.xp, axes, True, x.shape[:2] + (1,) * len(axes))
    return [excite(tensors, node.inputs[0], signals[0], op)]


def _reduce_axes(node: Node, source, rank: int | None):
    """The reduced axes, from the attribute or the constant axes input (``source.constant`` reads
    it: a Graph at plan time, the tensors at run time); normalised when the rank is known.
    None means all axes."""
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        axes = tuple(int(a) for a in source.constant(node.inputs[1]).reshape(-1))
    if axes is not None and rank:
        axes = tuple(sorted(a % rank for a in axes))
    return axes


def _reduce_refusal(node: Node, graph: Graph):
    if len(node.inputs) > 1 and node.inputs[1] and not graph.is_constant(node.inputs[1]):
        return f"{node.op_type} with axes computed at run time is not supported"
    axes = _reduce_axes(node, graph, len(graph.shapes.get(node.inputs[0]) or ()))
    if axes == () and node.attrs.get("noop_with_empty_axes", 0):
        return None
    if not axes or 0 in axes:
        return f"{node.op_type} reduces over the batch axis; exbp needs a per-image reduction"
    return None


@rule("ReduceMean", "ReduceSum", reads_values=_activation_value, refusal=_reduce_refusal)
def reduce_rule(node, tensors, signals, receivers):
    x = tensors.value(node.inputs[0])
    axes = _reduce_axes(node, tensors, x.ndim)
    if axes == ():  # noop_with_empty_axes: the op is the identity
        return [signals[0]]
    kept_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    op = _sum_op(tensors.xp, axes, bool(node.attrs.get("keepdims", 1)), kept_shape)
    return [excite(tensors, node.inputs[0], signals[0], op)]
