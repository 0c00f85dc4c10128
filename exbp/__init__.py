"""exbp: Excitation Backprop attention maps (MWP and c-MWP) for any ONNX CNN, and the methods the
paper compares them with (gradient, deconvnet, guided backprop, LRP-ε, Grad-CAM, CAM)."""

from .comparison import TOLERANCES, Comparison, Tolerances, compare
from .engine.compute.backends import cuda_unavailable
from .engine.explainer import Explainer
from .engine.graph.layers import LayerInfo
from .engine.graph.loading import MAX_OPSET, MIN_OPSET
from .engine.inputs import InputSpec
from .engine.report import CheckReport, shape_text
from .engine.walk.maps import Explanation, max_point, resize_map
from .engine.walk.methods import CMWP, METHODS, MWP, Method
from .errors import (ExbpError, InputError, LayerError, MethodError, ModelError, OutputError,
                     TargetError, UnsupportedOpError)
from .exporters import (COLORMAPS, DEFAULT_FORMATS, FORMATS, OverlayStyle, colorize, map_record,
                        overlay, read_summary, triton_config, write_comparison_sheet,
                        write_contact_sheet, write_json, write_map_files, write_onnx, write_report,
                        write_summary, write_triton_repository)
from .evaluation import Annotation, PointingScores, pointing, read_class_mapping, read_coco, read_voc
from .image_maps import ImageMap, explain_image, explain_images
from .preprocessing import (MAX_IMAGE_PIXELS, MAX_INPUT_PIXELS, PRESETS, Preprocessing, load_image,
                            resolve_preprocessing)
from .runs import RunFolder, create_writable_folder
from .engine.compiling import compiled_metadata
from .serving import compile_model as compile, compiled_differences
from .graph_rules import Propagation, supported_ops
from .labels import Labels

__version__ = "0.1.0"

__all__ = ["Explainer", "Explanation", "compile", "compiled_differences", "compiled_metadata", "triton_config", "write_onnx",
           "write_triton_repository", "compare", "Comparison", "Tolerances", "TOLERANCES", "LayerInfo", "InputSpec", "CheckReport", "Labels",
           "Method", "METHODS", "MWP", "CMWP", "Propagation", "supported_ops", "cuda_unavailable", "max_point", "resize_map",
           "shape_text", "MIN_OPSET", "MAX_OPSET", "ImageMap", "explain_image", "explain_images",
           "load_image", "Preprocessing", "PRESETS", "MAX_IMAGE_PIXELS", "MAX_INPUT_PIXELS",
           "resolve_preprocessing", "FORMATS", "DEFAULT_FORMATS", "COLORMAPS", "OverlayStyle",
           "colorize", "overlay", "map_record", "read_summary", "write_map_files",
           "write_comparison_sheet", "write_contact_sheet", "write_json", "write_report", "write_summary", "RunFolder", "create_writable_folder", "OutputError", "Annotation", "PointingScores", "pointing", "read_voc", "read_coco",
           "read_class_mapping", "ExbpError", "InputError", "LayerError",
           "MethodError", "ModelError", "TargetError", "UnsupportedOpError", "__version__"]
