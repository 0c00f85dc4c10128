"""The compiled model's benchmark: Excitation Backprop in the model's own ONNX graph (``exbp
compile``) against onnxruntime's forward pass of the plain model, and against the multiply-add
floor.

    pip install -e ".[bench]"                 # torch and torchvision export the models once
    python benchmarks/compiled_benchmark.py   # [--runs 9] [--json FILE] [--markdown FILE]

For each configuration one worker process compiles the model, then times in interleaved rounds
(after a warm-up) the plain model's forward pass, the compiled model (one onnxruntime run that
gives the prediction and the map) and the eager walk (``Explainer.explain`` with
``engine="walk"``); ratios are medians over the same rounds, batch 1, default session options.
Peak resident memory (VmHWM) is measured in a fresh process per model file: loading the plain or
the compiled model into an InferenceSession and running it three times (the serving situation;
the compile step, in a process of its own, is not counted). Throughput is images per second at batch 32, compiled against the
forward, in the same rounds.

The floor is the multiply-adds the method cannot avoid, from the graph: the forward's, plus one
pass for the normalisers Z and one transpose pass per target over the linear ops (Conv, Gemm,
MatMul) between the layer and the logits; ratio ``(F + (1 + K)·A) / F``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import module_output, onnx_model  # noqa: E402
from timing import interleaved_medians  # noqa: E402

# name -> (model, layer module or "image", targets, the limit on the ratio to the forward: a
# multiple of the floor (the 10 % and 15 %) or an absolute ratio)
CONFIGURATIONS = {
    "vgg16 pool4": ("vgg16", "features.23", "top1", ("floor", 1.10)),
    "resnet50 layer3": ("resnet50", "layer3", "top1", ("floor", 1.10)),
    "googlenet inception4e": ("googlenet", "inception4e", "top1", ("floor", 1.10)),
    "vgg16 pool4 top-5": ("vgg16", "features.23", "top5", ("floor", 1.15)),
    "resnet50 layer3 top-5": ("resnet50", "layer3", "top5", ("floor", 1.15)),
    "googlenet inception4e top-5": ("googlenet", "inception4e", "top5", ("floor", 1.15)),
    "resnet50 pixels": ("resnet50", "image", "top1", ("forward", 3.5)),
    "googlenet pixels": ("googlenet", "image", "top1", ("forward", 3.5)),
    "mobilenet_v2 pixels": ("mobilenet_v2", "image", "top1", ("forward", 5.0)),
    "efficientnet_b0 pixels": ("efficientnet_b0", "image", "top1", ("forward", 5.0)),
}
MEMORY_LIMIT = 2.0
THROUGHPUT_BATCH = 32


def _layer(path: Path, module: str):
    return "image" if module == "image" else module_output(path, module)


def _input(batch: int = 1):
    return np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32)


def multiply_adds(explainer, layer: str) -> tuple[int, int]:
    """(the forward's multiply-adds, those of the linear ops on the walk from the logits to
    ``layer``), batch 1, from the canonical graph's shapes."""
    session = explainer.session
    graph = session.graph
    shapes = session.shapes((1,) + tuple(explainer.input_spec.shape[1:]))

    def macs(node) -> int:
        if node.op_type == "Conv":
            weight = graph.constants.get(node.inputs[1])
            out = shapes.get(node.outputs[0])
            if weight is None or not out:
                return 0
            return int(np.prod(out[1:])) * int(np.prod(weight.shape[1:]))
        if node.op_type in ("Gemm", "MatMul"):
            weights = [graph.constants[name] for name in node.inputs[:2] if name in graph.constants]
            out = shapes.get(node.outputs[0])
            if not weights or not out:
                return 0
            inner = weights[0].shape[1] if node.op_type == "Gemm" and node.attrs.get("transB") else weights[0].shape[0]
            return int(np.prod(out[1:])) * int(inner)
        return 0
    forward = sum(macs(node) for node in graph.nodes)
    plan = session.plan(session.resolve_layer(layer, needs_map=False))
    return forward, sum(macs(step.node) for step in plan.steps)


# ---- workers (each in its own process) -------------------------------------------------------

def worker_timing(config: str, runs: int) -> dict:
    import onnxruntime as ort

    import exbp
    model, module, targets, _ = CONFIGURATIONS[config]
    path = onnx_model(model)
    layer = _layer(path, module)
    explainer = exbp.Explainer(path, engine="walk")
    started = time.perf_counter()
    compiled = explainer.compile(layer=layer, methods=("cmwp",), targets=targets)
    compile_s = time.perf_counter() - started
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    served = ort.InferenceSession(compiled.SerializeToString(), providers=["CPUExecutionProvider"])
    x, batch = _input(), _input(THROUGHPUT_BATCH)
    jobs = {"forward": lambda: plain.run(None, {"image": x}),
            "compiled": lambda: served.run(None, {"image": x}),
            "eager": lambda: explainer.explain(x, targets=targets, layer=layer, method="cmwp"),
            "forward@32": lambda: plain.run(None, {"image": batch}),
            "compiled@32": lambda: served.run(None, {"image": batch})}
    medians = interleaved_medians(jobs, runs)
    forward, above = multiply_adds(explainer, layer)
    k = int(targets[3:])
    return {"median_s": medians,
            "compile_s": compile_s, "floor": (forward + (1 + k) * above) / forward,
            "layer": explainer.explain(x, targets=targets, layer=layer, method="cmwp").layer}


def worker_memory(path: str) -> dict:
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = _input()
    for _ in range(3):
        session.run(None, {session.get_inputs()[0].name: x})
    return {"peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """The process's peak resident memory: VmHWM, which exec resets (getrusage's ru_maxrss keeps
    the forking parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_process(function: str, *args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", function, *map(str, args)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_compile(config: str, target: str) -> dict:
    import exbp
    model, module, targets, _ = CONFIGURATIONS[config]
    path = onnx_model(model)
    exbp.compile(path, target, layer=_layer(path, module), methods=("cmwp",), targets=targets)
    return {"file": target}


def _compiled_file(config: str, folder: Path) -> Path:
    return Path(_in_process("compile", config, folder / f"{config.replace(' ', '_')}.onnx")["file"])


# ---- the report ---------------------------------------------------------------------------------

def measure(configs, runs: int) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for config in configs:
            timing = _in_process("timing", config, runs)
            medians = timing["median_s"]
            model = CONFIGURATIONS[config][0]
            forward_memory = _in_process("memory", onnx_model(model))["peak_rss_mb"]
            compiled_memory = _in_process("memory", _compiled_file(config, Path(folder)))["peak_rss_mb"]
            kind, limit = CONFIGURATIONS[config][3]
            ratio = medians["compiled"] / medians["forward"]
            allowed = limit * timing["floor"] if kind == "floor" else limit
            results[config] = {
                "layer": timing["layer"], "forward_ms": 1000 * medians["forward"],
                "compiled": ratio, "eager": medians["eager"] / medians["forward"],
                "floor": timing["floor"], "to_floor": ratio / timing["floor"], "limit": allowed,
                "met": ratio <= allowed,
                "memory": compiled_memory / forward_memory, "forward_mb": forward_memory,
                "memory_met": compiled_memory / forward_memory <= MEMORY_LIMIT,
                "images_s": THROUGHPUT_BATCH / medians["compiled@32"],
                "forward_images_s": THROUGHPUT_BATCH / medians["forward@32"],
                "compile_s": timing["compile_s"]}
            row = results[config]
            print(f"{config:28s} compiled {row['compiled']:.2f}x (floor {row['floor']:.2f}x, "
                  f"{row['to_floor']:.2f} of it; limit {row['limit']:.2f}x: "
                  f"{'met' if row['met'] else 'NOT met'})  eager {row['eager']:.2f}x  memory "
                  f"{row['memory']:.2f}x ({'met' if row['memory_met'] else 'NOT met'})  batch 32: "
                  f"{row['images_s']:.1f} images/s (forward {row['forward_images_s']:.1f})", flush=True)
    return results


def markdown(results: dict) -> str:
    lines = ["| configuration (c-MWP) | forward | compiled | floor | compiled / floor | target | "
             "met | eager walk | memory | batch 32, images/s (forward) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: | ---: |"]
    for config, row in results.items():
        lines.append(f"| {config} | {row['forward_ms']:.1f} ms | {row['compiled']:.2f}× | "
                     f"{row['floor']:.2f}× | {row['to_floor']:.2f} | ≤ {row['limit']:.2f}× | "
                     f"{'yes' if row['met'] else 'no'} | {row['eager']:.2f}× | {row['memory']:.2f}× "
                     f"({'yes' if row['memory_met'] else 'no'}) | {row['images_s']:.1f} "
                     f"({row['forward_images_s']:.1f}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS),
                        metavar="CONFIG")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        function, *rest = args.worker
        result = (worker_timing(rest[0], int(rest[1])) if function == "timing" else
                  worker_compile(*rest) if function == "compile" else worker_memory(rest[0]))
        print(json.dumps(result))
        return
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"batch 1, 3x224x224, {args.runs} interleaved rounds", flush=True)
    results = measure(args.configs, args.runs)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.markdown:
        args.markdown.write_text(markdown(results))


if __name__ == "__main__":
    main()
