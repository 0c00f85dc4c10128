"""Two exbp source trees timed against each other on torchvision models: was a change faster or
slower? (needs torch and torchvision, to export the models once).

    python benchmarks/compare_trees.py --baseline /path/to/old/checkout --models resnet50 efficientnet_b0

For each model, each tree runs in a fresh process in alternating rounds (baseline, this tree,
baseline, ...), and reports medians of ``--runs`` calls as ratios to onnxruntime's forward pass
timed in the same process: MWP to the pixels, and c-MWP at the default layer. Ratios, not times,
because these machines are shared and noisy; compare the rounds' spread before reading a
difference.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TIMED = r'''
import statistics, sys, time
import numpy as np, onnxruntime as ort, exbp
path, runs = sys.argv[1], int(sys.argv[2])
explainer = exbp.Explainer(path)
x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
def median(call):
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter(); call(); times.append(time.perf_counter() - start)
    return statistics.median(times)
forward = median(lambda: session.run(None, {name: x}))
pixels = median(lambda: explainer.explain(x, layer=explainer.input_spec.name, method="mwp"))
default = median(lambda: explainer.explain(x, method="cmwp"))
print(f"{forward * 1e3:.1f} {pixels / forward:.2f} {default / forward:.2f}")
'''


def export(name: str, folder: Path) -> Path:
    path = folder / f"{name}.onnx"
    if not path.exists():
        import torch
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"], dynamic_axes={"image": {0: "N"}})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other exbp source tree")
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v2", "efficientnet_b0"])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per tree")
    parser.add_argument("--runs", type=int, default=15, help="timed calls per round")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "exbp-compare-trees")
    args = parser.parse_args()
    try:
        import torch, torchvision  # noqa: F401,E401
    except ImportError:
        print("compare_trees needs torch and torchvision (pip install torch torchvision)")
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    trees = {"baseline": args.baseline.resolve(), "this tree": Path(__file__).resolve().parents[1]}
    print("model | tree | forward ms | MWP pixels × fwd | c-MWP default × fwd   (one line per round)")
    for name in args.models:
        path = export(name, args.cache)
        for _ in range(args.rounds):
            for label, root in trees.items():
                result = subprocess.run([sys.executable, "-c", TIMED, str(path), str(args.runs)],
                                        env={**os.environ, "PYTHONPATH": str(root)},
                                        capture_output=True, text=True)
                line = result.stdout.strip() or f"failed: {result.stderr.strip().splitlines()[-1:]}"
                print(f"{name} | {label} | {line}", flush=True)


if __name__ == "__main__":
    main()
