"""A synthetic multi-object set for the pointing game (docs/method.md §6) that runs anywhere.

Each image (``SIZE`` × ``SIZE`` pixels) holds 1–3 objects of distinct classes on a textured
background, with class-less clutter around them. A class is a shape with its own inside pattern:

    disc      a filled ellipse              ring      an ellipse with a hole
    square    a filled rectangle            frame     a rectangle with a hole
    triangle  pointing up                   stripes   a rectangle of five horizontal bands
    cross     a plus sign                   checker   a rectangle of 4 × 4 checks

Its colour is a hint, not the answer: an object takes its class's hue (±20°) with probability
``CLASS_HUE_P``, any hue otherwise, and the clutter (lines, zigzags, blobs of discs) takes any hue,
so a classifier has to see the shape — evidence that lies on the object. Objects are drawn as
binary masks, never overlap one another (they may cover clutter, which is drawn first), and each
box is the exact extent of its object's visible pixels, so an object's pixels lie inside its box
and touch all four sides.

Sizes: large objects are 40–72 px, medium 24–40, small 14–22. The pointing game's 15 px tolerance
is in image pixels; at 160 px it is 9% of the side (VOC's ~500 × 375 images make it 3–4%), so a
small object's hit region (its box grown by 15 px) is under a tenth of the image. Objects are
placed uniformly, not framed as photographs are, so the centre baseline hits far less often than on
VOC (about a quarter of the pairs against VOC's 69.5 %). An image that holds a small object gets more clutter; the
game's own *difficult* subset (a class whose boxes cover under a quarter of the image while another
class is present) is mostly these. As in VOC, an object cut by the image border to under half of
itself is marked ``difficult`` (and ``truncated``), and the game skips it.

Everything follows from ``(seed, index)``: image ``index`` of a split is the same whatever the
split's size. :func:`scene` draws the description, :func:`render` paints it, :func:`generate`
writes a VOC layout (Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/<split>.txt) and a COCO
instances JSON (annotations/instances_<split>.json) for the same images.

    python -m exbp.evaluation.synthetic ROOT --count 80 --seed 3 --split test
"""

from __future__ import annotations

import argparse
import colorsys
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

CLASSES = ("disc", "square", "triangle", "cross", "ring", "frame", "stripes", "checker")
SIZE = 160
SIZES = {"large": (40, 72), "medium": (24, 40), "small": (14, 22)}
CLASS_HUE_P = 0.6
TRUNCATED_P = 0.06
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Shape:
    kind: str                               # a class name, or a clutter kind ("line", "zigzag", "blob")
    x0: float                               # the shape's frame in image pixels (may leave the image)
    y0: float
    width: float
    height: float
    colour: tuple[float, float, float]      # RGB 0–255
    points: tuple = ()                      # clutter: its polyline or its discs (x, y, r)
    thickness: float = 0.0


@dataclass(frozen=True)
class Background:
    kind: str                               # "field", "gradient" or "stripes"
    colours: tuple                          # RGB triples
    params: tuple                           # kind-specific numbers
    noise_seed: int


@dataclass(frozen=True)
class Scene:
    size: int
    background: Background
    clutter: tuple[Shape, ...]
    objects: tuple[Shape, ...]


@dataclass(frozen=True)
class Instance:
    name: str
    box: tuple[int, int, int, int]           # (x0, y0, x1, y1), 0-based, inclusive
    difficult: bool
    truncated: bool


# ---- drawing the description ---------------------------------------------------------------------

def _colour(rng, hue: Optional[float] = None, saturation=(0.65, 1.0), value=(0.65, 1.0)):
    hue = rng.uniform(0, 1) if hue is None else (hue + rng.uniform(-20, 20) / 360) % 1.0
    return tuple(255 * c for c in colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value)))


def _class_hue(name: str) -> float:
    return CLASSES.index(name) / len(CLASSES)


def _background(rng, size: int) -> Background:
    kind = ("field", "gradient", "stripes")[int(rng.integers(3))]
    colours = tuple(_colour(rng, saturation=(0.0, 0.4), value=(0.2, 0.8)) for _ in range(2))
    if kind == "field":
        params = (int(rng.integers(3, 7)),)                       # the coarse grid's cells per side
    elif kind == "gradient":
        params = (float(rng.uniform(0, 2 * np.pi)),)              # its direction
    else:
        params = (float(rng.uniform(0, np.pi)), float(rng.uniform(8, 24)))   # angle, period in px
    return Background(kind, colours, params, int(rng.integers(2**31)))


def _clutter(rng, size: int) -> Shape:
    kind = ("line", "zigzag", "blob")[int(rng.integers(3))]
    colour = _colour(rng, saturation=(0.4, 1.0), value=(0.4, 1.0))
    x, y = rng.uniform(0, size, 2)
    if kind == "blob":
        points = tuple((x + dx, y + dy, r) for dx, dy, r in
                       zip(rng.uniform(-5, 5, 3), rng.uniform(-5, 5, 3), rng.uniform(2, 5, 3)))
        thickness = 0.0
    else:
        steps = 1 if kind == "line" else int(rng.integers(3, 6))
        length = rng.uniform(12, 36) / steps
        angle, points = rng.uniform(0, 2 * np.pi), [(x, y)]
        for step in range(steps):
            turn = angle + (0.0 if kind == "line" else (1 if step % 2 else -1) * rng.uniform(0.6, 1.3))
            x, y = x + length * np.cos(turn), y + length * np.sin(turn)
            points.append((x, y))
        points, thickness = tuple(points), float(rng.uniform(1.5, 3.5))
    return Shape(kind, 0, 0, 0, 0, colour, points, thickness)


def _place(rng, size: int, width: float, height: float, taken: list, truncated: bool):
    """A frame for an object that keeps 4 px from every taken frame; None after 60 tries."""
    for _ in range(60):
        if truncated:   # half to two thirds of it outside, across one border
            side = int(rng.integers(4))
            out = rng.uniform(0.5, 0.67)
            x0 = rng.uniform(0, size - width)
            y0 = rng.uniform(0, size - height)
            x0 = {0: -out * width, 1: size - (1 - out) * width}.get(side, x0)
            y0 = {2: -out * height, 3: size - (1 - out) * height}.get(side, y0)
        else:
            x0, y0 = rng.uniform(0, size - width), rng.uniform(0, size - height)
        frame = (x0, y0, x0 + width, y0 + height)
        if all(frame[2] + 4 <= t[0] or t[2] + 4 <= frame[0] or frame[3] + 4 <= t[1] or t[3] + 4 <= frame[1]
               for t in taken):
            taken.append(frame)
            return x0, y0
    return None


def scene(seed: int, index: int, size: int = SIZE) -> Scene:
    """Image ``index`` of the split drawn from ``seed``: its description, not yet painted."""
    rng = np.random.default_rng([seed, index])
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    names = [CLASSES[i] for i in rng.permutation(len(CLASSES))[:count]]
    scale = size / SIZE
    objects, taken, small = [], [], False
    for name in names:
        band = str(rng.choice(["large", "medium", "small"], p=[0.3, 0.35, 0.35]))
        side = rng.uniform(*SIZES[band]) * scale
        aspect = rng.uniform(0.8, 1.25)
        width, height = side * np.sqrt(aspect), side / np.sqrt(aspect)
        truncated = band != "small" and rng.uniform() < TRUNCATED_P
        at = _place(rng, size, width, height, taken, truncated)
        if at is None:
            continue
        small |= band == "small"
        hue = _class_hue(name) if rng.uniform() < CLASS_HUE_P else None
        objects.append(Shape(name, at[0], at[1], width, height, _colour(rng, hue)))
    clutter = tuple(_clutter(rng, size) for _ in range(int(rng.integers(4, 9) if small else rng.integers(0, 4))))
    return Scene(size, _background(rng, size), clutter, tuple(objects))


# ---- painting it ---------------------------------------------------------------------------------

def _paint_background(background: Background, size: int) -> np.ndarray:
    rng = np.random.default_rng(background.noise_seed)
    first, second = (np.asarray(c, np.float32) for c in background.colours)
    rows, columns = np.mgrid[:size, :size].astype(np.float32) + 0.5
    if background.kind == "field":
        cells = background.params[0]
        coarse = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
        weight = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC))
    elif background.kind == "gradient":
        angle = background.params[0]
        along = (columns - size / 2) * np.cos(angle) + (rows - size / 2) * np.sin(angle)
        weight = along / size + 0.5
    else:
        angle, period = background.params
        along = columns * np.cos(angle) + rows * np.sin(angle)
        weight = 0.5 + 0.5 * np.sin(2 * np.pi * along / period)
    weight = np.clip(weight, 0, 1)[..., None]
    pixels = first * (1 - weight) + second * weight
    return pixels + rng.normal(0, 5, pixels.shape).astype(np.float32)


def _segment_mask(rows, columns, a, b, thickness) -> np.ndarray:
    (xa, ya), (xb, yb) = a, b
    dx, dy = xb - xa, yb - ya
    t = np.clip(((columns - xa) * dx + (rows - ya) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    return np.hypot(columns - (xa + t * dx), rows - (ya + t * dy)) <= thickness / 2


def _clutter_mask(shape: Shape, rows, columns) -> np.ndarray:
    mask = np.zeros(rows.shape, bool)
    if shape.kind == "blob":
        for x, y, r in shape.points:
            mask |= np.hypot(columns - x, rows - y) <= r
    else:
        for a, b in zip(shape.points[:-1], shape.points[1:]):
            mask |= _segment_mask(rows, columns, a, b, shape.thickness)
    return mask


def object_mask(shape: Shape, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask, dark) over the image: the object's pixels, and those of them in its darker colour."""
    rows, columns = np.mgrid[:size, :size].astype(np.float32) + 0.5
    u = (columns - shape.x0) / shape.width * 2 - 1          # −1 … 1 across the frame
    v = (rows - shape.y0) / shape.height * 2 - 1
    inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    r = np.hypot(u, v)
    dark = np.zeros_like(inside)
    kind = shape.kind
    if kind == "disc":
        mask = r <= 1
    elif kind == "ring":
        mask = (r <= 1) & (r >= 0.55)
    elif kind == "square":
        mask = inside
    elif kind == "frame":
        mask = inside & ((np.abs(u) >= 0.55) | (np.abs(v) >= 0.55))
    elif kind == "triangle":
        mask = inside & (np.abs(u) <= (v + 1) / 2)
    elif kind == "cross":
        mask = inside & ((np.abs(u) <= 0.3) | (np.abs(v) <= 0.3))
    elif kind == "stripes":
        mask = inside
        dark = inside & (np.floor((v + 1) * 2.5).astype(int) % 2 == 1)
    elif kind == "checker":
        mask = inside
        dark = inside & ((np.floor((u + 1) * 2).astype(int) + np.floor((v + 1) * 2).astype(int)) % 2 == 1)
    else:
        raise ValueError(f"no such class {kind!r}; the classes are {', '.join(CLASSES)}")
    return mask, dark & mask


def render(scene: Scene, omit: Iterable[int] = ()) -> np.ndarray:
    """The image (size, size, 3) uint8; the objects whose indices are in ``omit`` left out."""
    size = scene.size
    pixels = _paint_background(scene.background, size)
    rows, columns = np.mgrid[:size, :size].astype(np.float32) + 0.5
    for shape in scene.clutter:
        pixels[_clutter_mask(shape, rows, columns)] = shape.colour
    omit = set(omit)
    for number, shape in enumerate(scene.objects):
        if number in omit:
            continue
        mask, dark = object_mask(shape, size)
        colour = np.asarray(shape.colour, np.float32)
        pixels[mask] = colour
        pixels[dark] = colour * 0.45
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def instances(scene: Scene) -> list[Instance]:
    """Each object's class, its exact box (the extent of its visible pixels), and its VOC flags."""
    found = []
    for shape in scene.objects:
        mask, _ = object_mask(shape, scene.size)
        ys, xs = np.nonzero(mask)
        if not xs.size:
            continue
        truncated = shape.x0 < 0 or shape.y0 < 0 or shape.x0 + shape.width > scene.size \
            or shape.y0 + shape.height > scene.size
        whole, _ = object_mask(Shape(shape.kind, 1.0, 1.0, shape.width, shape.height, shape.colour),
                               int(np.ceil(max(shape.width, shape.height))) + 2)
        difficult = truncated and xs.size < 0.5 * whole.sum()
        found.append(Instance(shape.kind, (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())),
                              bool(difficult), bool(truncated)))
    return found


# ---- writing a split -----------------------------------------------------------------------------

def _voc_xml(image_id: str, filename: str, size: int, found: list[Instance]) -> str:
    objects = "".join(
        f"  <object>\n    <name>{escape(i.name)}</name>\n    <pose>Unspecified</pose>\n"
        f"    <truncated>{int(i.truncated)}</truncated>\n    <difficult>{int(i.difficult)}</difficult>\n"
        f"    <bndbox>\n      <xmin>{i.box[0] + 1}</xmin>\n      <ymin>{i.box[1] + 1}</ymin>\n"
        f"      <xmax>{i.box[2] + 1}</xmax>\n      <ymax>{i.box[3] + 1}</ymax>\n    </bndbox>\n  </object>\n"
        for i in found)
    return (f"<annotation>\n  <folder>synthetic</folder>\n  <filename>{filename}</filename>\n"
            f"  <size>\n    <width>{size}</width>\n    <height>{size}</height>\n    <depth>3</depth>\n  </size>\n"
            f"  <segmented>0</segmented>\n{objects}</annotation>\n")


def generate(root: Path, count: int, seed: int = 0, split: str = "test", size: int = SIZE,
             image_format: str = "jpg") -> list[str]:
    """Write ``count`` images of the split drawn from ``seed`` under ``root`` as a VOC layout and a
    COCO instances JSON; returns the image ids. ``image_format``: "jpg" (quality 90) or "png"."""
    if count < 1:
        raise ValueError(f"count is {count}; give at least 1 image")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image format {image_format!r}; give 'jpg' or 'png'")
    root = Path(root)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main", "annotations"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    ids, images, annotations = [], [], []
    for index in range(count):
        drawn = scene(seed, index, size)
        image_id = f"{split}_{index:05d}"
        filename = f"{image_id}.{image_format}"
        picture = Image.fromarray(render(drawn))
        if image_format == "jpg":
            picture.save(root / "JPEGImages" / filename, quality=JPEG_QUALITY)
        else:
            picture.save(root / "JPEGImages" / filename)
        found = instances(drawn)
        (root / "Annotations" / f"{image_id}.xml").write_text(_voc_xml(image_id, filename, size, found))
        images.append({"id": index + 1, "file_name": filename, "width": size, "height": size})
        for i in found:
            if i.difficult:     # COCO has no difficult flag; its crowd flag means something else
                continue
            x0, y0, x1, y1 = i.box
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": CLASSES.index(i.name) + 1, "iscrowd": 0,
                                "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                                "area": (x1 - x0 + 1) * (y1 - y0 + 1)})
        ids.append(image_id)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    categories = [{"id": number + 1, "name": name, "supercategory": "shape"} for number, name in enumerate(CLASSES)]
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
        {"info": {"description": f"exbp synthetic shapes, split {split!r}, seed {seed}"},
         "images": images, "annotations": annotations, "categories": categories}, indent=1) + "\n")
    return ids


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exbp.evaluation.synthetic",
                                     description="Write a synthetic multi-object split (VOC and COCO layouts).")
    parser.add_argument("root", type=Path, help="the dataset's root folder")
    parser.add_argument("--count", type=int, default=80, help="images (default 80)")
    parser.add_argument("--seed", type=int, default=0, help="the split's seed (default 0)")
    parser.add_argument("--split", default="test", help="the ImageSets/Main list's name (default test)")
    parser.add_argument("--size", type=int, default=SIZE, help=f"image side in px (default {SIZE})")
    parser.add_argument("--format", dest="image_format", choices=("jpg", "png"), default="jpg")
    args = parser.parse_args(argv)
    try:
        ids = generate(args.root, args.count, args.seed, args.split, args.size, args.image_format)
    except (ValueError, OSError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(f"wrote {len(ids)} images to {args.root} (VOC: ImageSets/Main/{args.split}.txt; "
          f"COCO: annotations/instances_{args.split}.json)")


if __name__ == "__main__":
    main()
