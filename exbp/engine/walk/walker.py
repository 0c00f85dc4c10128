"""Running a :class:`~exbp.engine.walk.planning.WalkPlan`: the signal from the logits to the layer.

Signals carry a leading row axis: one row per target. Propagation is linear in the signal for
fixed activations, so every row shares each op's normaliser ``Z`` and one pass serves all targets.
Where a tensor feeds several consumers, their signals add up (fan-out sums).

Methods are blocks of rows. At the classifier each method turns the rule's output ``P_W`` (and,
for a contrastive one, the dual's ``P_dual``) into its own block (docs/method.md §4); the
difference travels down once, which equals subtracting the two maps at the layer.

A walk carries one propagation kind (docs/method.md §9): each step calls its rule's variant for
the plan's kind.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ...errors import LayerError
from ...graph_rules import Layout
from .maps import method_maps
from .methods import Method
from .planning import WalkPlan, require_classifier
from .tensors import TensorStore


def walk(plan: WalkPlan, tensors: TensorStore, top, methods: Sequence[Method],
         lost: Optional[dict] = None):
    """The signal at ``plan.layer``, shape (len(methods) · targets, *layer shape): a block of
    rows per method. ``top`` is the signal at the logits, (targets, *logits shape). ``lost``,
    when given, receives for every node the mass per row that its rule did not pass on (its
    outputs' signal less its inputs'; at the classifier, only for the methods' own signal)."""
    for method in methods:
        require_classifier(plan, method)
    with_dual = any(method.contrastive for method in methods)
    xp = tensors.xp
    if plan.classifier is None and len(methods) > 1:   # no classifier to branch at: none is contrastive
        top = xp.concatenate([top] * len(methods), axis=0)
    signals = {plan.logits: top}
    for index, step in enumerate(plan.steps):
        outgoing = [signals.pop(name, None) for name in step.node.outputs]
        if all(signal is None for signal in outgoing):
            continue
        incoming = step.variant.backward(step.node, tensors, outgoing, step.receivers)
        if lost is not None:
            lost[step.node.name] = _mass(xp, outgoing) - _mass(xp, incoming)
        if index == plan.classifier and (with_dual or len(methods) > 1):  # branch into methods
            duals = (plan.dual.variant.backward(plan.dual.node, tensors, outgoing, step.receivers)
                     if with_dual else [None] * len(incoming))
            incoming = [xp.concatenate([m.at_classifier(own, dual) for m in methods], axis=0)
                        for own, dual in zip(incoming, duals)]
        for input_index, signal in zip(step.receivers, incoming):
            name = step.node.inputs[input_index]
            signals[name] = signal if name not in signals else signals[name] + signal
    return signals[plan.layer]


def plan_maps(plan: WalkPlan, methods: Sequence[Method], tensors: TensorStore, one_hot, logits,
              layout: Layout, count: int, size: Optional[Sequence[int]]) -> dict:
    """Each of ``methods``' maps at ``plan.layer``, (N, K, *spatial) backend arrays, from one walk:
    a block of rows per classifier behaviour (MWP's own signal, c-MWP's difference). ``one_hot``
    is the targets' signal at the logits, ``logits`` their recorded value, ``count`` K."""
    walked = list({method.contrastive: method for method in reversed(methods)}.values())[::-1]
    blocks = [[w.contrastive for w in walked].index(m.contrastive) for m in methods]
    signal = walk(plan, tensors, methods[0].start(one_hot, logits), walked)
    if signal.ndim < 4:
        raise LayerError(f"layer {plan.layer!r} has shape {tuple(signal.shape[1:])}, with no "
                         "spatial axes; choose a tensor from Explainer.layers()")
    activation = tensors.value(plan.layer) if plan.layer in plan.values else None
    return method_maps(tensors.xp, signal, methods, blocks, layout, activation, count, size)


def _mass(xp, signals):
    """Σ of each row over every signal given (None: no signal), (rows,)."""
    present = [s.reshape(s.shape[0], -1).sum(axis=1) for s in signals if s is not None]
    return sum(present[1:], present[0])
