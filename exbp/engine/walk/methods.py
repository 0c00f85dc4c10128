"""Methods as data: the policy a walk is given (docs/method.md §4, §9).

A method says which propagation kind its walk carries (the registry's rules for
:class:`~exbp.graph_rules.Propagation`: Excitation Backprop's winning probabilities, the gradient,
deconvnet's or guided backprop's modified gradient, LRP-ε's relevance), what starts at the logits,
what leaves the classifier, how the signal at the layer becomes a map, and which layer it maps by
default:

* ``top``: ``"one-hot"`` — the target's one-hot (§2) — or ``"logit"``, the one-hot times the
  target's logit (LRP, whose relevance at the logits is the score it explains);
* ``contrastive``: below the classifier the signal is ``P_W − P_dual``, the dual being the classifier
  with the target's weights negated (c-MWP, §4); it needs a classifier;
* ``reduction``: the map from the signal at the layer, (N, C, *spatial) per target:
  ``"sum"`` — Σ_c (MWP, c-MWP, LRP); ``"max-abs"`` — max_c |·| (Simonyan et al.'s saliency, and
  deconvnet's and guided backprop's); ``"grad-cam"`` — Σ_c α_c A_c with α_c the mean of the
  gradient over the positions and A the layer's activation; ``"cam"`` — Σ_c w_c A_c at the input of
  the global average pooling before the classifier (§9.6); then ``positive_part`` keeps the
  positive part (c-MWP, Grad-CAM; None: where contrastive);
* ``default_layer``: where a map is made when no layer is named — ``"map"`` the layer of §5,
  ``"input"`` the pixels, ``"pooled"`` the global average pooling's input (the last convolutional
  feature map), else the layer of §5.

Methods of one propagation kind and one top share a walk, and all of one call share the forward
pass: their signals travel as blocks of rows, a block per distinct classifier behaviour.

A method is a value: ``Method("mine", "my MWP")`` passed to ``Explainer.explain(method=...)`` runs
through the same walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from ...errors import MethodError
from ...graph_rules import Propagation

REDUCTIONS = ("sum", "max-abs", "grad-cam", "cam")
TOPS = ("one-hot", "logit")
DEFAULT_LAYERS = ("map", "input", "pooled")


@dataclass(frozen=True)
class Method:
    name: str                 # what results are keyed by ("mwp")
    title: str                # what messages call it ("MWP")
    contrastive: bool = False  # subtracts the classifier's dual; needs a classifier (§4)
    propagation: Propagation = Propagation.EXCITATION
    top: str = "one-hot"
    reduction: str = "sum"
    positive_part: Optional[bool] = None
    default_layer: str = "map"

    def __post_init__(self):
        for value, allowed, what in ((self.top, TOPS, "top"), (self.reduction, REDUCTIONS, "reduction"),
                                     (self.default_layer, DEFAULT_LAYERS, "default_layer")):
            if value not in allowed:
                raise MethodError(f"method {self.name!r}: unknown {what} {value!r}; use one of "
                                  f"{', '.join(allowed)}")
        if not isinstance(self.propagation, Propagation):
            raise MethodError(f"method {self.name!r}: propagation must be an exbp.Propagation; got "
                              f"{self.propagation!r}")

    @property
    def reads_layer(self) -> bool:
        """Whether the map reads the layer's own activation (Grad-CAM, CAM)."""
        return self.reduction in ("grad-cam", "cam")

    @property
    def clamps(self) -> bool:
        return self.contrastive if self.positive_part is None else self.positive_part

    def start(self, one_hot, logits):
        """The signal at the logits from the targets' one-hots (§2)."""
        return one_hot * logits if self.top == "logit" else one_hot

    def at_classifier(self, own, dual):
        """The signal below the classifier: ``dual`` is None unless the method is contrastive."""
        return own - dual if self.contrastive else own


MWP = Method("mwp", "MWP")
CMWP = Method("cmwp", "c-MWP", contrastive=True)
GRADIENT = Method("gradient", "gradient", propagation=Propagation.GRADIENT, reduction="max-abs",
                  default_layer="input")
DECONVNET = Method("deconvnet", "deconvnet", propagation=Propagation.DECONVNET,
                   reduction="max-abs", default_layer="input")
GUIDED = Method("guided", "guided backprop", propagation=Propagation.GUIDED, reduction="max-abs",
                default_layer="input")
LRP = Method("lrp", "LRP-ε", propagation=Propagation.LRP, top="logit", default_layer="input")
GRAD_CAM = Method("gradcam", "Grad-CAM", propagation=Propagation.GRADIENT, reduction="grad-cam",
                  positive_part=True, default_layer="pooled")
CAM = Method("cam", "CAM", propagation=Propagation.GRADIENT, reduction="cam", default_layer="pooled")
METHODS: dict[str, Method] = {method.name: method for method in (
    MWP, CMWP, GRADIENT, DECONVNET, GUIDED, LRP, GRAD_CAM, CAM)}

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
