"""The ``exbp`` command: parse, call the public API, report.

Exit codes: 0 success; 1 an error that stops the run (model, labels, options, targets, layer, the
output folder, or every image failing); 2 a usage error; 3 some images failed — the others were
written, and summary.json lists both; 4 (``exbp compare``) the two models differ beyond the
tolerances; 130 interrupted (Ctrl-C) — summary.json records what was done, and ``--resume`` goes
on from there.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Optional

import click
import numpy as np
from PIL import Image

import exbp

PARTIAL_FAILURE, BEYOND_TOLERANCES, INTERRUPTED = 3, 4, 130
COMPILED_TOLERANCE = 1e-4    # relative to the map's peak; float rounding leaves ~1e-6
METHOD_CHOICES = {**{name: (name,) for name in exbp.METHODS}, "both": ("mwp", "cmwp")}
DEMO_TARGETS = {"chelsea.png": ("top1", "tabby cat"), "coffee.png": ("top1", "cup")}


class MethodList(click.ParamType):
    """``--method``: a method's name, ``both`` (mwp and cmwp), or a comma-separated list of them
    (``mwp,gradcam``); the methods in order, without repeats."""

    name = "method"

    def get_metavar(self, param, ctx=None):
        return "[" + "|".join(METHOD_CHOICES) + "][,...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        names = [part.strip() for part in str(value).split(",")]
        unknown = [name for name in names if name not in METHOD_CHOICES]
        if unknown or not names:
            self.fail(f"unknown method {unknown[0] if unknown else value!r}; use one of "
                      f"{', '.join(METHOD_CHOICES)}, or several joined by commas", param, ctx)
        return tuple(dict.fromkeys(m for name in names for m in METHOD_CHOICES[name]))


METHOD_HELP = ("mwp, cmwp, gradient, deconvnet, guided, lrp, gradcam, cam; both = mwp,cmwp; "
               "several joined by commas (docs/method.md §9).")


class OneLineErrors(click.Group):
    """Every error as one line on stderr: click prints a usage error after the usage block and a
    hint line, and lets Ctrl-C outside a run end in its own message; here they read like the
    others (`Error: ...`)."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        try:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            click.echo(f"Error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, click.Abort):
            click.echo("Error: interrupted", err=True)
            sys.exit(INTERRUPTED)


@click.group(cls=OneLineErrors)
@click.version_option(exbp.__version__, prog_name="exbp")
def cli():
    """Excitation Backprop attention maps (MWP, c-MWP) for ONNX CNNs, and the comparison methods
    (gradient, deconvnet, guided backprop, LRP-ε, Grad-CAM, CAM)."""


model_argument = click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
labels_option = click.option(
    "--labels", "labels_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Class names, one per line (default: the model's exbp.labels metadata).")


def _fail(exc: exbp.ExbpError, model: Optional[Path] = None):
    """Exit 1 with the engine's message and which command or flag helps."""
    message = str(exc)
    if isinstance(exc, exbp.LayerError) and model is not None:
        message += f" (see `exbp layers {model}`)"
    elif isinstance(exc, exbp.TargetError) and "needs labels" in message:
        message += "; or pass --labels FILE (one name per line)"
    elif isinstance(exc, exbp.TargetError) and "matches" in message and model is not None:
        message += f" (see `exbp labels {model} WORD`)"
    elif isinstance(exc, exbp.OutputError):
        message = message.replace("resume it, overwrite it", "use --resume or --overwrite")
        message = message.replace("resume them,", "use --resume").replace("; overwrite it,", "; use --overwrite")
    raise click.ClickException(message)


def _load(model: Path, device: str = "cpu", labels: Optional[Path] = None) -> exbp.Explainer:
    try:
        explainer = exbp.Explainer(model, device=device, labels=labels)
    except exbp.ExbpError as exc:
        _fail(exc, model)
    if device == "auto":
        reason = exbp.cuda_unavailable()
        click.echo(f"device: {explainer.device}" + (f" ({reason})" if reason else ""), err=True)
    return explainer


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


@cli.command()
@model_argument
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--target", "targets", multiple=True, metavar="CLASS",
              help="A class index, a class name (when labels are known), top1 (default) or topK. "
                   "Repeat for several.")
@click.option("--method", "methods", type=MethodList(), default="both", show_default=True,
              help=METHOD_HELP)
@click.option("--layer", metavar="NAME", help="Tensor or node to map (see `exbp layers`); "
                                               "default: about 1/8 to 1/16 of the input size "
                                               "(the pixels for gradient, deconvnet, guided and lrp; "
                                               "the pooling's input for cam and gradcam).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("exbp-out"),
              show_default=True, help="Output folder.")
@click.option("--format", "formats", multiple=True, type=click.Choice(exbp.FORMATS),
              help="Repeat to choose several; default: png, npy, json (npy-resized: the map at the "
                   "photo's size, on request only).")
@click.option("--preset", type=click.Choice(sorted(exbp.PRESETS)),
              help="Preprocessing preset; default: the model's metadata, else imagenet.")
@click.option("--size", metavar="HxW", help="Resize images to H×W (default: the model's input size).")
@click.option("--mean", metavar="M1,M2,M3", help="Per-channel mean, in the model's channel order.")
@click.option("--std", metavar="S1,S2,S3", help="Per-channel standard deviation.")
@click.option("--scale", metavar="FACTOR", help="Multiply pixel values (0-255) first, e.g. 1/255.")
@click.option("--bgr/--rgb", default=None, help="Channel order the model takes.")
@click.option("--layout", type=click.Choice(["nchw", "nhwc"]), help="The model input's layout.")
@labels_option
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--recursive", "-r", is_flag=True, help="Search folders' subfolders for images too.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Images per forward pass (for throughput).")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="The heatmap's weight in overlays.")
@click.option("--cmap", type=click.Choice(exbp.COLORMAPS), default="inferno", show_default=True,
              help="Colour map of heatmaps and overlays.")
@click.option("--annotate/--no-annotate", default=True, show_default=True,
              help="Overlays with a title (class, probability, method) and a colour bar.")
@click.option("--resume", is_flag=True, help="Go on with the run in --out, skipping what it did.")
@click.option("--overwrite", is_flag=True, help="Replace the run in --out.")
@click.option("--max-image-pixels", type=click.IntRange(1), default=exbp.MAX_IMAGE_PIXELS,
              show_default=True, help="Refuse image files with more pixels.")
@click.option("--max-input-pixels", type=click.IntRange(1), default=exbp.MAX_INPUT_PIXELS,
              show_default=True, help="Refuse to resize images for the model beyond this many pixels.")
@click.option("--ray", "on_ray", is_flag=True,
              help="Run on Ray Data (extra 'ray'): maps to --out as Parquet and NPY, not images.")
@click.option("--ray-actors", type=click.IntRange(1), default=2, show_default=True,
              help="Ray actors, each holding the model once.")
def explain(model, images, targets, methods, layer, out, formats, preset, size, mean, std, scale,
            bgr, layout, labels_file, device, recursive, batch_size, alpha, cmap, annotate, resume,
            overwrite, max_image_pixels, max_input_pixels, on_ray, ray_actors):
    """Explain MODEL's prediction on IMAGES (files or folders) and write maps to --out."""
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    explainer = _load(model, device, labels_file)
    try:
        settings = exbp.resolve_preprocessing(explainer.input_spec, explainer.metadata, preset,
                                              size=size, mean=mean, std=std, scale=scale, bgr=bgr,
                                              layout=layout, max_pixels=max_input_pixels)
        specs = _target_specs(targets or ("top1",), explainer)
        _check_explainable(explainer, settings, layer, methods)
    except exbp.ExbpError as exc:
        _fail(exc, model)
    files = _expand(images, recursive)
    if on_ray:
        overrides = dict(size=size, mean=mean, std=std, scale=scale, bgr=bgr, layout=layout)
        sys.exit(_explain_on_ray(model, files, specs, methods, layer, preset, overrides, out,
                                 batch_size, ray_actors, overwrite))
    run = Run(explainer, model, settings, methods, layer, formats or exbp.DEFAULT_FORMATS,
              exbp.OverlayStyle(alpha=alpha, cmap=cmap, annotate=annotate), max_image_pixels)
    sys.exit(run.go(out, [(path, specs) for path in files], batch_size, resume, overwrite))


def _explain_on_ray(model, files, specs, methods, layer, preset, overrides, out, batch_size, actors,
                    overwrite) -> int:
    """`exbp explain --ray`: the files through exbp.ray.ExplainBatch on Ray Data; the rows (path,
    error, targets, probabilities, maps, max points) to --out/maps (Parquet) and each method's maps
    to --out/<method> (NPY, in the rows' order), as Ray Data writes them."""
    try:
        import ray
        from exbp.ray import ExplainBatch
    except ImportError:
        raise click.ClickException("--ray needs Ray; install the extra: pip install -e \".[ray]\"") from None
    written = [out / name for name in ("maps", *methods)]
    if any(path.exists() for path in written) and not overwrite:
        raise click.ClickException(f"{out} holds an earlier --ray run; use --overwrite or another --out")
    try:
        exbp.create_writable_folder(out)
    except exbp.ExbpError as exc:
        _fail(exc, model)
    for path in written:
        if path.exists():
            shutil.rmtree(path)
    ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True   # NPY rows = Parquet rows
    dataset = ray.data.from_items([{"path": str(path)} for path in files])
    explained = dataset.map_batches(
        ExplainBatch, batch_size=batch_size, concurrency=actors, batch_format="numpy",
        fn_constructor_kwargs=dict(model=str(model), methods=methods, targets=specs, layer=layer,
                                   preset=preset, **{k: v for k, v in overrides.items() if v is not None}))
    explained = explained.materialize()
    explained.write_parquet(str(out / "maps"))
    for name in methods:
        explained.select_columns([name]).write_numpy(str(out / name), column=name)
    errors = [row for row in explained.select_columns(["path", "error"]).iter_rows() if row["error"]]
    for row in errors:
        click.echo(f"skipped {row['path']}: {row['error']}", err=True)
    click.echo(f"wrote {out / 'maps'} (Parquet) and {', '.join(str(out / m) for m in methods)} (NPY): "
               f"{_plural(len(files) - len(errors), 'image')}, {len(errors)} failed", err=True)
    if len(errors) == len(files):
        return 1
    return PARTIAL_FAILURE if errors else 0


def _target_specs(targets, explainer: exbp.Explainer) -> list:
    """Each --target (a class index, "topK" or a class name), checked against the model's classes."""
    specs = [text.strip() for text in targets]
    explainer.check_targets(specs)
    return specs


def _check_explainable(explainer: exbp.Explainer, settings: exbp.Preprocessing, layer, methods) -> None:
    spec = explainer.input_spec
    settings.validate(settings.channels_for(spec.shape), spec.shape)
    if layer is not None:
        explainer.resolve_layer(layer)
    shape = settings.input_shape(spec.shape)
    for method in methods:
        reason = explainer.refusal(layer, method, input_shape=shape)
        if reason:
            raise exbp.ExbpError(reason)


def _expand(images, recursive: bool) -> list[Path]:
    """Files as given; folders replaced by the image files in them, sorted (and in their
    subfolders with ``recursive``, else a note says how many were not searched)."""
    extensions = {ext.lower() for ext in Image.registered_extensions()}
    files = []
    for path in images:
        if not path.is_dir():
            files.append(path)
            continue
        try:
            found = sorted(path.rglob("*") if recursive else path.iterdir())
        except OSError as exc:
            raise click.ClickException(f"folder {path} cannot be read: {exc.strerror or exc}") from None
        files.extend(p for p in found if p.is_file() and p.suffix.lower() in extensions)
        skipped = [p for p in found if p.is_dir()] if not recursive else []
        if skipped:
            click.echo(f"note: {path} has {_plural(len(skipped), 'subfolder')}, not searched "
                       "(--recursive searches them)", err=True)
    if not files:
        shown = ", ".join(sorted(e for e in extensions if e in (".jpg", ".jpeg", ".png", ".bmp", ".tif")))
        raise click.ClickException(f"no images found in {', '.join(str(p) for p in images)}; give "
                                   f"image files ({shown}, ...) or folders that hold them")
    return files


class Run:
    """One `exbp explain` or `exbp demo` run: jobs of (image, targets) into a run folder."""

    def __init__(self, explainer, model, settings, methods, layer, formats, style, max_image_pixels):
        self.explainer, self.model, self.settings = explainer, model, settings
        self.methods, self.layer, self.formats, self.style = methods, layer, formats, style
        self.max_image_pixels = max_image_pixels

    def go(self, out: Path, jobs, batch_size: int, resume: bool = False, overwrite: bool = False) -> int:
        """Explain every job, write the formats, report; returns the exit code."""
        settings = {"model": str(self.model), "device": self.explainer.device,
                    "methods": list(self.methods), "layer": self.layer,
                    "targets": sorted({str(t) for _, specs in jobs for t in specs}),
                    "preprocessing": {k: v for k, v in vars(self.settings).items()}}
        try:
            folder = exbp.RunFolder(out, settings, resume=resume, overwrite=overwrite,
                                    summary="json" in self.formats)
        except exbp.ExbpError as exc:
            _fail(exc)
        stems = _unique_stems([path for path, _ in jobs])
        pending = [job for job in jobs if str(job[0]) not in folder.done]
        if resume:
            click.echo(f"resuming: {len(jobs) - len(pending)} of {len(jobs)} image(s) already done",
                       err=True)
        interrupted = False
        try:
            with click.progressbar(length=len(pending), label="explaining", file=sys.stderr,
                                   hidden=len(pending) < 2) as bar:
                for batch in _batches(pending, batch_size):
                    self._explain(batch, folder, stems)
                    bar.update(len(batch))
        except KeyboardInterrupt:
            interrupted = True
        except exbp.ExbpError as exc:       # not an image's fault: every image would fail alike
            folder.save(final=True)
            _fail(exc, self.model)
        summary = folder.save(final=True, interrupted=interrupted)
        done = len(folder.images)
        written = (f"wrote {_plural(len(folder.records), 'map')} for {done} of "
                   f"{_plural(len(jobs), 'image')} to {out}" + (f" (summary: {summary})" if summary else ""))
        if interrupted:
            click.echo(f"interrupted: {written}; --resume goes on from there", err=True)
            return INTERRUPTED
        click.echo(written)
        if folder.failures:
            click.echo(f"{_plural(len(folder.failures), 'image')} failed; see the messages above",
                       err=True)
            if not done:
                raise click.ClickException("no image could be explained (see the messages above); "
                                           "give readable images")
            return PARTIAL_FAILURE
        return 0

    def _explain(self, batch, folder, stems) -> None:
        paths, specs = [path for path, _ in batch], batch[0][1]
        results = exbp.explain_images(self.explainer, paths, self.settings, specs, self.methods,
                                      self.layer, self.max_image_pixels)
        for path, result in zip(paths, results):
            if isinstance(result, exbp.InputError):
                folder.fail(str(path), str(result))
                click.echo(f"\nskipped {path}: {result}", err=True)
                continue
            records = []
            for image_map in result:
                base = folder.out / _file_base(stems[path], image_map, self.explainer.labels)
                files = exbp.write_map_files(image_map, base, self.formats, self.style)
                records.append(exbp.map_record(image_map, files))
            sheet = None
            if "png" in self.formats and len(result) > 1:
                sheet = str(exbp.write_contact_sheet(result, folder.out / f"{stems[path]}_sheet.png",
                                                     self.style))
            top = [{"class": c, "label": label, "probability": round(p, 6)}
                   for c, label, p in result[0].top_classes]
            folder.add(str(path), top, records, sheet)


def _batches(jobs, size: int):
    """Consecutive jobs with the same targets, ``size`` at a time."""
    batch = []
    for job in jobs:
        if batch and (len(batch) == size or job[1] != batch[0][1]):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


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
              show_default=True, help="Output folder (an earlier demo there is replaced).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
def demo(out, device):
    """Explain the bundled EfficientNet-Lite0 on the bundled photos (top-1 and one other class)."""
    folder = resources.files("exbp") / "demo"
    model = Path(str(folder / "efficientnet_lite0.onnx"))
    explainer = _load(model, device)
    settings = exbp.resolve_preprocessing(explainer.input_spec, explainer.metadata)
    jobs = [(Path(str(folder / name)), _target_specs(targets, explainer))
            for name, targets in DEMO_TARGETS.items()]
    click.echo(f"demo: EfficientNet-Lite0 (ImageNet) on {', '.join(DEMO_TARGETS)}; "
               "MWP and c-MWP for the top class and one other")
    run = Run(explainer, model, settings, ("mwp", "cmwp"), None, exbp.DEFAULT_FORMATS,
              exbp.OverlayStyle(), exbp.MAX_IMAGE_PIXELS)
    code = run.go(out, jobs, batch_size=1, overwrite=True)
    for overlay in sorted(out.glob("*_cmwp_overlay.png")):
        click.echo(f"  {overlay}")
    sys.exit(code)


@cli.command("compile")
@model_argument
@click.option("--out", "-o", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The compiled model (.onnx) to write.")
@click.option("--layer", metavar="NAME", help="Tensor or node to map (see `exbp layers`); "
              "default: the model's default map layer.")
@click.option("--method", "methods", type=MethodList(), default="both", show_default=True,
              help="mwp, cmwp, or both.")
@click.option("--targets", default="top1", show_default=True,
              help="top1 ... topK (each image's best classes, also output as exbp_targets); input "
                   "(an int64 input exbp_targets, shape (N, --target-count)); or classes, joined "
                   "by commas.")
@click.option("--target-count", type=click.IntRange(1), default=1, show_default=True,
              help="Classes per image with --targets input.")
@click.option("--resize", is_flag=True, help="Maps at the input's size (bilinear), not the layer's.")
@click.option("--input-shape", metavar="N,C,H,W", help="The input's shape, where the model leaves "
              "more than its batch size open.")
@click.option("--triton", "triton_repository", type=click.Path(file_okay=False, path_type=Path),
              help="Also lay the compiled model out as a Triton model repository in this folder.")
@click.option("--triton-name", metavar="NAME", help="The model's name in the repository "
              "(default: the output file's stem).")
@click.option("--max-batch-size", type=click.IntRange(0), default=8, show_default=True,
              help="Triton's max_batch_size (0: no batching).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the compiled maps against the eager walk's on a random input.")
@labels_option
def compile_command(model, output, layer, methods, targets, target_count, resize, input_shape,
                    triton_repository, triton_name, max_batch_size, verify, labels_file):
    """Compile Excitation Backprop into MODEL's own graph: a model whose outputs are MODEL's and
    a map per method (exbp_mwp, exbp_cmwp: N×K×h×w), for any onnxruntime-based server."""
    explainer = _load(model, labels=labels_file)
    parts = [part.strip() for part in targets.split(",") if part.strip()]
    spec = parts[0] if len(parts) == 1 else parts
    try:
        shape = tuple(int(d) for d in input_shape.split(",")) if input_shape else None
    except ValueError:
        raise click.BadParameter(f"{input_shape!r} is not sizes joined by commas, e.g. 1,3,224,224",
                                 param_hint="--input-shape") from None
    try:
        compiled = explainer.compile(layer, methods, spec, target_count, resize, shape)
        if verify:
            _verify_compiled(explainer, compiled, methods, spec, target_count, layer, resize, shape)
        exbp.write_onnx(compiled, output)
        if triton_repository is not None:
            folder = exbp.write_triton_repository(compiled, triton_repository,
                                                  triton_name or output.stem, max_batch_size)
    except exbp.ExbpError as exc:
        _fail(exc, model)
    except OSError as exc:
        raise click.ClickException(f"cannot write {exc.filename or output}: {exc.strerror or exc}") from None
    metadata = exbp.compiled_metadata(compiled)
    for name in metadata["maps"]:
        info = next(o for o in compiled.graph.output if o.name == name)
        dims = [d.dim_param or str(d.dim_value) for d in info.type.tensor_type.shape.dim]
        click.echo(f"{name}: ({', '.join(dims)}) at layer {metadata['layers'][name[len('exbp_'):]]}")
    click.echo(f"wrote {output}")
    if triton_repository is not None:
        click.echo(f"wrote Triton model repository {folder}")


def _verify_compiled(explainer, compiled, methods, targets, target_count, layer, resize, shape):
    """ExbpError unless the compiled maps equal the eager walk's on a random input (batch 2)."""
    example = shape or (2,) + tuple(explainer.input_spec.shape[1:])
    if explainer.input_spec.fixed_batch is not None:
        example = (explainer.input_spec.fixed_batch,) + tuple(example[1:])
    x = np.random.default_rng(0).normal(size=example).astype(np.float32)
    eager_targets = np.zeros((example[0], target_count), np.int64) if targets == "input" else targets
    differences = exbp.compiled_differences(explainer, compiled, x, methods, eager_targets, layer, resize)
    worst = max(differences, key=differences.get)
    if not differences[worst] <= COMPILED_TOLERANCE:
        raise exbp.ModelError(f"the compiled {worst} maps differ from the eager walk's by "
                              f"{differences[worst]:.2g} of their peak (more than {COMPILED_TOLERANCE:g}); "
                              "please report this model")
    click.echo(f"verified: the compiled maps equal the eager walk's to {differences[worst]:.1e} "
               "of their peak", err=True)


@cli.command()
@model_argument
def layers(model):
    """List the tensors of MODEL that can carry a map (* marks the default)."""
    explainer = _load(model)
    default = explainer.default_layer()
    *maps, logits = explainer.layers()
    rows = [(("*" if layer.name == default else " "), layer.name, layer.op_type,
             exbp.shape_text(layer.shape), layer.layout) for layer in maps]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        click.echo("  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip())
    click.echo(f"* default map layer: {default}")
    click.echo(f"logits (no map): {logits.name} {exbp.shape_text(logits.shape)}")


@cli.command()
@click.argument("model_a", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("model_b", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--layer-a", metavar="NAME", help="Layer of MODEL_A to compare (default: its default layer).")
@click.option("--layer-b", metavar="NAME", help="The corresponding layer of MODEL_B.")
@click.option("--method", "methods", type=MethodList(), default="both", show_default=True,
              help=METHOD_HELP)
@click.option("--targets", "target_count", type=click.IntRange(1), default=1, show_default=True,
              help="Explain MODEL_A's top N classes in both models.")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True,
              help="The classes whose order must agree.")
@click.option("--tolerances", type=click.Choice(sorted(exbp.TOLERANCES)), default="float32",
              show_default=True, help="Tolerances for float32 re-exports, or float16 / int8 conversions.")
@click.option("--preset", type=click.Choice(sorted(exbp.PRESETS)), help="Preprocessing preset for both.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("compare-out"),
              show_default=True, help="Folder for comparison.json and a side-by-side PNG per image.")
@click.option("--recursive", "-r", is_flag=True, help="Search folders' subfolders for images too.")
def compare(model_a, model_b, images, layer_a, layer_b, methods, target_count, top_k, tolerances,
            preset, out, recursive):
    """Compare MODEL_A and MODEL_B (one network before and after export, conversion or
    quantisation) on IMAGES: logits, top-k classes, and maps at corresponding layers. Exit 0
    within the tolerances, 4 beyond them."""
    explainers = _load(model_a), _load(model_b)
    files = _expand(images, recursive)
    try:
        exbp.create_writable_folder(out)
        comparison = exbp.compare(*explainers, files, methods=methods, layer_a=layer_a,
                                  layer_b=layer_b, top_k=top_k, targets=target_count,
                                  tolerances=tolerances, preset=preset)
    except exbp.ExbpError as exc:
        _fail(exc, model_a)
    comparison.model_a, comparison.model_b = model_a.name, model_b.name
    for path, stem in _unique_stems(files).items():
        targets = list(dict.fromkeys(row.target for row in comparison.rows if row.image == str(path)))
        image = exbp.load_image(path) if targets else None      # read once for its sheets
        for target in targets:
            exbp.write_comparison_sheet(image, comparison.maps[str(path), target],
                                        (model_a.name, model_b.name), out / f"{stem}_{target}_compare.png")
    exbp.write_json(out / "comparison.json", comparison.to_dict())
    for side, model, index in (("A", model_a, 0), ("B", model_b, 1)):
        click.echo(f"{side}: {model} at {_layers_text(comparison.layers, index)}")
    click.echo(comparison.table(), nl=False)
    for image, error in comparison.failures.items():
        click.echo(f"skipped {image}: {error}", err=True)
    if not comparison.rows:
        raise click.ClickException(f"no image could be compared ({_plural(len(files), 'image')} failed)")
    verdict = "within" if comparison.within else "beyond"
    click.echo(f"{verdict} the {tolerances} tolerances; wrote {out / 'comparison.json'} and "
               f"{_plural(len({r.image for r in comparison.rows}), 'side-by-side PNG')}", err=True)
    if not comparison.within:
        sys.exit(BEYOND_TOLERANCES)
    if comparison.failures:
        sys.exit(PARTIAL_FAILURE)


def _layers_text(layers: dict, side: int) -> str:
    """"layer" when every method maps at one layer, else "layer (methods), ..."."""
    by_layer: dict[str, list[str]] = {}
    for method, pair in layers.items():
        by_layer.setdefault(pair[side], []).append(method)
    if len(by_layer) == 1:
        return next(iter(by_layer))
    return ", ".join(f"{layer} ({', '.join(methods)})" for layer, methods in by_layer.items())


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


@cli.command()
@model_argument
@click.argument("word", required=False, default="")
@labels_option
def labels(model, word, labels_file):
    """List MODEL's class names (those with WORD in them, when given), with their indices."""
    explainer = _load(model, labels=labels_file)
    if explainer.labels is None:
        raise click.ClickException(f"{model} carries no labels (exbp.labels metadata); pass "
                                   "--labels FILE (one name per line)")
    found = explainer.labels.search(word)
    if not found:
        raise click.ClickException(f"no class name of {model} contains {word!r}")
    width = len(str(found[-1]))
    for index in found:
        click.echo(f"{index:>{width}}  {explainer.labels.names[index]}")


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run_dir):
    """Write RUN_DIR/report.html: every photo, its top classes and its overlays side by side."""
    try:
        path = exbp.write_report(run_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(f"{run_dir} holds no readable exbp run ({exc}); give a folder "
                                   "that `exbp explain --out` wrote") from None
    click.echo(f"wrote {path}")


@cli.command("pointing-game")
@model_argument
@click.option("--voc", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A Pascal VOC root (Annotations, JPEGImages, ImageSets/Main).")
@click.option("--image-set", default="test", show_default=True, help="The VOC list to score.")
@click.option("--coco", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A COCO instances JSON (with --images).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The COCO images folder.")
@click.option("--classes", "mapping_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Lines 'dataset class: model class' (default: the names are the model's classes).")
@click.option("--method", "methods", multiple=True, type=MethodList(),
              help=METHOD_HELP + " Repeat for several; default both.")
@click.option("--layer", metavar="NAME", help="Tensor or node to map; default: see `exbp layers`.")
@click.option("--preset", type=click.Choice(sorted(exbp.PRESETS)), help="Preprocessing preset.")
@labels_option
@click.option("--limit", type=click.IntRange(1), help="Score only the first N images.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("pointing-out"),
              show_default=True, help="Folder for pointing.md, .csv and .json.")
@click.option("--resume", is_flag=True, help="Go on with the scores in --out.")
@click.option("--curves", is_flag=True, help="Also score deletion and insertion (area under the curve).")
def pointing_game(model, voc, image_set, coco, images, mapping_file, methods, layer, preset,
                  labels_file, limit, out, resume, curves):
    """Score MODEL's maps with the pointing game (docs/method.md §6) against the centre baseline."""
    if (voc is None) == (coco is None) or (coco is not None and images is None):
        raise click.UsageError("give a dataset: --voc ROOT, or --coco INSTANCES with --images DIR")
    explainer = _load(model, labels=labels_file)
    methods = tuple(dict.fromkeys(m for chosen in methods for m in chosen)) or ("mwp", "cmwp")
    try:
        annotations = exbp.read_voc(voc, image_set) if voc else exbp.read_coco(coco, images)
        annotations = annotations[:limit] if limit else annotations
        mapping = exbp.read_class_mapping(mapping_file) if mapping_file else {}
        targets = exbp.pointing.model_targets(annotations, mapping, explainer)
        settings = exbp.resolve_preprocessing(explainer.input_spec, explainer.metadata, preset)
        for method in methods:
            reason = explainer.refusal(layer, method)
            if reason:
                raise exbp.ExbpError(reason)
        scores = exbp.PointingScores(out, resume)
    except exbp.ExbpError as exc:
        _fail(exc, model)
    with click.progressbar(length=len(annotations), label="pointing", file=sys.stderr,
                           hidden=len(annotations) < 2) as bar:
        def on_image(image, records):
            scores.add(image, records)
            bar.update(1)
        records, failures = exbp.pointing.play(explainer, annotations, settings, methods, layer,
                                               targets, scores.done, on_image, curves)
    for image, error in failures.items():
        click.echo(f"skipped {image}: {error}", err=True)
    rows = exbp.pointing.table(records)
    scores.finish(rows, failures)
    click.echo(exbp.pointing.markdown(rows), nl=False)
    click.echo(f"wrote {out / 'pointing.md'}, .csv, .json ({_plural(len(annotations), 'image')}, "
               f"{len(failures)} failed)", err=True)
    if failures:
        sys.exit(PARTIAL_FAILURE)
