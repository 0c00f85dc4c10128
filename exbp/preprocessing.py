"""From image files to the array a model takes.

An image is read with Pillow (JPEG, PNG and anything else it reads; grayscale, palette and RGBA
images are converted to the model's 1 or 3 channels), resized to exactly the model's input size
(H×W, not cropped, so every map covers the whole image), then for each pixel value p in 0–255:

    value = (p · scale − mean) / std        in the model's channel order (RGB, or BGR with bgr)

(a grayscale model given a three-value mean or std uses their average; 16-bit images are brought
to the same 0–255 range, not clipped)

and laid out as (1, C, H, W), or (1, H, W, C) for ``layout="nhwc"``.

Settings come, in increasing priority, from: the ``imagenet`` preset, or the model's own
``metadata_props`` when it has any of the keys below, or an explicitly chosen preset; then
individual values given by the caller. Metadata keys (values use the same text as the CLI flags):

    exbp.size     "224x224"              exbp.scale    "1/255" or "0.00392"
    exbp.mean     "0.485,0.456,0.406"     exbp.std      "0.229,0.224,0.225"
    exbp.bgr      "true" / "false"        exbp.layout   "nchw" / "nhwc"
    exbp.labels   one class name per line (see :mod:`exbp.labels`)
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from .engine.inputs import looks_channels_last
from .engine.report import shape_text
from .errors import InputError, first_line

METADATA_PREFIX = "exbp."
# Caps that keep a hostile or mistaken input from exhausting memory (configurable per call):
# an image file's pixels, and the size images are resized to for the model.
MAX_IMAGE_PIXELS = 100_000_000
MAX_INPUT_PIXELS = 16_777_216          # 4096 × 4096
SETTINGS = ("size", "mean", "std", "scale", "bgr", "layout")
LAYOUTS = ("nchw", "nhwc")


@dataclass(frozen=True)
class Preprocessing:
    size: Optional[tuple[int, int]] = None     # (H, W); None keeps each image's own size
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0
    bgr: bool = False
    layout: Optional[str] = None               # "nchw" or "nhwc"; None: as the model's input shape says
    max_pixels: int = MAX_INPUT_PIXELS         # the largest H·W images are resized to

    def channels_for(self, model_input_shape) -> int:
        """The channels a model of this input shape takes, in this layout (3 where unknown)."""
        return model_channels(model_input_shape, self.layout)

    def input_shape(self, model_input_shape) -> Optional[tuple[int, ...]]:
        """The shape of one preprocessed image for the model, or None when the size follows each
        image."""
        if self.size is None:
            return None
        channels = self.channels_for(model_input_shape)
        return (1, channels) + self.size if self.layout == "nchw" else (1,) + self.size + (channels,)

    def validate(self, channels: int, model_input_shape=None) -> None:
        """InputError unless images can become inputs of ``channels`` channels (of a model with
        ``model_input_shape``, when given: its fixed sizes must match, the layout must fit)."""
        shape = tuple(model_input_shape or ())
        if channels not in (1, 3):
            other = "nhwc" if self.layout == "nchw" else "nchw"
            if len(shape) == 4 and model_channels(shape, other) in (1, 3):
                raise InputError(f"the model's input {shape_text(shape)} is laid out {other}, not "
                                 f"{self.layout}: with {self.layout} it would take {channels} "
                                 f"channels; use layout {other}")
            raise InputError(f"the model's input takes {channels} channels; exbp reads images as "
                             "1 (grayscale) or 3 (RGB) channels")
        for name, values in (("mean", self.mean), ("std", self.std)):
            _per_channel(values, channels, name)
        if self.size is not None:
            height, width = self.size
            if height * width > self.max_pixels:
                raise InputError(f"size {height}x{width} is {height * width} pixels, above the cap "
                                 f"of {self.max_pixels}; give a smaller size or raise the cap")
            fixed = self._fixed_size(shape)
            if fixed is not None and any(d is not None and d != s for d, s in zip(fixed, self.size)):
                raise InputError(f"size {height}x{width} does not fit the model, whose input "
                                 f"{shape_text(shape)} is fixed at {fixed[0]}x{fixed[1]}; drop "
                                 "the size or give that one")

    def _fixed_size(self, shape) -> Optional[tuple]:
        if len(shape) != 4:
            return None
        spatial = shape[2:] if self.layout == "nchw" else shape[1:3]
        return tuple(d if isinstance(d, int) and d > 0 else None for d in spatial)

    def to_input(self, image: Image.Image, channels: int) -> np.ndarray:
        """The model input (1, C, H, W) or (1, H, W, C) for one image."""
        self.validate(channels)
        image = _eight_bit_range(image).convert("L" if channels == 1 else "RGB")
        if self.size is None and image.width * image.height > self.max_pixels:
            raise InputError(f"the image is {image.width}x{image.height}, above the cap of "
                             f"{self.max_pixels} pixels for the model's input; give a size")
        if self.size is not None and image.size != (self.size[1], self.size[0]):
            image = image.resize((self.size[1], self.size[0]), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32).reshape(image.height, image.width, channels)
        if self.bgr and channels == 3:
            pixels = pixels[..., ::-1]
        mean, std = (_per_channel(v, channels, n) for v, n in ((self.mean, "mean"), (self.std, "std")))
        values = (pixels * np.float32(self.scale) - mean) / std
        if self.layout != "nhwc":
            values = values.transpose(2, 0, 1)
        return np.ascontiguousarray(values[None], dtype=np.float32)


def _eight_bit_range(image: Image.Image) -> Image.Image:
    """16- and 32-bit single-channel images scaled to 0–255 (Pillow's conversion to RGB or L would
    clip them at 255); float images are taken to be in 0–1 when their maximum is ≤ 1."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image, dtype=np.float64)
    peak = float(values.max(initial=0.0))
    if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
        values = values / 257.0
    elif image.mode == "F" and peak <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _per_channel(values: tuple[float, ...], channels: int, name: str) -> np.ndarray:
    """One value per channel; a grayscale model takes the average of an RGB triple."""
    if len(values) in (1, channels):
        return np.asarray(values, dtype=np.float32)
    if channels == 1 and len(values) == 3:
        return np.asarray([sum(values) / 3], dtype=np.float32)
    raise InputError(f"{name} has {len(values)} values; the model's input has {channels} "
                     f"channels: give 1 or {channels}")


PRESETS = {
    "imagenet": Preprocessing(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1 / 255),
    "caffe": Preprocessing(mean=(103.939, 116.779, 123.68), bgr=True),   # (B, G, R), 0–255
    "none": Preprocessing(),
}


def parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
        if height > 0 and width > 0:
            return height, width
    except ValueError:
        pass
    raise InputError(f"size {text!r} is not HxW (for example 224x224)")


def parse_floats(text: str, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"{name} {text!r} is not comma-separated numbers "
                         "(for example 0.485,0.456,0.406)") from None
    if name == "std" and any(v == 0 for v in values):
        raise InputError(f"std {text!r} contains 0; give non-zero values")
    return values


def parse_scale(text: str) -> float:
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise InputError(f"scale {text!r} is not a number or fraction (for example 1/255)") from None
    if value <= 0:
        raise InputError(f"scale {text!r} must be positive")
    return value


def parse_bool(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise InputError(f"{name} {text!r} is not true or false")


def parse_layout(text: str) -> str:
    if text.lower() not in LAYOUTS:
        raise InputError(f"layout {text!r} is not one of {', '.join(LAYOUTS)}")
    return text.lower()


_PARSERS = {"size": parse_size, "mean": lambda t: parse_floats(t, "mean"),
            "std": lambda t: parse_floats(t, "std"), "scale": parse_scale,
            "bgr": lambda t: parse_bool(t, "bgr"), "layout": parse_layout}


def metadata_settings(metadata: Mapping[str, str]) -> dict:
    """The preprocessing settings a model carries in its metadata_props."""
    settings = {}
    for key in SETTINGS:
        text = metadata.get(METADATA_PREFIX + key)
        if text is not None:
            try:
                settings[key] = _PARSERS[key](text)
            except InputError as exc:
                raise InputError(f"the model's metadata {METADATA_PREFIX}{key}: {exc}") from None
    return settings


def resolve_preprocessing(model_input, metadata: Mapping[str, str],
                          preset: Optional[str] = None, **overrides) -> Preprocessing:
    """The settings for a model: the preset if one is named, else the model's metadata over the
    imagenet preset; then ``overrides`` (None values ignored; text is parsed as the metadata's
    and the CLI flags' values are, e.g. ``size="224x224"``, ``scale="1/255"``). Size and layout
    not set by any of these follow the model's input: ``model_input`` is the Explainer's
    ``input_spec`` (whose layout is derived from what the graph does with the input) or, less
    surely, a bare input shape (channels last when only its last axis has 1 or 3 entries)."""
    if preset is not None and preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    unknown = set(overrides) - set(SETTINGS) - {"max_pixels"}
    if unknown:
        raise InputError(f"unknown preprocessing setting {sorted(unknown)[0]!r}; use "
                         f"{', '.join(SETTINGS)} or max_pixels")
    settings = PRESETS[preset] if preset else replace(PRESETS["imagenet"], **metadata_settings(metadata))
    settings = replace(settings, **{k: _PARSERS[k](v) if isinstance(v, str) and k in _PARSERS else v
                                    for k, v in overrides.items() if v is not None})
    shape = tuple(getattr(model_input, "shape", model_input) or ())
    derived = getattr(model_input, "channels_last", None)
    channels_last = looks_channels_last(shape) if derived is None else derived
    layout = settings.layout or ("nhwc" if channels_last else "nchw")
    size = settings.size
    if size is None and len(shape) == 4:
        spatial = shape[2:] if layout == "nchw" else shape[1:3]
        if all(isinstance(d, int) and d > 0 for d in spatial):
            size = tuple(spatial)
    return replace(settings, layout=layout, size=size)



def model_channels(model_input_shape, layout: str) -> int:
    shape = tuple(model_input_shape or ())
    if len(shape) != 4:
        raise InputError(f"the model's input has shape {shape}; exbp reads images into "
                         "4-D inputs (N, C, H, W) or (N, H, W, C)")
    channels = shape[1] if layout == "nchw" else shape[3]
    return channels if isinstance(channels, int) and channels > 0 else 3


def load_image(path: str | Path | bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """The image at ``path`` (or in ``bytes``, an upload), fully decoded; InputError (one line) if
    it cannot be read or has more than ``max_pixels`` pixels (checked from its header, before
    decoding)."""
    if isinstance(path, (bytes, bytearray)):
        source, path = io.BytesIO(path), "the uploaded image"
        if not source.getbuffer().nbytes:
            raise InputError("the uploaded image is empty; send an image file")
    else:
        path = source = Path(path)
        if not path.is_file():
            raise InputError((f"image {path} does not exist" if not path.exists()
                              else f"image path {path} is not a file") + "; give the path of an image file")
    try:
        with warnings.catch_warnings():
            # exbp's own cap below replaces Pillow's decompression-bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                if image.width * image.height > max_pixels:
                    raise InputError(f"image {path} is {image.width}x{image.height}, above the cap "
                                     f"of {max_pixels} pixels; resize it or raise the cap")
                image.load()
                return image.copy()
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image Pillow can read (JPEG, PNG, BMP, TIFF, ...)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"image {path} is above the cap of {max_pixels} pixels, beyond what Pillow "
                         f"will decode ({first_line(exc)}); resize it") from None
    except (OSError, ValueError, SyntaxError, MemoryError) as exc:
        raise InputError(f"image {path} could not be read ({first_line(exc)}); give a complete "
                         "image file (JPEG, PNG, BMP, TIFF, ...)") from None

