"""Writers of results, one per format. Per-map formats take (ImageMap, base path) and return the
files they wrote; the run's ``json`` summary is written once by :func:`write_summary`."""

from .colormaps import colorize
from .npy_writer import write_npy
from .png_writer import overlay, write_png
from .summary_writer import map_record, write_summary

MAP_WRITERS = {"png": write_png, "npy": write_npy}
FORMATS = ("png", "npy", "json")


def write_map_files(image_map, base, formats=FORMATS) -> list:
    """Every per-map file of ``formats`` for one map, named from ``base``; the files written."""
    return [path for fmt in formats if fmt in MAP_WRITERS for path in MAP_WRITERS[fmt](image_map, base)]


__all__ = ["FORMATS", "MAP_WRITERS", "colorize", "map_record", "overlay", "write_map_files",
           "write_npy", "write_png", "write_summary"]
