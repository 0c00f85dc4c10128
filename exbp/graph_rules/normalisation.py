"""Normalisation by the sample's own statistics: LayerNormalization (docs/method.md §3.5).

    y = γ ⊙ (x − μ) / σ + β,     μ, σ² the mean and variance of x over the axes from ``axis`` on

μ and σ are computed from the sample itself, at every position the normalisation runs over (each
pixel of ConvNeXt's channels-last tensors). Excitation Backprop's winner-take-all asks which input
neurons excite an output neuron; exbp holds μ and σ at the values the forward pass recorded, as it
holds every activation, since they are statistics of the input, not neurons the attention selects.
With them constant the op is a per-element affine map,

    y_i = (γ_i / σ) · x_i + (β_i − γ_i μ / σ),

in which each output has one input: its winner. The signal passes through, ``P_in = P_out``, as
it does through every per-element affine map exbp cannot fold (a BatchNormalization, a Mul or Add
by a constant, §3.2) and through the other normalisation by sample statistics, LRN (Caffe's
choice). Mass is conserved.

BatchNormalization differs in kind: its statistics are the model's constants, so it is an affine map
per channel exactly, which exbp folds into the preceding Conv or Gemm (§3.4), the folded weight
deciding which contributions are positive. LayerNormalization's scale γ/σ changes with the sample
and the position: there is no constant weight to fold it into.

The comparison methods hold the statistics likewise (docs/method.md §9.1): the gradient kinds
multiply the signal by ``γ / σ`` — the derivative with μ and σ constant, not the full one, which
would also flow through the statistics — and LRP passes relevance through, as MWP does.
"""

from __future__ import annotations

from .registry import GRADIENT_KINDS, Propagation, Variant, for_kinds, rule, values_of


def _layer_normalization_refusal(node, graph):
    for index, name in enumerate(node.inputs[1:3], start=1):
        if name and not graph.is_constant(name):
            part = ("scale", "bias")[index - 1]
            return (f"LayerNormalization with its {part} ({name!r}) computed at run time is not "
                    "supported; it must be a constant")
    used = [name for name in node.outputs[1:] if name and graph.consumers_of(name)]
    if used:
        return (f"LayerNormalization whose statistics ({', '.join(repr(n) for n in used)}) are "
                "read by other ops is not supported; only its normalised output may be used")
    return None


def layer_normalization_gradient_rule(node, tensors, signals, receivers):
    """``g ⊙ γ / σ``, σ the recorded input's standard deviation over the normalised axes."""
    xp = tensors.xp
    x = tensors.value(node.inputs[0])
    axes = tuple(range(node.attrs["axis"] % x.ndim, x.ndim))
    sigma = xp.sqrt(x.var(axis=axes, keepdims=True) + node.attrs["epsilon"])
    return [signals[0] * (tensors.value(node.inputs[1]) / sigma)]


def layer_normalization_rule(node, tensors, signals, receivers):
    return [signals[0]]


rule("LayerNormalization", refusal=_layer_normalization_refusal,
     variants={**for_kinds(GRADIENT_KINDS, Variant(layer_normalization_gradient_rule, needs=values_of(0))),
               Propagation.LRP: Variant(layer_normalization_rule)})(layer_normalization_rule)
