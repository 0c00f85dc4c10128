"""The benchmark's models: torchvision architectures with random weights (seed 0), exported to ONNX
(opset 17) once and kept in benchmarks/models/. torch and torchvision are needed only here."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

FOLDER = Path(__file__).resolve().parent / "models"
ARCHITECTURES = ("vgg16", "resnet50", "googlenet", "mobilenet_v2", "densenet121")

# TorchRay's saliency layers (its benchmark's choices) and VGG16's pool3, as torchvision modules
TORCHRAY_LAYERS = {"vgg16": "features.23", "resnet50": "layer3", "googlenet": "inception4e"}
EXTRA_LAYERS = {"vgg16": {"pool3": "features.16"}}


def torchvision_model(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    if name == "googlenet":
        model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    else:
        model = getattr(torchvision.models, name)(weights=None)
    return model.eval()


def onnx_model(name: str) -> Path:
    """The exported model's path, exporting it on first use (with a list of its node names
    beside it, so that finding a layer does not load the whole model)."""
    path = FOLDER / f"{name}.onnx"
    if not path.exists():
        import torch

        FOLDER.mkdir(exist_ok=True)
        torch.onnx.export(torchvision_model(name), torch.zeros(1, 3, 224, 224), str(path),
                          dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    nodes = path.with_suffix(".nodes.json")
    if not nodes.exists():
        graph = onnx.load(str(path)).graph
        nodes.write_text(json.dumps([[node.name, node.output[0]] for node in graph.node]))
    return path


def module_output(path: Path, module: str) -> str:
    """The ONNX tensor a torchvision module (e.g. "layer3") outputs: the output of the last node
    the TorchScript exporter named under it."""
    parts = module.split(".")
    prefix = "/" + "/".join(".".join(parts[:i + 1]) for i in range(len(parts))) + "/"   # /a/a.b/
    nodes = json.loads(path.with_suffix(".nodes.json").read_text())
    names = [output for name, output in nodes if name.startswith(prefix)]
    if not names:
        raise KeyError(f"no node of module {module} in {path.name}")
    return names[-1]
