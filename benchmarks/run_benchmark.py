"""exbp's benchmark: time and memory of MWP / c-MWP against onnxruntime's forward pass.

    pip install -e ".[bench]"           # torch and torchvision export the models; TorchRay, Zennit
    python benchmarks/run_benchmark.py  # [--models vgg16 resnet50 ...] [--runs 10] [--json FILE]
    python benchmarks/run_benchmark.py --device cuda   # GPU mode (the gpu extra, a CUDA device)

For each torchvision model (random weights, seed 0, exported once to ONNX opset 17, batch 1,
3×224×224) one worker process times, in interleaved rounds after a warm-up, onnxruntime's forward
pass alone (the plain model, default session options) and every exbp configuration; ratios are
medians over the same rounds, so machine noise hits both sides alike. Peak resident memory is
measured in a fresh process per configuration (the forward pass alone likewise). Where TorchRay
or Zennit is installed, their (contrastive) excitation backprop runs on the same torchvision model
at the same layer, in the same run, and exbp's speed-up over them is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from models import ARCHITECTURES, EXTRA_LAYERS, TORCHRAY_LAYERS, module_output, onnx_model  # noqa: E402
from timing import SETTLE_S, interleaved_medians  # noqa: E402

TARGETS = {  # (configuration, limit on the ratio to the forward pass), from the performance issue
    "cmwp@torchray": 1.5, "cmwp@pool3": 2.2, "top5-cmwp@torchray": 2.5, "cmwp@pixels": 4.0,
}
MEMORY_LIMIT = 2.0


def configurations(model: str) -> dict[str, tuple]:
    """name -> (layer module or "image" or None for the default, method, targets)."""
    at = TORCHRAY_LAYERS.get(model)
    where = "torchray" if at else "default"
    configs = {f"mwp@{where}": (at, "mwp", [1]), f"cmwp@{where}": (at, "cmwp", [1]),
               f"top5-cmwp@{where}": (at, "cmwp", "top5"), "mwp@pixels": ("image", "mwp", [1]),
               "cmwp@pixels": ("image", "cmwp", [1])}
    for name, module in EXTRA_LAYERS.get(model, {}).items():
        configs[f"cmwp@{name}"] = (module, "cmwp", [1])
    return configs


def _tensor(path: Path, layer):
    return layer if layer in (None, "image") else module_output(path, layer)


# ---- workers (run in their own process) -----------------------------------------------------

def _input():
    return np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)


def _plain_session(path: Path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def worker_timing(model: str, runs: int) -> dict:
    import exbp
    path, x = onnx_model(model), _input()
    session = _plain_session(path)
    explainer = exbp.Explainer(path)
    jobs = {"forward": lambda: session.run(None, {"image": x})}
    for name, (layer, method, targets) in configurations(model).items():
        tensor = _tensor(path, layer)
        jobs[name] = (lambda t=tensor, m=method, k=targets:
                      explainer.explain(x, targets=k, layer=t, method=m))
    medians = interleaved_medians(jobs, runs)
    return {"median_s": medians, "layers": {name: explainer.explain(x, targets=[1], layer=_tensor(
        path, layer), method="mwp").layer for name, (layer, _, _) in configurations(model).items()}}


def worker_memory(model: str, config: str) -> dict:
    path, x = onnx_model(model), _input()
    if config == "forward":
        session = _plain_session(path)
        for _ in range(3):
            session.run(None, {"image": x})
    else:
        import exbp
        layer, method, targets = configurations(model)[config]
        explainer = exbp.Explainer(path)
        for _ in range(3):
            explainer.explain(x, targets=targets, layer=_tensor(path, layer), method=method)
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def worker_references(model: str, runs: int) -> dict:
    """TorchRay's contrastive excitation backprop and Zennit's excitation backprop, if installed."""
    import torch
    from models import torchvision_model

    torch.set_num_threads(os.cpu_count() or 1)
    network = torchvision_model(model)
    x = torch.from_numpy(_input())
    layer = TORCHRAY_LAYERS[model]
    timings = {}
    try:
        from torchray.attribution.excitation_backprop import contrastive_excitation_backprop

        contrast = {"vgg16": "classifier.4", "resnet50": "avgpool", "googlenet": "dropout"}[model]

        def torchray_job():
            contrastive_excitation_backprop(network, x, 1, saliency_layer=layer, contrast_layer=contrast)
        timings["torchray_cmwp"] = _median_time(torchray_job, runs)
    except ImportError:
        pass
    try:
        from zennit.composites import ExcitationBackprop
        composite = ExcitationBackprop(zero_params=["bias"])
        timings["zennit_mwp_pixels"] = _median_time(lambda: _zennit_excitation(composite, network, x), runs)
    except ImportError:
        pass
    with torch.no_grad():
        timings["torch_forward"] = _median_time(lambda: network(x), runs)
    return {"median_s": timings}


def _zennit_excitation(composite, network, x):
    """Zennit's excitation backprop (MWP) of class 1 to the input pixels."""
    import torch

    x = x.clone().requires_grad_(True)
    with composite.context(network) as modified:
        output = modified(x)
        target = torch.zeros_like(output)
        target[:, 1] = 1.0
        (relevance,) = torch.autograd.grad(output, x, target)
    return relevance


def _median_time(job, runs: int) -> float:
    job(), job()
    values = []
    for _ in range(runs):
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        job()
        values.append(time.perf_counter() - started)
    return statistics.median(values)


GPU_MODELS = ("vgg16", "resnet50", "googlenet")
GPU_BATCHES = (1, 32)


def worker_gpu(model: str, batch: int, runs: int) -> dict:
    """onnxruntime's CUDA forward pass alone against exbp on the CuPy backend, input on the GPU,
    every job ending in a device synchronisation; peak device memory of each phase."""
    import cupy
    import onnxruntime as ort

    import exbp

    path = onnx_model(model)
    x = cupy.asarray(np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32))
    session = ort.InferenceSession(str(path), providers=[("CUDAExecutionProvider", {"device_id": 0}),
                                                         "CPUExecutionProvider"])
    binding = session.io_binding()
    binding.bind_ortvalue_input("image", ort.OrtValue.from_dlpack(x))
    binding.bind_output("logits", "cuda", 0)
    device = cupy.cuda.Device(0)

    def forward():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
    explainer = exbp.Explainer(path, device="cuda")
    jobs = {"forward": forward}
    for name, (layer, method, targets) in configurations(model).items():
        tensor = _tensor(path, layer)
        jobs[name] = (lambda t=tensor, m=method, k=targets:
                      explainer.explain(x, targets=k, layer=t, method=m))
    peaks = {}
    for name, job in jobs.items():
        job(), job()
        device.synchronize()
        free, total = cupy.cuda.runtime.memGetInfo()
        peaks[name] = (total - free) / 2 ** 20
    times = {name: [] for name in jobs}
    for _ in range(runs):
        for name, job in jobs.items():
            device.synchronize()
            started = time.perf_counter()
            job()
            device.synchronize()
            times[name].append(time.perf_counter() - started)
    return {"median_s": {name: statistics.median(v) for name, v in times.items()},
            "device_memory_mb": peaks, "device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()}


def gpu_report(models, runs: int, path: Path) -> int:
    from exbp import cuda_unavailable

    reason = cuda_unavailable()
    if reason:
        print(f"GPU mode needs a CUDA backend: {reason}", file=sys.stderr)
        return 1
    report = {"runs": runs, "models": {}}
    for model in models:
        onnx_model(model)
        for batch in GPU_BATCHES:
            result = _spawn("gpu", model, batch, runs)
            report["device"] = result["device"]
            forward = result["median_s"]["forward"]
            print(f"\n{model}, batch {batch}, {result['device']}: onnxruntime CUDA forward "
                  f"{forward * 1e3:.2f} ms, device memory {result['device_memory_mb']['forward']:.0f} MB")
            rows = {}
            for name, seconds in result["median_s"].items():
                if name == "forward":
                    continue
                rows[name] = {"ms": seconds * 1e3, "ratio": seconds / forward,
                              "device_memory_mb": result["device_memory_mb"][name]}
                print(f"  {name:22s} {seconds * 1e3:9.2f} ms {seconds / forward:7.2f} × fwd "
                      f"{result['device_memory_mb'][name]:8.0f} MB")
            report["models"][f"{model}@{batch}"] = {"forward_ms": forward * 1e3, "configs": rows}
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nmedians of {runs} runs after warm-up, synchronised; JSON: {path}")
    return 0


def _spawn(*args) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---- the report ---------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory workers")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        kind, model, *rest = args.worker
        work = {"timing": lambda: worker_timing(model, int(rest[0])),
                "memory": lambda: worker_memory(model, rest[0]),
                "references": lambda: worker_references(model, int(rest[0])),
                "gpu": lambda: worker_gpu(model, int(rest[0]), int(rest[1]))}[kind]
        print(json.dumps(work()))
        return 0
    if args.device == "cuda":
        models = [m for m in args.models if m in GPU_MODELS] or list(GPU_MODELS)
        return gpu_report(models, max(args.runs, 20), args.json.with_name("results_gpu.json"))

    for model in args.models:
        onnx_model(model)                      # export once, outside the timed workers
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    report = {"machine": machine, "runs": args.runs, "models": {}}
    failures = []
    for model in args.models:
        timing = _spawn("timing", model, args.runs)
        forward = timing["median_s"]["forward"]
        entry = {"forward_ms": forward * 1e3, "configs": {}}
        memory_forward = None if args.no_memory else _spawn("memory", model, "forward")["peak_rss_mb"]
        entry["forward_peak_rss_mb"] = memory_forward
        for name in configurations(model):
            seconds = timing["median_s"][name]
            row = {"ms": seconds * 1e3, "ratio": seconds / forward, "layer": timing["layers"][name]}
            if memory_forward:
                peak = _spawn("memory", model, name)["peak_rss_mb"]
                row.update(peak_rss_mb=peak, memory_ratio=peak / memory_forward)
            entry["configs"][name] = row
        if model in TORCHRAY_LAYERS:
            try:
                references = _spawn("references", model, args.runs)["median_s"]
                entry["references_ms"] = {k: v * 1e3 for k, v in references.items()}
            except RuntimeError as exc:
                entry["references_error"] = str(exc).splitlines()[-1]
        report["models"][model] = entry
        failures += _print_model(model, entry)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nmachine: {machine}; medians of {args.runs} interleaved runs; JSON: {args.json}")
    print("targets met" if not failures else "targets missed: " + "; ".join(failures))
    return 0


def _print_model(model: str, entry: dict) -> list[str]:
    failures = []
    print(f"\n{model}: onnxruntime forward {entry['forward_ms']:.1f} ms"
          + (f", peak RSS {entry['forward_peak_rss_mb']:.0f} MB" if entry["forward_peak_rss_mb"] else ""))
    print(f"  {'configuration':22s} {'ms':>8s} {'× fwd':>7s} {'target':>7s} {'× mem':>6s}  layer")
    for name, row in entry["configs"].items():
        key = name.replace("@default", "@torchray")
        limit = TARGETS.get(key) if model in TORCHRAY_LAYERS or key == "cmwp@pixels" else None
        mark = "" if limit is None else (" ok" if row["ratio"] <= limit else " MISS")
        if limit is not None and row["ratio"] > limit:
            failures.append(f"{model} {name} {row['ratio']:.2f}× > {limit}×")
        memory = row.get("memory_ratio")
        if memory is not None and memory > MEMORY_LIMIT:
            failures.append(f"{model} {name} memory {memory:.2f}× > {MEMORY_LIMIT}×")
        print(f"  {name:22s} {row['ms']:8.1f} {row['ratio']:7.2f} "
              f"{('≤' + str(limit)) if limit else '':>7s}{mark:5s} "
              f"{'' if memory is None else f'{memory:5.2f}'}  {row['layer']}")
    counterpart = {"torchray_cmwp": "cmwp@torchray", "zennit_mwp_pixels": "mwp@pixels"}
    for reference, ms in entry.get("references_ms", {}).items():
        if reference == "torch_forward":
            print(f"  torch forward {ms:.1f} ms")
            continue
        ours = entry["configs"][counterpart[reference]]
        speedup = ms / ours["ms"]
        print(f"  {reference:22s} {ms:8.1f} ms   exbp {counterpart[reference]} is {speedup:.1f}× faster")
        if speedup < 1:
            failures.append(f"{model} slower than {reference}")
    if "references_error" in entry:
        print(f"  references failed: {entry['references_error']}")
    return failures


if __name__ == "__main__":
    sys.exit(main())
