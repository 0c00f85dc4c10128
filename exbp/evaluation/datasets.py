"""Reading annotated images for the pointing game: Pascal VOC (Annotations/*.xml, JPEGImages, an
ImageSets/Main list) and COCO (an instances JSON and its images folder), into one form."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

Box = tuple[float, float, float, float]        # (x0, y0, x1, y1) in image pixels, inclusive


@dataclass(frozen=True)
class Annotation:
    image: Path
    width: int
    height: int
    boxes: dict[str, list[Box]]                                  # class -> every instance's box
    all_difficult: frozenset[str] = field(default_factory=frozenset)   # VOC: classes whose every box is "difficult"


def read_voc(root: Path, image_set: str = "test") -> list[Annotation]:
    root = Path(root)
    listing = root / "ImageSets" / "Main" / f"{image_set}.txt"
    try:
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise InputError(f"VOC image list {listing} cannot be read ({exc.strerror or exc}); give the "
                         "dataset's root folder (Annotations, JPEGImages, ImageSets/Main)") from None
    return [_voc_annotation(root, image_id) for image_id in ids]


def _voc_annotation(root: Path, image_id: str) -> Annotation:
    path = root / "Annotations" / f"{image_id}.xml"
    try:
        tree = ElementTree.parse(path).getroot()
        size = tree.find("size")
        width, height = int(size.findtext("width")), int(size.findtext("height"))
        boxes: dict[str, list[Box]] = {}
        difficult: dict[str, list[bool]] = {}
        for obj in tree.iter("object"):
            name = obj.findtext("name").strip()
            box = obj.find("bndbox")
            # VOC's pixel coordinates start at 1
            boxes.setdefault(name, []).append(tuple(float(box.findtext(k)) - 1 for k in ("xmin", "ymin", "xmax", "ymax")))
            difficult.setdefault(name, []).append(obj.findtext("difficult", "0").strip() == "1")
    except (OSError, ElementTree.ParseError, AttributeError, TypeError, ValueError) as exc:
        raise InputError(f"VOC annotation {path} cannot be read ({exc}); give a VOC-format XML file") from None
    filename = tree.findtext("filename") or f"{image_id}.jpg"
    return Annotation(root / "JPEGImages" / filename, width, height, boxes,
                      frozenset(name for name, flags in difficult.items() if all(flags)))


def read_coco(instances: Path, images: Path) -> list[Annotation]:
    try:
        data = json.loads(Path(instances).read_text())
        names = {c["id"]: c["name"] for c in data["categories"]}
        boxes: dict[int, dict[str, list[Box]]] = {}
        for item in data["annotations"]:
            x, y, w, h = item["bbox"]
            boxes.setdefault(item["image_id"], {}).setdefault(names[item["category_id"]], []).append(
                (x, y, x + w - 1, y + h - 1))
        return [Annotation(Path(images) / image["file_name"], int(image["width"]), int(image["height"]),
                           boxes.get(image["id"], {})) for image in data["images"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"COCO instances {instances} cannot be read ({exc}); give an instances JSON "
                         "with images, annotations and categories") from None


def read_class_mapping(path: Path) -> dict[str, str]:
    """Lines ``dataset class: model class`` (a model class index or name)."""
    mapping = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"class mapping {path} cannot be read ({exc.strerror or exc}); give a file of "
                         "'dataset class: model class' lines") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if ":" not in line:
            raise InputError(f"class mapping {path}, line {number} ({line.strip()!r}) is not "
                             "'dataset class: model class'")
        dataset_class, model_class = (part.strip() for part in line.split(":", 1))
        mapping[dataset_class] = model_class
    return mapping
