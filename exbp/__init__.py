"""exbp: Excitation Backprop attention maps (MWP and c-MWP) for any ONNX CNN."""

from .engine.compute.backends import cuda_unavailable
from .engine.explainer import Explainer
from .engine.graph.layers import LayerInfo
from .engine.graph.loading import MAX_OPSET, MIN_OPSET
from .engine.inputs import InputSpec
from .engine.report import CheckReport, shape_text
from .engine.walk.maps import Explanation, max_point
from .engine.walk.methods import CMWP, METHODS, MWP, Method
from .exporters import FORMATS, colorize, map_record, overlay, write_map_files, write_summary
from .image_maps import ImageMap, explain_image
from .preprocessing import PRESETS, Preprocessing, load_image, resolve_preprocessing
from .errors import (ExbpError, InputError, LayerError, MethodError, ModelError, TargetError,
                     UnsupportedOpError)
from .graph_rules import supported_ops
from .labels import Labels

__version__ = "0.1.0"

__all__ = ["Explainer", "Explanation", "LayerInfo", "InputSpec", "CheckReport", "Labels",
           "Method", "METHODS", "MWP", "CMWP", "supported_ops", "cuda_unavailable", "max_point",
           "shape_text", "MIN_OPSET", "MAX_OPSET", "ImageMap", "explain_image", "load_image",
           "Preprocessing", "PRESETS", "resolve_preprocessing", "FORMATS", "colorize", "overlay",
           "map_record", "write_map_files", "write_summary", "ExbpError", "InputError", "LayerError",
           "MethodError", "ModelError", "TargetError", "UnsupportedOpError", "__version__"]
