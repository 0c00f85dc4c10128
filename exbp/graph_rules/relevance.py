r"""LRP-ε (docs/method.md §9.3), written once for every op that is affine in its signal inputs.

For such an op, ``z = f(x) + b`` (a Conv or Gemm with its bias, an Add whose constant operand is a
bias, an average pooling, a BatchNormalization that was not folded), the ε rule of Bach et al.
hands each input its contributions' share of the output's relevance,

    R_in = x ⊙ fᵀ(R / (z + ε·sign(z)))            sign(0) = +1, ε = 1e-6

— the op's own vector-Jacobian product ``fᵀ`` (its gradient variant) applied to the stabilised
ratio, times the input. ``z`` is the recorded output, bias included, so a bias absorbs its share
of the relevance as Zennit's ``Epsilon`` rule does; the op's gradient variant is all a family
module writes.
"""

from __future__ import annotations

from .registry import Need, Recorded, Variant, first_input

EPSILON = 1e-6


def stabilised(xp, z):
    """``z + ε·sign(z)``, ``sign(0) = +1`` (Zennit's stabiliser)."""
    return z + EPSILON * xp.where(z >= 0, 1.0, -1.0).astype(z.dtype)


def relevance_of(gradient: Variant, signal_inputs=first_input) -> Variant:
    """The ε rule of an affine op from its gradient variant; ``signal_inputs``: the inputs that
    receive relevance (as ``gradient`` takes them)."""
    def backward(node, tensors, signals, receivers):
        ratio = signals[0] / stabilised(tensors.xp, tensors.value(node.outputs[0]))
        transposed = gradient.backward(node, tensors, [ratio], receivers)
        return [t * tensors.value(node.inputs[i]) for t, i in zip(transposed, receivers)]

    def needs(node, graph):
        values = tuple(Need(Recorded.VALUE, node.inputs[i]) for i in signal_inputs(node, graph))
        return (*gradient.needs(node, graph), *values, Need(Recorded.VALUE, node.outputs[0]))
    return Variant(backward, needs=needs, signal_inputs=gradient.signal_inputs,
                   refusal=gradient.refusal)
