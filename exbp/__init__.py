"""exbp: Excitation Backprop attention maps (MWP and c-MWP) for any ONNX CNN."""

from .engine import METHODS, Explainer, Explanation, LayerInfo
from .errors import (ExbpError, InputError, LayerError, MethodError, ModelError, TargetError,
                     UnsupportedOpError)
from .graph_rules import supported_ops

__version__ = "0.1.0"

__all__ = ["Explainer", "Explanation", "LayerInfo", "METHODS", "supported_ops", "ExbpError",
           "InputError", "LayerError", "MethodError", "ModelError", "TargetError",
           "UnsupportedOpError", "__version__"]
