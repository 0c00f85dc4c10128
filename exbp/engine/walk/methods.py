"""Methods as data: the policy a walk is given (docs/method.md §4).

All methods share one forward pass and one walk: their signals travel as blocks of rows, the same
rules applying to every row. A method decides what leaves the classifier — MWP the rule's own
signal ``P_W``, c-MWP ``P_W − P_dual``, the dual being the classifier with the target's weights
negated — and what its maps keep: c-MWP's positive part.

A method is a value: ``Method("mine", "my MWP", contrastive=False)`` passed to
``Explainer.explain(method=...)`` runs through the same walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

from ...errors import MethodError


@dataclass(frozen=True)
class Method:
    name: str                 # what results are keyed by ("mwp")
    title: str                # what messages call it ("MWP")
    contrastive: bool         # subtracts the classifier's dual; needs a classifier (§4)

    def at_classifier(self, own, dual):
        """The signal below the classifier: ``dual`` is None unless the method is contrastive."""
        return own - dual if self.contrastive else own

    def finish(self, xp, maps):
        """The maps after the channel sum: a contrastive map keeps its positive part."""
        return xp.maximum(maps, 0) if self.contrastive else maps


MWP = Method("mwp", "MWP", contrastive=False)
CMWP = Method("cmwp", "c-MWP", contrastive=True)
METHODS: dict[str, Method] = {method.name: method for method in (MWP, CMWP)}

MethodLike = Union[str, Method]


def methods_named(methods: Union[MethodLike, Sequence[MethodLike]]) -> tuple[Method, ...]:
    """Methods by name (or as values), without repeats; MethodError for an unknown name."""
    if isinstance(methods, (str, Method)):
        methods = (methods,)
    chosen = []
    if not isinstance(methods, (list, tuple)):
        raise MethodError(f"method must be a name ({', '.join(METHODS)}) or an exbp.Method; got "
                          f"{methods!r}")
    for method in methods:
        if not isinstance(method, Method):
            if not isinstance(method, str) or method not in METHODS:
                raise MethodError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
            method = METHODS[method]
        if method not in chosen:
            chosen.append(method)
    if not chosen:
        raise MethodError(f"no method given; use one of {', '.join(METHODS)}")
    return tuple(chosen)
