"""Writers of results, one per format. Per-map formats take (ImageMap, base path) and return the
files they wrote; the run's ``json`` summary is written once by :func:`write_summary`."""

from .npy_writer import write_npy
from .png_writer import write_png
from .summary_writer import map_record, write_summary

MAP_WRITERS = {"png": write_png, "npy": write_npy}
FORMATS = ("png", "npy", "json")

__all__ = ["FORMATS", "MAP_WRITERS", "map_record", "write_npy", "write_png", "write_summary"]
