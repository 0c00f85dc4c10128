"""PNG: a heatmap of the map resized to the image, and an overlay of it on the image with a title
(class, probability, method, layer) and a colour bar; a contact sheet puts an image's overlays side
by side, one row per target, one column per method."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .atomic import write_atomically
from .colormaps import colorize, display_peak, lookup_table

METHOD_TITLES = {"mwp": "MWP", "cmwp": "c-MWP"}
SHEET_CELL = 256          # a contact sheet's overlays are scaled to this longer side


@dataclass(frozen=True)
class OverlayStyle:
    alpha: float = 0.5           # the heatmap's weight over the photo
    cmap: str = "inferno"
    annotate: bool = True        # title and colour bar around the overlay


def overlay(image: Image.Image, resized_map: np.ndarray, alpha: float = 0.5,
            cmap: str = "inferno") -> Image.Image:
    """The map (at the image's size) in its colour map, blended over the image with ``alpha``."""
    return _blend(image, colorize(resized_map, cmap), alpha)


def _blend(image: Image.Image, heat: np.ndarray, alpha: float) -> Image.Image:
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    blended = (1 - alpha) * photo + alpha * heat
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def title_of(image_map) -> str:
    method = METHOD_TITLES.get(image_map.method, image_map.method)
    return f"{image_map.label} ({image_map.probability:.1%}) · {method} at {image_map.layer}"


def annotated(picture: Image.Image, title: str, values: np.ndarray, cmap: str) -> Image.Image:
    """``picture`` with ``title`` above it and a colour bar (0 to the display peak) on its right."""
    font = ImageFont.load_default(size=max(10, min(16, picture.width // 24)))
    line = font.getbbox("Ag")[3] + 6
    signed = float(np.min(values, initial=0.0)) < 0
    peak = display_peak(values)
    top, bottom = f"{peak:.2g}", (f"{-peak:.2g}" if signed else "0")
    label_width = int(max(font.getlength(top), font.getlength(bottom))) + 4
    canvas = Image.new("RGB", (picture.width + 18 + label_width, picture.height + line), "white")
    canvas.paste(picture, (0, line))
    draw = ImageDraw.Draw(canvas)
    draw.text((3, 3), _fitted(title, font, canvas.width - 6), fill="black", font=font)
    table = lookup_table("diverging" if signed else cmap)
    column = table[np.linspace(255, 0, picture.height).astype(np.uint8)]        # top: the peak
    canvas.paste(Image.fromarray(np.repeat(column[:, None, :], 10, axis=1)), (picture.width + 4, line))
    draw.text((picture.width + 16, line), top, fill="black", font=font)
    draw.text((picture.width + 16, canvas.height - line + 2), bottom, fill="black", font=font)
    return canvas


def _fitted(text: str, font, width: int) -> str:
    while text and font.getlength(text) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def write_png(image_map, base: Path, style: OverlayStyle = OverlayStyle()) -> list[Path]:
    heat = colorize(image_map.resized, style.cmap)
    heatmap, blended = (base.with_name(base.name + suffix) for suffix in ("_heatmap.png", "_overlay.png"))
    _save(Image.fromarray(heat), heatmap)
    picture = _blend(image_map.image, heat, style.alpha)
    if style.annotate:
        picture = annotated(picture, title_of(image_map), image_map.resized, style.cmap)
    _save(picture, blended)
    return [heatmap, blended]


def write_contact_sheet(image_maps: Sequence, path: Path, style: OverlayStyle = OverlayStyle()) -> Path:
    """One image's overlays, a row per target and a column per method, each with its title."""
    targets = list(dict.fromkeys(m.target for m in image_maps))
    methods = list(dict.fromkeys(m.method for m in image_maps))
    cells = {}
    for image_map in image_maps:
        picture = overlay(image_map.image, image_map.resized, style.alpha, style.cmap)
        picture.thumbnail((SHEET_CELL, SHEET_CELL))
        cells[image_map.target, image_map.method] = annotated(
            picture, title_of(image_map), image_map.resized, style.cmap)
    return _save(_grid(cells, targets, methods), path)


def write_comparison_sheet(image: Image.Image, maps: dict, names: tuple[str, str], path: Path,
                           style: OverlayStyle = OverlayStyle()) -> Path:
    """Two models' maps of one image and target side by side, a row per method: model A's, model
    B's, and |A - B| on A's scale (a difference of 1 is A's peak)."""
    cells = {}
    for method, (a, b) in maps.items():
        title = METHOD_TITLES.get(method, method)
        peak = display_peak(a) or 1.0
        for column, (values, caption) in enumerate(((a, f"A {names[0]}"), (b, f"B {names[1]}"),
                                                    (np.abs(a - b) / peak, "|A - B| / A's peak"))):
            picture = overlay(image, values, style.alpha, style.cmap)
            factor = SHEET_CELL / max(picture.size)      # small inputs are shown larger too
            picture = picture.resize((round(picture.width * factor), round(picture.height * factor)))
            cells[method, column] = annotated(picture, f"{title} · {caption}", values, style.cmap)
    return _save(_grid(cells, list(maps), [0, 1, 2]), path)


def _grid(cells: dict, rows: list, columns: list) -> Image.Image:
    """``cells`` keyed by (row, column), pasted in a white sheet in that order."""
    width = max(cell.width for cell in cells.values())
    height = max(cell.height for cell in cells.values())
    sheet = Image.new("RGB", (width * len(columns), height * len(rows)), "white")
    for (row, column), cell in cells.items():
        sheet.paste(cell, (columns.index(column) * width, rows.index(row) * height))
    return sheet


def _save(picture: Image.Image, path: Path) -> Path:
    return write_atomically(path, lambda file: picture.save(file, format="PNG"))
