r"""The linear family: Conv, ConvTranspose, Gemm, MatMul, AveragePool, GlobalAveragePool, ReduceMean,
ReduceSum.

For a linear op ``y_i = Σ_j w_ij x_j (+ b_i)`` a lower neuron j wins from an upper neuron i with

    P(j|i) = (x_j w_ij)⁺ / Σ_k (x_k w_ik)⁺          (bias ignored)

and the marginal winning probability is ``P(x_j) = Σ_i P(j|i) P(y_i)`` (docs/method.md §1). Written
with the op's own forward ``f`` and its transpose ``fᵀ`` (vector-Jacobian product), splitting the
input into ``x⁺ = max(x, 0)``, ``x⁻ = min(x, 0)`` and the weights into ``W⁺``, ``W⁻``:

    Z    = f(x⁺, W⁺) + f(x⁻, W⁻)                 # Σ_k (x_k w_ik)⁺, independent of the target
    S    = P_out / Z     where Z > 0, else 0      # the mass at Z == 0 has no winner and is lost
    P_in = x⁺ ⊙ fᵀ(S, W⁺) + x⁻ ⊙ fᵀ(S, W⁻)

When ``x ≥ 0`` (after a ReLU) the x⁻ terms vanish and this is the paper's rule; with negative
inputs (the image, a branch after BatchNorm) it is the z⁺ rule and keeps P non-negative and
conserved. Pooling ops have only positive weights, so they have no W⁻ terms. ``P_out`` carries
a leading axis of targets; ``Z`` is computed once for all of them.

:func:`excite` is that rule, written once; every op below only supplies ``f`` and ``fᵀ``. Adding a
linear op is its ``f``, its ``fᵀ`` and its registration.

The comparison methods (docs/method.md §9) use the same ``fᵀ`` with the whole weight ``W``: the
gradient (and deconvnet's and guided backprop's, which differ only at ReLUs) is ``g_in = fᵀ(g, W)``
— an average pooling's ``f`` being the window mean — and LRP-ε is :func:`.relevance.relevance_of`
that gradient, ``R_in = x ⊙ fᵀ(R / (z + ε·sign z), W)`` with the bias in ``z``.

The normaliser depends on the activations alone, so a Conv declares it as a derived quantity
(``Recorded.NORMALISER``): the recording session computes it beside the activations, on
onnxruntime's own layouts. Where a recording has no Z (the ``numpy`` and CuPy backends' own
kernels, the classifier's dual) the rule computes it with the op's ``f``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from onnx import helper

from ..engine.graph.model import Graph, Node
from .geometry import window_geometry
from .layouts import CHANNELS_FIRST, matrix_layout, reduced_layout
from .onnx_form import NEGATIVE, POSITIVE, WHOLE, listed, weight_part_nodes
from .registry import (GRADIENT_KINDS, Need, Propagation, Recorded, Variant, activation_inputs,
                       by_opset, first_input, for_kinds, keeps_sign_of, negatives_carry_signal, rule,
                       shape_of_first_input, values_of)
from .relevance import relevance_of


@dataclass(frozen=True)
class LinearOp:
    """``forward(x, part)`` = f(x, W_part); ``transpose(s, part)`` = fᵀ(s, W_part); part is
    POSITIVE or NEGATIVE. ``transpose`` receives the extra leading target axis and returns an array
    that broadcasts against ``(targets,) + x.shape``."""
    forward: Callable
    transpose: Callable
    has_negative_weights: bool = True


def excite(tensors, x_name: str, signal, op: LinearOp, normaliser=None, output=None):
    """The rule above for the activation ``x_name``; ``normaliser`` is Z when the recording
    computed it already (it is used up: each recorded Z serves one rule call). ``output``: the
    op's output, whose negative sums are shared by sign where its negative values carry signal."""
    xp = tensors.xp
    x = tensors.value(x_name)
    has_negative_inputs = tensors.holds_negatives(x_name)
    x_pos = xp.maximum(x, 0) if has_negative_inputs else x
    x_neg = xp.minimum(x, 0) if has_negative_inputs else None
    with_negative = has_negative_inputs and op.has_negative_weights
    if normaliser is None:
        z = op.forward(x_pos, POSITIVE)
        if with_negative:
            z = z + op.forward(x_neg, NEGATIVE)
    else:
        z = normaliser
    if ((has_negative_inputs or op.has_negative_weights) and output is not None
            and tensors.negatives_carry_signal(output)):
        return _excite_by_sign(tensors, x_pos, x_neg, z, signal, op, output)
    scaled = signal * tensors.kernels.safe_reciprocal(z)
    result = _times(op.transpose(scaled, POSITIVE), x_pos)
    if with_negative:
        result += _times(op.transpose(scaled, NEGATIVE), x_neg)
    return result


def _excite_by_sign(tensors, x_pos, x_neg, z_pos, signal, op: LinearOp, output: str):
    """A negative output shares its signal by the negative contributions,
    ``P·(x_j w_ij)⁻ / Σ_k (x_k w_ik)⁻`` (docs/method.md §3.1), where the z⁺ rule would share it
    by the positive ones, or lose it where there are none (a linear bottleneck's projection,
    pooling after HardSwish). The sign is the recorded output's for ops with weights (whose bias
    counts), the contributions' sum's for pooling. ``x_neg`` is None where x ≥ 0."""
    xp, reciprocal = tensors.xp, tensors.kernels.safe_reciprocal
    z_neg = 0       # Σ (x w)⁻ as a magnitude: x⁺·|W⁻| + |x⁻|·W⁺
    if op.has_negative_weights:
        z_neg = z_neg - op.forward(x_pos, NEGATIVE)
    if x_neg is not None:
        z_neg = z_neg - op.forward(x_neg, POSITIVE)
    negative_output = tensors.value(output) < 0 if op.has_negative_weights else z_neg > z_pos
    positive_share = xp.where(negative_output, 0, signal * reciprocal(z_pos))
    negative_share = xp.where(negative_output, signal * reciprocal(z_neg), 0)
    result = _times(op.transpose(positive_share, POSITIVE), x_pos)
    if x_neg is not None and op.has_negative_weights:
        result += _times(op.transpose(positive_share, NEGATIVE), x_neg)
    if op.has_negative_weights:
        result -= _times(op.transpose(negative_share, NEGATIVE), x_pos)
    if x_neg is not None:
        result -= _times(op.transpose(negative_share, POSITIVE), x_neg)
    return result


def _times(transposed, x):
    """transposed · x, in place when ``transposed`` already has the result's shape."""
    if (transposed.ndim == x.ndim + 1 and transposed.shape[1:] == x.shape
            and getattr(transposed.flags, "writeable", True)):
        transposed *= x
        return transposed
    return transposed * x


def gradient_variants(backward, needs=shape_of_first_input, signal_inputs=first_input) -> dict:
    """``variants`` of a linear op whose gradient is ``backward``: the gradient kinds, and LRP-ε
    from it."""
    gradient = Variant(backward, needs=needs)
    return {**for_kinds(GRADIENT_KINDS, gradient), Propagation.LRP: relevance_of(gradient, signal_inputs)}


def transposed_with_whole_weight(linear_op_of):
    """The gradient ``fᵀ(g, W)`` of the op ``linear_op_of(node, tensors, signals)`` builds."""
    def backward(node, tensors, signals, receivers):
        return [linear_op_of(node, tensors, signals).transpose(signals[0], WHOLE)]
    return backward


def _activation_values(node: Node, graph: Graph) -> tuple[Need, ...]:
    return tuple(Need(Recorded.VALUE, node.inputs[i]) for i in activation_inputs(node, graph))


def _with_signed_output(needs):
    """``needs`` and, where the output's negative values can carry signal (not where only
    rectifiers read it, directly or through a residual Add), the output's value: its sign decides
    how the rule shares (§3.1)."""
    def with_output(node: Node, graph: Graph) -> tuple[Need, ...]:
        signed = negatives_carry_signal(graph, node.outputs[0])
        return tuple(needs(node, graph)) + ((Need(Recorded.VALUE, node.outputs[0]),) if signed else ())
    return with_output


def _one_activation(op_name: str):
    def refusal(node: Node, graph: Graph):
        count = len(activation_inputs(node, graph))
        if count > 1:
            return f"{op_name} multiplies {count} run-time tensors; exbp needs one constant weight"
        return None
    return refusal


# ---- Conv and ConvTranspose --------------------------------------------------------------------

def _constant_weight_refusal(node: Node, graph: Graph):
    if not graph.is_constant(node.inputs[1]):
        return f"{node.op_type} weights are computed at run time; exbp needs constant weights"
    return None


def _conv_normaliser_nodes(node: Node, input_non_negative: bool, out: str):
    """Z = Conv(x⁺, W⁺) + Conv(x⁻, W⁻) as ONNX nodes; the second term only where x may be < 0.
    W⁺ and W⁻ are nodes over the weight, which onnxruntime folds into constants."""
    x, weight = node.inputs[0], node.inputs[1]
    attrs = listed(node.attrs)
    positive, negative = f"{out}_weight_positive", f"{out}_weight_negative"
    if input_non_negative:
        return [*weight_part_nodes(weight, POSITIVE, positive),
                helper.make_node("Conv", [x, positive], [out], name=out, **attrs)]
    x_pos, x_neg = out + "_input_positive", out + "_input_negative"
    return [*weight_part_nodes(weight, POSITIVE, positive),
            *weight_part_nodes(weight, NEGATIVE, negative),
            helper.make_node("Relu", [x], [x_pos], name=x_pos),
            helper.make_node("Sub", [x, x_pos], [x_neg], name=x_neg),
            helper.make_node("Conv", [x_pos, positive], [out + "_positive"], name=out + "_positive", **attrs),
            helper.make_node("Conv", [x_neg, negative], [out + "_negative"], name=out + "_negative", **attrs),
            helper.make_node("Add", [out + "_positive", out + "_negative"], [out], name=out)]


def _first_weight(node: Node, graph: Graph) -> int:
    return 1


def _convolutions(tensors, node, geometry: dict, larger: tuple, smaller: tuple):
    """(the convolution of ``node``'s weight from spatial size ``larger`` to ``smaller``, its
    transpose back), as functions of (array, weight part): a Conv's f and fᵀ, and, exchanged, a
    ConvTranspose's."""
    kernels, weight, group = tensors.kernels, tensors.weight(node.inputs[1]), node.attrs["group"]

    def conv(inp, part):
        return kernels.conv(inp, weight, part, group=group, out_spatial=smaller, **geometry)

    def conv_transpose(signal, part):
        return kernels.conv_transpose(signal, weight, part, group=group, in_spatial=larger, **geometry)
    return conv, conv_transpose


def _spatial_sizes(node, tensors, signals) -> tuple[tuple, tuple, tuple]:
    """(kernel, input spatial size, output spatial size), the output's from its signal."""
    kernel = tensors.shape(node.inputs[1])[2:]
    n = len(kernel)
    return kernel, tuple(tensors.shape(node.inputs[0])[-n:]), tuple(signals[0].shape[-n:])


def _conv_op(node, tensors, signals) -> LinearOp:
    kernel, in_spatial, out_spatial = _spatial_sizes(node, tensors, signals)
    geometry = window_geometry(node, kernel, in_spatial).as_kwargs()
    conv, conv_transpose = _convolutions(tensors, node, geometry, in_spatial, out_spatial)
    return LinearOp(forward=conv, transpose=conv_transpose)


@rule("Conv", needs=_with_signed_output(values_of(0)), refusal=_constant_weight_refusal, weight_input=_first_weight,
      derived={Recorded.NORMALISER: _conv_normaliser_nodes},
      variants=gradient_variants(transposed_with_whole_weight(_conv_op)), **CHANNELS_FIRST)
def conv_rule(node, tensors, signals, receivers):
    return [excite(tensors, node.inputs[0], signals[0], _conv_op(node, tensors, signals),
                   tensors.recorded(node, Recorded.NORMALISER), output=node.outputs[0])]


def _conv_transpose_pads(node: Node, kernel, in_spatial, out_spatial) -> tuple[int, ...]:
    """(begin..., end...) pads for the kernels: the full transposed output, ``(in − 1)·stride +
    (k − 1)·dilation + 1`` along each axis, is cropped from ``begin`` to the recorded output size;
    an ``output_padding`` past the full extent is zeros (a negative end pad, clamped to 0 since
    the kernels only crop from the begin pads)."""
    n = len(kernel)
    strides = node.attrs.get("strides") or (1,) * n
    dilations = node.attrs.get("dilations") or (1,) * n
    begins = list(node.attrs.get("pads") or (0,) * (2 * n))[:n]
    ends = [max((i - 1) * s + (k - 1) * d + 1 - o - b, 0)
            for i, s, k, d, o, b in zip(in_spatial, strides, kernel, dilations, out_spatial, begins)]
    return tuple(begins) + tuple(ends)


def _conv_transpose_refusal(node: Node, graph: Graph):
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or node.attrs.get("output_shape"):
        return ("ConvTranspose with auto_pad SAME or an output_shape is not supported (their pads "
                "differ between implementations); give explicit pads and output_padding")
    return _constant_weight_refusal(node, graph)


def _conv_transpose_op(node, tensors, signals) -> LinearOp:
    """f is the transposed convolution (weight (C_in, C_out/group, *k)) and fᵀ the convolution with
    the same weight and geometry: the two kernels of Conv, exchanged."""
    kernel, in_spatial, out_spatial = _spatial_sizes(node, tensors, signals)
    n = len(kernel)
    geometry = {"strides": tuple(node.attrs.get("strides") or (1,) * n),
                "dilations": tuple(node.attrs.get("dilations") or (1,) * n),
                "pads": _conv_transpose_pads(node, kernel, in_spatial, out_spatial)}
    conv, conv_transpose = _convolutions(tensors, node, geometry, out_spatial, in_spatial)
    return LinearOp(forward=conv_transpose, transpose=conv)


@rule("ConvTranspose", needs=_with_signed_output(values_of(0)), refusal=_conv_transpose_refusal,
      weight_input=_first_weight,
      variants=gradient_variants(transposed_with_whole_weight(_conv_transpose_op)), **CHANNELS_FIRST)
def conv_transpose_rule(node, tensors, signals, receivers):
    return [excite(tensors, node.inputs[0], signals[0], _conv_transpose_op(node, tensors, signals),
                   output=node.outputs[0])]


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


def _matrix_activation_value(node: Node, graph: Graph) -> tuple[Need, ...]:
    return values_of(*_matrix_activation(node, graph))(node, graph)


def _transposed_operands(node) -> tuple[bool, bool]:
    """Gemm's (transA, transB); MatMul transposes neither."""
    return bool(node.attrs.get("transA", 0)), bool(node.attrs.get("transB", 0))


def _matrix_linear_op(node, tensors, act: int) -> LinearOp:
    transposed = _transposed_operands(node)
    return _matrix_op(tensors.xp, tensors.weight(node.inputs[1 - act]).part, act_first=act == 0,
                      act_transposed=transposed[act], weight_transposed=transposed[1 - act])


def matrix_gradient_rule(node, tensors, signals, receivers):
    return [_matrix_linear_op(node, tensors, receivers[0]).transpose(signals[0], WHOLE)]


_MATRIX_RULE = dict(signal_inputs=_matrix_activation, weight_input=_matrix_weight,
                    needs=_with_signed_output(_matrix_activation_value), layout=matrix_layout(_matrix_activation),
                    variants=gradient_variants(matrix_gradient_rule, needs=lambda node, graph: (),
                                               signal_inputs=_matrix_activation))


@rule("Gemm", refusal=_one_activation("Gemm"), **_MATRIX_RULE)
@rule("MatMul", refusal=_one_activation("MatMul"), **_MATRIX_RULE)
def matrix_rule(node, tensors, signals, receivers):
    act = receivers[0]
    return [excite(tensors, node.inputs[act], signals[0], _matrix_linear_op(node, tensors, act),
                   output=node.outputs[0])]


# ---- Pooling and reductions: weights all positive ---------------------------------------------

def average_pool_gradient_rule(node, tensors, signals, receivers):
    """f is the window mean: each window's gradient, divided by its count (the window's real
    inputs, or with ``count_include_pad`` its inputs and explicit pads), goes back to its inputs."""
    xp, kernels = tensors.xp, tensors.kernels
    kernel = node.attrs["kernel_shape"]
    n = len(kernel)
    in_spatial = tuple(tensors.shape(node.inputs[0])[-n:])
    out_spatial = tuple(signals[0].shape[-n:])
    geometry = window_geometry(node, kernel, in_spatial)
    counted, pads = in_spatial, geometry.pads
    if node.attrs.get("count_include_pad", 0):
        counted = tuple(size + pads[i] + pads[n + i] for i, size in enumerate(in_spatial))
        pads = (0,) * (2 * n)
    counts = kernels.window_sum(xp.ones(counted, dtype=signals[0].dtype), geometry.kernel,
                                strides=geometry.strides, pads=pads, dilations=geometry.dilations,
                                out_spatial=out_spatial)
    return [kernels.window_sum_transpose(signals[0] / counts, geometry.kernel, in_spatial=in_spatial,
                                         **geometry.as_kwargs())]


@rule("AveragePool", needs=_activation_values, sign=keeps_sign_of(0),
      variants=gradient_variants(average_pool_gradient_rule), **CHANNELS_FIRST)
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
    return [excite(tensors, node.inputs[0], signals[0], op, output=node.outputs[0])]


def _sum_op(xp, axes: tuple[int, ...], keepdims: bool, kept_shape: tuple[int, ...]) -> LinearOp:
    """f = sum over ``axes``; fᵀ broadcasts back (the multiplication by x does the broadcast)."""
    return LinearOp(forward=lambda x, part: xp.sum(x, axis=axes, keepdims=keepdims),
                    transpose=lambda s, part: s.reshape((s.shape[0],) + kept_shape),
                    has_negative_weights=False)


def global_average_pool_gradient_rule(node, tensors, signals, receivers):
    shape = tuple(tensors.shape(node.inputs[0]))
    return [_broadcast_back(tensors.xp, signals[0], shape, shape[:2] + (1,) * (len(shape) - 2),
                            mean=True)]


def _broadcast_back(xp, signal, shape, kept_shape, mean: bool):
    """A reduction's gradient: the signal of each output to every input it sums (over their count
    for a mean)."""
    count = 1
    for full, kept in zip(shape, kept_shape):
        count *= full // kept
    rows = signal.shape[0]
    spread = xp.broadcast_to(signal.reshape((rows,) + tuple(kept_shape)), (rows,) + tuple(shape))
    return spread * (1 / count if mean else 1)


def _spatial_axes(node: Node, graph: Graph) -> tuple[int, ...]:
    return tuple(range(2, len(graph.shapes.get(node.inputs[0]) or ())))


@rule("GlobalAveragePool", needs=_activation_values, sign=keeps_sign_of(0),
      variants=gradient_variants(global_average_pool_gradient_rule), averaged_axes=_spatial_axes,
      **CHANNELS_FIRST)
def global_average_pool_rule(node, tensors, signals, receivers):
    x = tensors.value(node.inputs[0])
    axes = tuple(range(2, x.ndim))
    op = _sum_op(tensors.xp, axes, True, x.shape[:2] + (1,) * len(axes))
    return [excite(tensors, node.inputs[0], signals[0], op, output=node.outputs[0])]


def _axes_attribute(node: Node, graph: Graph) -> dict:
    return {"axes": node.attrs.get("axes")}


def _axes_input(node: Node, graph: Graph):
    """The axes from the constant input (None: run-time axes, refused); no input means all axes."""
    if len(node.inputs) < 2 or not node.inputs[1]:
        return {"axes": None}
    axes = graph.constant(node.inputs[1])
    return None if axes is None else {"axes": tuple(int(a) for a in axes.reshape(-1))}


def _reduce_axes(node: Node, rank: int | None):
    """The reduced axes, normalised when the rank is known; None means all axes."""
    axes = node.attrs.get("axes")
    if axes is not None and rank:
        axes = tuple(sorted(a % rank for a in axes))
    return axes


def _reduce_refusal(node: Node, graph: Graph):
    if len(node.inputs) > 1 and node.inputs[1] and not graph.is_constant(node.inputs[1]):
        return f"{node.op_type} with axes computed at run time is not supported"
    axes = _reduce_axes(node, len(graph.shapes.get(node.inputs[0]) or ()))
    if axes == () and node.attrs.get("noop_with_empty_axes", 0):
        return None
    if not axes or 0 in axes:
        return f"{node.op_type} reduces over the batch axis; exbp needs a per-image reduction"
    return None


def reduce_gradient_rule(node, tensors, signals, receivers):
    shape = tuple(tensors.shape(node.inputs[0]))
    axes = _reduce_axes(node, len(shape))
    if axes == ():  # noop_with_empty_axes: the op is the identity
        return [signals[0]]
    kept_shape = tuple(1 if i in axes else d for i, d in enumerate(shape))
    return [_broadcast_back(tensors.xp, signals[0], shape, kept_shape,
                            mean=node.op_type == "ReduceMean")]


_REDUCE_RULE = dict(needs=values_of(0), refusal=_reduce_refusal, sign=keeps_sign_of(0),
                    layout=reduced_layout(_reduce_axes),
                    variants=gradient_variants(reduce_gradient_rule))


# the axes became an input at opset 13 for ReduceSum and at opset 18 for ReduceMean
@rule("ReduceMean", parameters=by_opset({1: _axes_attribute, 18: _axes_input}),
      averaged_axes=lambda node, graph: _reduce_axes(node, len(graph.shapes.get(node.inputs[0]) or ())),
      **_REDUCE_RULE)
@rule("ReduceSum", parameters=by_opset({1: _axes_attribute, 13: _axes_input}), **_REDUCE_RULE)
def reduce_rule(node, tensors, signals, receivers):
    x = tensors.value(node.inputs[0])
    axes = _reduce_axes(node, x.ndim)
    if axes == ():  # noop_with_empty_axes: the op is the identity
        return [signals[0]]
    kept_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    op = _sum_op(tensors.xp, axes, bool(node.attrs.get("keepdims", 1)), kept_shape)
    return [excite(tensors, node.inputs[0], signals[0], op, output=node.outputs[0])]
