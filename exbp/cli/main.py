"""The ``exbp`` command: parse, call the public API, report.

Exit codes: 0 success; 1 an error that stops the run (model, labels, options, targets, layer);
2 a usage error; 3 some images failed — the others were written, and summary.json lists both.
"""

from __future__ import annotations

import sys
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Optional

import click
import numpy as np
from PIL import Image

from .. import Explainer, ExbpError, __version__
from ..engine.backends import cuda_unavailable
from ..engine.loading import MAX_OPSET, MIN_OPSET
from ..engine.targets import resolve_targets
from ..exporters import FORMATS, MAP_WRITERS, map_record, write_summary
from ..graph_rules import rule_for, supported_ops
from ..image_maps import explain_image
from ..labels import Labels
from ..preprocessing import (PRESETS, Preprocessing, model_channels, parse_floats, parse_layout,
                             parse_scale, parse_size, resolve_preprocessing)

PARTIAL_FAILURE = 3
METHOD_CHOICES = {"mwp": ("mwp",), "cmwp": ("cmwp",), "both": ("mwp", "cmwp")}
DEMO_TARGETS = {"chelsea.png": ("top1", "tabby cat"), "coffee.png": ("top1", "cup")}


@click.group()
@click.version_option(__version__, prog_name="exbp")
def cli():
    """Excitation Backprop attention maps (MWP, c-MWP) for ONNX CNNs."""


model_argument = click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))


def _load(model: Path, device: str = "cpu") -> Explainer:
    try:
        explainer = Explainer(model, device=device)
    except ExbpError as exc:
        raise click.ClickException(str(exc)) from None
    if device == "auto":
        reason = cuda_unavailable()
        click.echo(f"device: {explainer.device}" + (f" ({reason})" if reason else ""), err=True)
    return explainer


@cli.command()
@model_argument
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--target", "targets", multiple=True, metavar="CLASS",
              help="A class index, a class name (when labels are known), top1 (default) or topK. "
                   "Repeat for several.")
@click.option("--method", type=click.Choice(sorted(METHOD_CHOICES)), default="both", show_default=True)
@click.option("--layer", metavar="NAME", help="Tensor or node to map (see `exbp layers`); "
                                               "default: about 1/8 to 1/16 of the input size.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("exbp-out"),
              show_default=True, help="Output folder.")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS),
              help="Repeat to choose several; default: all.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)),
              help="Preprocessing preset; default: the model's metadata, else imagenet.")
@click.option("--size", metavar="HxW", help="Resize images to H×W (default: the model's input size).")
@click.option("--mean", metavar="M1,M2,M3", help="Per-channel mean, in the model's channel order.")
@click.option("--std", metavar="S1,S2,S3", help="Per-channel standard deviation.")
@click.option("--scale", metavar="FACTOR", help="Multiply pixel values (0-255) first, e.g. 1/255.")
@click.option("--bgr/--rgb", default=None, help="Channel order the model takes.")
@click.option("--layout", type=click.Choice(["nchw", "nhwc"]), help="The model input's layout.")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Class names, one per line (default: the model's exbp.labels metadata).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
def explain(model, images, targets, method, layer, out, formats, preset, size, mean, std, scale,
            bgr, layout, labels_file, device):
    """Explain MODEL's prediction on IMAGES (files or folders) and write maps to --out."""
    explainer = _load(model, device)
    try:
        labels = Labels.from_file(labels_file) if labels_file else Labels.from_metadata(explainer.metadata)
        settings = resolve_preprocessing(
            explainer.graph.input_shape, explainer.metadata, preset,
            size=size and parse_size(size), mean=mean and parse_floats(mean, "mean"),
            std=std and parse_floats(std, "std"), scale=scale and parse_scale(scale), bgr=bgr,
            layout=layout and parse_layout(layout))
        specs = _target_specs(targets or ("top1",), labels, explainer)
        _check_explainable(explainer, settings, layer, METHOD_CHOICES[method])
    except ExbpError as exc:
        raise click.ClickException(str(exc)) from None
    files = _expand(images)
    jobs = [(path, specs) for path in files]
    failed = _run(explainer, jobs, settings, METHOD_CHOICES[method], layer, labels, out,
                  formats or FORMATS, model)
    if failed:
        sys.exit(PARTIAL_FAILURE)


def _target_specs(targets, labels: Optional[Labels], explainer: Explainer) -> list:
    """Each --target as an int or "topK", checked against the model's classes."""
    specs = []
    for text in targets:
        text = text.strip()
        if text.lower().startswith("top") and text[3:].isdigit():
            specs.append(text.lower())
        elif text.lstrip("-").isdigit():
            specs.append(int(text))
        elif labels is None:
            raise ExbpError(f"class name {text!r} needs labels: pass --labels FILE (one name per "
                            "line) or give a class index")
        else:
            specs.append(labels.index(text))
    if explainer.classes:
        resolve_targets(specs, np.zeros((1, explainer.classes), np.float32))
    if labels is not None and explainer.classes and len(labels) != explainer.classes:
        raise ExbpError(f"the labels name {len(labels)} classes but the model has {explainer.classes}")
    return specs


def _check_explainable(explainer: Explainer, settings: Preprocessing, layer, methods) -> None:
    settings.validate(model_channels(explainer.graph.input_shape, settings.layout))
    if layer is not None:
        explainer.resolve_layer(layer)
    shape = None
    if settings.size:
        channels = model_channels(explainer.graph.input_shape, settings.layout)
        shape = ((1, channels) + settings.size if settings.layout == "nchw"
                 else (1,) + settings.size + (channels,))
    for method in methods:
        reason = explainer.refusal(layer, method, input_shape=shape)
        if reason:
            raise ExbpError(reason)


def _expand(images) -> list[Path]:
    """Files as given; folders replaced by the image files in them, sorted."""
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files = []
    for path in images:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in extensions))
        else:
            files.append(path)
    return files


def _run(explainer, jobs, settings, methods, layer, labels, out: Path, formats, model) -> int:
    """Explain every (image, targets) job, write the formats, report; returns the failure count."""
    out.mkdir(parents=True, exist_ok=True)
    stems = _unique_stems([path for path, _ in jobs])
    records, failures = [], []
    with click.progressbar(jobs, label="explaining", file=sys.stderr,
                           hidden=len(jobs) < 2, item_show_func=lambda job: job and job[0].name) as bar:
        for path, specs in bar:
            try:
                maps = explain_image(explainer, path, settings, specs, methods, layer, labels)
            except ExbpError as exc:
                failures.append({"image": str(path), "error": str(exc)})
                click.echo(f"\nskipped {path}: {exc}", err=True)
                continue
            for image_map in maps:
                base = out / _file_base(stems[path], image_map, labels)
                files = [f for fmt in formats if fmt in MAP_WRITERS for f in MAP_WRITERS[fmt](image_map, base)]
                records.append(map_record(image_map, files))
    run = {"model": str(model), "device": explainer.device,
           "preprocessing": {k: v for k, v in vars(settings).items()}}
    written = f"{len(records)} maps for {len(jobs) - len(failures)} of {len(jobs)} images"
    if "json" in formats:
        summary = write_summary(out / "summary.json", run, records, failures)
        click.echo(f"wrote {written} to {out} (summary: {summary})")
    else:
        click.echo(f"wrote {written} to {out}")
    if failures:
        click.echo(f"{len(failures)} image(s) failed; see the messages above", err=True)
    return len(failures)


def _unique_stems(paths) -> dict:
    counts, stems = Counter(), {}
    for path in paths:
        counts[path.stem] += 1
        stems[path] = path.stem if counts[path.stem] == 1 else f"{path.stem}-{counts[path.stem]}"
    return stems


def _file_base(stem: str, image_map, labels: Optional[Labels]) -> str:
    name = labels.short_name(image_map.target) if labels else ""
    slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    target = f"{image_map.target}-{slug}" if slug else str(image_map.target)
    return f"{stem}_{target}_{image_map.method}"


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("exbp-out"),
              show_default=True, help="Output folder.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
def demo(out, device):
    """Explain the bundled EfficientNet-Lite0 on the bundled photos (top-1 and one other class)."""
    folder = resources.files("exbp") / "demo"
    model = Path(str(folder / "efficientnet_lite0.onnx"))
    explainer = _load(model, device)
    labels = Labels.from_metadata(explainer.metadata)
    settings = resolve_preprocessing(explainer.graph.input_shape, explainer.metadata)
    jobs = [(Path(str(folder / name)), _target_specs(targets, labels, explainer))
            for name, targets in DEMO_TARGETS.items()]
    click.echo(f"demo: EfficientNet-Lite0 (ImageNet) on {', '.join(DEMO_TARGETS)}; "
               "MWP and c-MWP for the top class and one other")
    failed = _run(explainer, jobs, settings, ("mwp", "cmwp"), None, labels, out, FORMATS, model)
    for overlay in sorted(out.glob("*_cmwp_overlay.png")):
        click.echo(f"  {overlay}")
    if failed:
        sys.exit(PARTIAL_FAILURE)


@cli.command()
@model_argument
def layers(model):
    """List the tensors of MODEL that can carry a map (* marks the default)."""
    explainer = _load(model)
    default = explainer.default_layer()
    rows = [(("*" if name == default else " "), name, op_type, _shape_text(shape))
            for name, op_type, shape in explainer.layers()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for index, row in enumerate(rows):
        suffix = "   (logits)" if index == len(rows) - 1 else ""
        click.echo("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip() + suffix)
    click.echo(f"* default map layer: {default}")


@cli.command()
@model_argument
def check(model):
    """Report whether exbp can explain MODEL; exit 0 when it can at the default layer."""
    explainer = _load(model)
    graph = explainer.graph
    echo = click.echo
    echo(f"model: {model}")
    echo(f"opset: {graph.opset} (exbp supports {MIN_OPSET} to {MAX_OPSET})")
    echo(f"input: {graph.input_name} {_shape_text(graph.input_shape)}")
    outputs = [o.name for o in explainer.model.graph.output]
    echo(f"outputs: {', '.join(f'{o} {_shape_text(graph.shapes.get(o))}' for o in outputs)}")
    echo(f"logits: {explainer.logits_name} {_shape_text(graph.shapes.get(explainer.logits_name))}")
    counts = Counter(node.op_type for node in graph.nodes)
    ruled = sorted(op for op in counts if rule_for(next(n for n in graph.nodes if n.op_type == op)))
    echo(f"ops with rules: {', '.join(f'{op} ×{counts[op]}' for op in ruled) or 'none'}")
    unsupported = explainer.unsupported_nodes()
    for op_type, name, reason, on_path in unsupported:
        where = "on the input-to-logits path" if on_path else "off the path (harmless)"
        echo(f"refused: {op_type} {name!r} ({where}): {reason}")
    default = explainer.default_layer()
    echo(f"default map layer: {default}")
    verdicts = {method: explainer.refusal(None, method) for method in ("mwp", "cmwp")}
    pixels = explainer.refusal(graph.input_name, "mwp")
    for method, reason in verdicts.items():
        echo(f"{method} at the default layer: {'yes' if reason is None else 'no: ' + reason}")
    echo(f"maps at the input pixels: {'yes' if pixels is None else 'no: ' + pixels}")
    if verdicts["mwp"] is not None:
        sys.exit(1)
    echo("explainable: yes")


def _shape_text(shape) -> str:
    if shape is None:
        return "(?)"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


__all__ = ["cli", "supported_ops"]
