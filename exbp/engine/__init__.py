"""Graph loading and canonicalisation, forward recording, the walker, backends, the public API."""

from .explainer import METHODS, Explainer, Explanation
from .layers import LayerInfo

__all__ = ["METHODS", "Explainer", "Explanation", "LayerInfo"]
