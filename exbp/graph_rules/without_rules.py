"""Ops exbp knows but has no Excitation Backprop rule for: what the engine still needs of them.

A final Softmax or LogSoftmax turns the logits into probabilities; the walk starts at its input
(docs/method.md §2). The others appear beside the walked path (pre- and post-processing); their
sign behaviour lets the static sign analysis (§1.2) see through them. The walk refuses them on its
path like any op without a rule.
"""

from __future__ import annotations

from .registry import Role, always_non_negative, declare, keeps_sign_of


def _resize_sign(node, graph, non_negative) -> bool:
    """Cubic interpolation overshoots below 0; nearest and linear stay within their input's range."""
    return node.inputs[0] in non_negative and node.attrs.get("mode") != "cubic"


declare("Softmax", role=Role.OUTPUT_NORMALISATION, sign=always_non_negative)
declare("LogSoftmax", role=Role.OUTPUT_NORMALISATION)
declare("Abs", "Exp", sign=always_non_negative)
declare("ReduceMax", sign=keeps_sign_of(0))
declare("Resize", sign=_resize_sign)
