"""Running a :class:`~exbp.engine.planning.WalkPlan`: the signal from the logits to the layer.

Signals carry a leading row axis: one row per target. Propagation is linear in the signal for
fixed activations, so every row shares each op's normaliser ``Z`` and one pass serves all targets.
Where a tensor feeds several consumers, their signals add up (fan-out sums).

Methods are rows too. At the classifier, MWP keeps the rule's output ``P_W`` and c-MWP takes
``P_W − P_dual``, the dual being the classifier with the target's weights negated (REFERENCE §4);
the difference travels down once, which equals subtracting the two maps at the layer.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .planning import WalkPlan
from .tensors import TensorStore


def walk(plan: WalkPlan, tensors: TensorStore, top, contrast: Optional[Sequence[float]] = None):
    """The signal at ``plan.layer``, shape (rows, *layer shape).

    ``top`` is the signal at the logits, (targets, *logits shape). With ``contrast`` None the rows
    are MWP; otherwise there is one block of rows per coefficient ``c``, whose signal at the
    classifier's input is ``P_W − c·P_dual`` (0 for MWP, 1 for c-MWP)."""
    xp = tensors.xp
    signals = {plan.logits: top}
    for index, step in enumerate(plan.steps):
        outgoing = [signals.pop(name, None) for name in step.node.outputs]
        if all(signal is None for signal in outgoing):
            continue
        incoming = step.rule.backward(step.node, tensors, outgoing, step.receivers)
        if index == plan.classifier and contrast is not None:
            dual = plan.dual.rule.backward(plan.dual.node, tensors, outgoing, step.receivers)
            incoming = [xp.concatenate([own - c * other for c in contrast], axis=0)
                        for own, other in zip(incoming, dual)]
        for input_index, signal in zip(step.receivers, incoming):
            name = step.node.inputs[input_index]
            signals[name] = signal if name not in signals else signals[name] + signal
    return signals[plan.layer]
