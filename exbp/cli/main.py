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
from PIL import Image

import exbp

PARTIAL_FAILURE = 3
METHOD_CHOICES = {"mwp": ("mwp",), "cmwp": ("cmwp",), "both": ("mwp", "cmwp")}
DEMO_TARGETS = {"chelsea.png": ("top1", "tabby cat"), "coffee.png": ("top1", "cup")}


@click.group()
@click.version_option(exbp.__version__, prog_name="exbp")
def cli():
    """Excitation Backprop attention maps (MWP, c-MWP) for ONNX CNNs."""


model_argument = click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))


def _load(model: Path, device: str = "cpu", labels: Optional[Path] = None) -> exbp.Explainer:
    try:
        explainer = exbp.Explainer(model, device=device, labels=labels)
    except exbp.ExbpError as exc:
        raise click.ClickException(str(exc)) from None
    if device == "auto":
        reason = exbp.cuda_unavailable()
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
@click.option("--format", "formats", multiple=True, type=click.Choice(exbp.FORMATS),
              help="Repeat to choose several; default: all.")
@click.option("--preset", type=click.Choice(sorted(exbp.PRESETS)),
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
    explainer = _load(model, device, labels_file)
    try:
        settings = exbp.resolve_preprocessing(explainer.input_spec.shape, explainer.metadata, preset,
                                              size=size, mean=mean, std=std, scale=scale, bgr=bgr,
                                              layout=layout)
        specs = _target_specs(targets or ("top1",), explainer)
        _check_explainable(explainer, settings, layer, METHOD_CHOICES[method])
    except exbp.ExbpError as exc:
        raise click.ClickException(_with_hint(exc, model)) from None
    files = _expand(images)
    jobs = [(path, specs) for path in files]
    failed = _run(explainer, jobs, settings, METHOD_CHOICES[method], layer, out,
                  formats or exbp.FORMATS, model)
    if failed:
        sys.exit(PARTIAL_FAILURE)


def _with_hint(exc: exbp.ExbpError, model: Path) -> str:
    """The engine's message, and which command or flag helps."""
    if isinstance(exc, exbp.LayerError):
        return f"{exc} (see `exbp layers {model}`)"
    if isinstance(exc, exbp.TargetError) and "needs labels" in str(exc):
        return f"{exc}; or pass --labels FILE (one name per line)"
    return str(exc)


def _target_specs(targets, explainer: exbp.Explainer) -> list:
    """Each --target as an int, "topK" or a class name, checked against the model's classes."""
    specs = [int(text) if text.strip().lstrip("-").isdigit() else text.strip() for text in targets]
    explainer.check_targets(specs)
    return specs


def _check_explainable(explainer: exbp.Explainer, settings: exbp.Preprocessing, layer, methods) -> None:
    spec = explainer.input_spec
    settings.validate(settings.channels_for(spec.shape))
    if layer is not None:
        explainer.resolve_layer(layer)
    shape = settings.input_shape(spec.shape)
    for method in methods:
        reason = explainer.refusal(layer, method, input_shape=shape)
        if reason:
            raise exbp.ExbpError(reason)


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


def _run(explainer, jobs, settings, methods, layer, out: Path, formats, model) -> int:
    """Explain every (image, targets) job, write the formats, report; returns the failure count."""
    out.mkdir(parents=True, exist_ok=True)
    stems = _unique_stems([path for path, _ in jobs])
    records, failures = [], []
    with click.progressbar(jobs, label="explaining", file=sys.stderr,
                           hidden=len(jobs) < 2, item_show_func=lambda job: job and job[0].name) as bar:
        for path, specs in bar:
            try:
                maps = exbp.explain_image(explainer, path, settings, specs, methods, layer)
            except exbp.ExbpError as exc:
                failures.append({"image": str(path), "error": str(exc)})
                click.echo(f"\nskipped {path}: {exc}", err=True)
                continue
            for image_map in maps:
                base = out / _file_base(stems[path], image_map, explainer.labels)
                records.append(exbp.map_record(image_map, exbp.write_map_files(image_map, base, formats)))
    run = {"model": str(model), "device": explainer.device,
           "preprocessing": {k: v for k, v in vars(settings).items()}}
    written = f"{len(records)} maps for {len(jobs) - len(failures)} of {len(jobs)} images"
    if "json" in formats:
        summary = exbp.write_summary(out / "summary.json", run, records, failures)
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


def _file_base(stem: str, image_map, labels: Optional[exbp.Labels]) -> str:
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
    settings = exbp.resolve_preprocessing(explainer.input_spec.shape, explainer.metadata)
    jobs = [(Path(str(folder / name)), _target_specs(targets, explainer))
            for name, targets in DEMO_TARGETS.items()]
    click.echo(f"demo: EfficientNet-Lite0 (ImageNet) on {', '.join(DEMO_TARGETS)}; "
               "MWP and c-MWP for the top class and one other")
    failed = _run(explainer, jobs, settings, ("mwp", "cmwp"), None, out, exbp.FORMATS, model)
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
    rows = [(("*" if name == default else " "), name, op_type, exbp.shape_text(shape))
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
    report = _load(model).report()
    click.echo(f"model: {model}")
    for line in report.lines():
        click.echo(line)
    if not report.explainable:
        sys.exit(1)
