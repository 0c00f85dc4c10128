"""Which torchvision classification models exbp explains: an optional check (needs torch and
torchvision; without them it says so in one line and exits 0).

    python benchmarks/torchvision_coverage.py                      # every classification model
    python benchmarks/torchvision_coverage.py --models 'resnet*' squeezenet1_0 --size 224
    python benchmarks/torchvision_coverage.py --markdown docs/torchvision-coverage.md

For each model of ``torchvision.models.list_models(module=torchvision.models)`` (random weights,
seed 0, eval mode) a worker process exports it to ONNX (opset 17, dynamic batch; kept in
``--cache``), then asks ``exbp.Explainer(path).report()`` whether it is explainable and what the
default layer is, explains one random image (seed 0, N(0, 1)) with MWP and c-MWP at the default
layer and at the pixels — a map must be finite, non-negative, and the MWP map at the pixels should
hold the target's mass 1 less what exbp counts as lost (docs/method.md §1) — and times c-MWP at the
default layer against onnxruntime's forward pass (medians after a warm-up), and compiles the model
at both layers (``Explainer.compile``), comparing the compiled maps with the walk's. It prints a
markdown table and the coverage lines. Vision transformers (ViT, Swin, MaxViT) are listed apart: attention
multiplies two activations, which Excitation Backprop has no rule for.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRANSFORMERS = ("vit_*", "swin_*", "maxvit_*")
WORKER_TIMEOUT_S = 1800


def is_transformer(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in TRANSFORMERS)


# ---- one model, in its own process ----------------------------------------------------------

def export(name: str, size: int, folder: Path) -> Path:
    path = folder / f"{name}-{size}.onnx"
    if path.exists():
        return path
    import torch
    import torchvision

    torch.manual_seed(0)
    options = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, **options).eval()
    partial = path.with_suffix(".partial.onnx")
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 3, size, size), str(partial), dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    partial.rename(path)   # large models keep their weights in a file beside it, named at export
    return path


def _median_time(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) < 160 else text[:157] + "..."


def check_model(name: str, size: int, folder: Path) -> dict:
    import numpy as np

    import exbp

    row: dict = {"model": name, "transformer": is_transformer(name)}
    started = time.perf_counter()
    try:
        path = export(name, size, folder)
    except Exception as error:   # an exporter failure is a row of the table, not a crash
        row["export"] = "failed: " + _first_line(error)
        return row
    row["export"] = "ok"
    row["export_s"] = time.perf_counter() - started
    try:
        explainer = exbp.Explainer(path)
        report = explainer.report()
    except exbp.errors.ExbpError as error:
        row["check"] = "refused: " + _first_line(error)
        return row
    row["default_layer"] = report.default_layer
    row["explainable"] = report.explainable
    refused_on_path = sorted({op for op, _, _, on_path in report.refused if on_path})
    row["check"] = "explainable" if report.explainable else (
        "refused: " + (", ".join(refused_on_path) or report.verdicts["mwp"] or "?"))
    if row["transformer"] or not report.explainable:
        return row

    x = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
    target = int(explainer.logits(x)[0].argmax())
    image = explainer.session.graph.input_name
    results = {}
    for where, layer in (("default", None), ("pixels", image)):
        try:   # both methods from one forward pass and one walk; MWP alone where c-MWP is refused
            maps = explainer.explain_methods(x, targets=target, layer=layer)
        except exbp.errors.MethodError as error:
            results[f"cmwp@{where}"] = ("refused: " + _first_line(error), None)
            maps = explainer.explain_methods(x, targets=target, layer=layer, methods=("mwp",))
        for method, explanation in maps.items():
            finite = bool(np.isfinite(explanation.maps).all()) and float(explanation.maps.min()) >= 0
            results[f"{method}@{where}"] = ("ok" if finite else "not finite",
                                            float(explanation.maps.sum()))
    row["results"] = results
    row["compiled"] = _compiled_check(explainer, x, target, image, results)
    if results["cmwp@default"][0] == "ok":   # the walk plan and recording session are built
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session.run(None, {image: x})
        forward_s = _median_time(lambda: session.run(None, {image: x}), runs=5)
        runs = 3 if forward_s < 0.2 else 1
        cmwp_s = _median_time(lambda: explainer.explain(x, targets=target, method="cmwp"), runs)
        row["forward_s"], row["cmwp_s"] = forward_s, cmwp_s
    return row


def _compiled_check(explainer, x, target: int, image: str, results: dict) -> str:
    """``exbp compile`` at the default layer and at the pixels, for the methods the walk gave
    there: the largest difference from the walk's maps (c-MWP's against MWP's peak), or why it
    failed."""
    import exbp

    worst = 0.0
    try:
        for where, layer in (("default", None), ("pixels", image)):
            methods = tuple(m for m in ("mwp", "cmwp") if results.get(f"{m}@{where}", ("",))[0] == "ok")
            compiled = explainer.compile(layer=layer, methods=methods, targets=[target])
            differences = exbp.compiled_differences(explainer, compiled, x, methods, [target], layer)
            worst = max(worst, *differences.values())
    except Exception as error:   # a failure is a cell of the table
        return "failed: " + _first_line(error)
    return f"{worst:.1e}"


# ---- the table ------------------------------------------------------------------------------

def _cell(result) -> str:
    status, total = result
    return f"{total:.3g}" if status == "ok" else status


def explains(row: dict) -> bool:
    """MWP and c-MWP give finite maps at the pixels and MWP at the default layer."""
    results = row.get("results") or {}
    return all(results.get(key, ("",))[0] == "ok" for key in ("mwp@default", "mwp@pixels", "cmwp@pixels"))


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | export | check | default layer | MWP / c-MWP at the default layer "
             "(map sums) | MWP / c-MWP at the pixels (map sums) | c-MWP ÷ forward | compiled: "
             "largest difference |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        results = row.get("results") or {}
        default = (f"{_cell(results['mwp@default'])} / {_cell(results['cmwp@default'])}"
                   if results else "")
        pixels = (f"{_cell(results['mwp@pixels'])} / {_cell(results['cmwp@pixels'])}"
                  if results else "")
        ratio = f"{row['cmwp_s'] / row['forward_s']:.2f}" if "cmwp_s" in row else ""
        layer = f"`{row['default_layer']}`" if row.get("default_layer") else ""
        lines.append(f"| {row['model']} | {row['export']} | {row.get('check', '')} | {layer} | "
                     f"{default} | {pixels} | {ratio} | {row.get('compiled', '')} |")
    return lines


def summary(rows: list[dict]) -> list[str]:
    cnns = [row for row in rows if not row["transformer"]]
    good = [row["model"] for row in cnns if explains(row)]
    failing = [row["model"] for row in cnns if not explains(row)]
    cmwp_default = [row["model"] for row in cnns if explains(row)
                    and row["results"]["cmwp@default"][0] != "ok"]
    lines = [f"**{len(good)} of {len(cnns)} CNNs** explain (MWP at the default layer, MWP and c-MWP "
             "at the pixels, finite non-negative maps)."]
    compiled = [row for row in cnns if explains(row) and not str(row.get("compiled", "failed")).startswith("f")]
    worst = max((float(row["compiled"]) for row in compiled), default=0.0)
    lines.append(f"**{len(compiled)} of {len(good)}** compile (`exbp compile`, at the default layer and "
                 f"the pixels) to maps within {worst:.1e} of the walk's (c-MWP's measured against MWP's "
                 "peak).")
    if failing:
        lines.append("Not explained: " + ", ".join(failing) + ".")
    if cmwp_default:
        lines.append("c-MWP refused at the default layer (no classifier between it and the "
                     "logits): " + ", ".join(cmwp_default) + ".")
    transformers = [row for row in rows if row["transformer"]]
    if transformers:
        lines.append("Out of scope (vision transformers; attention multiplies two activations): "
                     + ", ".join(f"{row['model']} ({row.get('check', row['export'])})"
                                 for row in transformers) + ".")
    return lines


def _run_worker(name: str, size: int, folder: Path, timeout: float) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--size", str(size), "--cache", str(folder)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "transformer": is_transformer(name), "export": "?",
                "check": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return {"model": name, "transformer": is_transformer(name), "export": "?",
                "check": f"worker failed: {tail}"}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["*"],
                        help="model names or shell patterns (default: every classification model)")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "exbp-torchvision",
                        help="folder for the exported models, reused between runs")
    parser.add_argument("--timeout", type=float, default=WORKER_TIMEOUT_S, help="seconds per model")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
        import torchvision
    except ImportError:
        print("torchvision coverage check skipped: torch and torchvision are not installed "
              "(pip install torch torchvision)")
        return 0
    args.cache.mkdir(parents=True, exist_ok=True)
    if args.worker:
        print(json.dumps(check_model(args.worker, args.size, args.cache)))
        return 0

    names = [name for name in torchvision.models.list_models(module=torchvision.models)
             if any(fnmatch.fnmatch(name, pattern) for pattern in args.models)]
    if not names:
        print(f"no torchvision classification model matches {' '.join(args.models)}")
        return 1
    rows = []
    started = time.perf_counter()
    for index, name in enumerate(names, start=1):
        row = _run_worker(name, args.size, args.cache, args.timeout)
        rows.append(row)
        print(f"[{index}/{len(names)}] {name}: {row.get('check', row['export'])}", file=sys.stderr,
              flush=True)
    command = "python benchmarks/torchvision_coverage.py " + " ".join(
        a if " " not in a and "*" not in a else repr(a) for a in (argv if argv is not None else sys.argv[1:]))
    lines = table(rows) + [""] + summary(rows)
    print("\n".join(lines))
    if args.markdown:
        import exbp

        header = [f"# exbp on torchvision's classification models", "",
                  f"Produced by `{command.strip()}` ({len(rows)} models, {args.size}×{args.size} "
                  f"input, {time.perf_counter() - started:.0f} s) with exbp {exbp.__version__}, "
                  f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
                  f"on {platform.machine()} ({os.cpu_count()} CPUs). Random weights (seed 0), "
                  "eval mode, opset 17; one N(0, 1) image, target its top class. Map sums are of "
                  "the map at that layer: MWP should sum to 1 less the mass lost where a linear "
                  "op's contributions are all ≤ 0 (docs/method.md §1, §3.3); a c-MWP map keeps "
                  "the positive part of a difference that sums to 0. The ratio is c-MWP at the "
                  "default layer over onnxruntime's forward pass (medians).", ""]
        args.markdown.write_text("\n".join(header + lines) + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
