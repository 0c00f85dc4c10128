"""Writers of results, one per format. Per-map formats take (ImageMap, base path, style) and
return the files they wrote; the run's ``json`` summary is written by :func:`write_summary`, the
contact sheet and the HTML report once per image and per run. Every file is written atomically."""

from .colormaps import COLORMAPS, colorize
from .npy_writer import write_npy, write_resized_npy
from .png_writer import OverlayStyle, overlay, write_comparison_sheet, write_contact_sheet, write_png
from .report_writer import write_report
from .summary_writer import map_record, read_summary, write_json, write_summary
from .onnx_writer import write_onnx
from .triton_writer import triton_config, write_triton_repository

MAP_WRITERS = {"png": write_png, "npy": write_npy, "npy-resized": write_resized_npy}
FORMATS = ("png", "npy", "npy-resized", "json")
DEFAULT_FORMATS = ("png", "npy", "json")


def write_map_files(image_map, base, formats=DEFAULT_FORMATS, style: OverlayStyle = OverlayStyle()) -> list:
    """Every per-map file of ``formats`` for one map, named from ``base``; the files written."""
    return [path for fmt in formats if fmt in MAP_WRITERS
            for path in MAP_WRITERS[fmt](image_map, base, style)]


__all__ = ["COLORMAPS", "DEFAULT_FORMATS", "FORMATS", "MAP_WRITERS", "OverlayStyle", "colorize",
           "map_record", "overlay", "read_summary", "write_comparison_sheet", "write_contact_sheet", "write_map_files",
           "write_json", "write_npy", "write_png", "write_report", "write_resized_npy", "write_summary",
           "triton_config", "write_onnx", "write_triton_repository"]
