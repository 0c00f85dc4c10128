"""PyTorch definitions of the three conformance networks; exports torch_script and torch_dynamo.

Run with the PyTorch venv (requirements-torch.txt): ``python tools/conformance/export_torch.py``.
Also writes the PyTorch logits (float32 and float64) and block activations to BUILD_DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

torch.manual_seed(0)


class ConvBN(nn.Module):
    def __init__(self, cin, cout, k, stride=1, groups=1, act="relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=C.BN_EPS)
        self.act = act

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.act == "relu":
            x = F.relu(x)
        elif self.act == "relu6":
            x = F.relu6(x)
        return x


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 8, 3)
        self.down1 = ConvBN(8, 16, 3, stride=2)
        self.down2 = ConvBN(16, 24, 3, stride=2)
        self.res_a = ConvBN(24, 24, 3)
        self.res_b = ConvBN(24, 24, 3, act=None)
        self.fc = nn.Linear(24, C.NUM_CLASSES)

    def blocks(self, x):
        b = {}
        b["stem"] = x = self.stem(x)
        b["down1"] = x = self.down1(x)
        b["down2"] = x = self.down2(x)
        b["res"] = x = F.relu(self.res_b(self.res_a(x)) + x)
        b["gap"] = x = x.mean(dim=(2, 3))
        return self.fc(x), b

    def forward(self, x):
        return self.blocks(x)[0]


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, project):
        super().__init__()
        self.a = ConvBN(cin, cout, 3, stride)
        self.b = ConvBN(cout, cout, 3, act=None)
        self.proj = ConvBN(cin, cout, 1, stride, act=None) if project else None

    def forward(self, x):
        shortcut = self.proj(x) if self.proj is not None else x
        return F.relu(self.b(self.a(x)) + shortcut)


class ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        w = C.RESNET_WIDTHS
        self.stem = ConvBN(3, w["stem"], 3, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stage1 = BasicBlock(w["stem"], w["stage1"], 1, project=False)
        self.stage2 = BasicBlock(w["stage1"], w["stage2"], 2, project=True)
        self.stage3 = BasicBlock(w["stage2"], w["stage3"], 2, project=True)
        self.fc = nn.Linear(w["stage3"], C.NUM_CLASSES)

    def blocks(self, x):
        b = {}
        b["stem"] = x = self.stem(x)
        b["pool"] = x = self.pool(x)
        b["stage1"] = x = self.stage1(x)
        b["stage2"] = x = self.stage2(x)
        b["stage3"] = x = self.stage3(x)
        b["gap"] = x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x), b

    def forward(self, x):
        return self.blocks(x)[0]


class SqueezeExcite(nn.Module):
    def __init__(self, c, gate):
        super().__init__()
        self.reduce = nn.Conv2d(c, C.se_width(c), 1)
        self.expand = nn.Conv2d(C.se_width(c), c, 1)
        self.gate = nn.Sigmoid() if gate == "sigmoid" else nn.Hardsigmoid()

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        s = self.gate(self.expand(F.relu(self.reduce(s))))
        return x * s


class InvertedResidual(nn.Module):
    def __init__(self, cin, mid, cout, stride, gate, residual):
        super().__init__()
        self.expand = ConvBN(cin, mid, 1, act="relu6")
        self.dw = ConvBN(mid, mid, 3, stride, groups=mid, act="relu6")
        self.se = SqueezeExcite(mid, gate) if gate else None
        self.project = ConvBN(mid, cout, 1, act=None)
        self.residual = residual

    def forward(self, x):
        y = self.dw(self.expand(x))
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class MobileNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        # Keras's Rescaling + Normalization layers, as explicit affine ops.
        self.register_buffer("norm_mean", torch.tensor(C.NORM_MEAN).view(1, 3, 1, 1))
        self.register_buffer("norm_std", torch.tensor(np.sqrt(C.NORM_VAR)).view(1, 3, 1, 1))
        self.stem = ConvBN(3, 16, 3, stride=2, act="relu6")
        self.inverted = nn.ModuleDict(
            {name: InvertedResidual(cin, mid, cout, s, gate, res) for name, cin, mid, cout, s, gate, res in C.MOBILENET_BLOCKS}
        )
        self.head = ConvBN(C.MOBILENET_BLOCKS[-1][3], C.MOBILENET_HEAD, 1, act="relu6")
        self.fc = nn.Linear(C.MOBILENET_HEAD, C.NUM_CLASSES)

    def blocks(self, x):
        b = {}
        x = x * C.RESCALE_SCALE + C.RESCALE_OFFSET
        b["preprocess"] = x = (x - self.norm_mean) / self.norm_std
        b["stem"] = x = self.stem(x)
        for name, block in self.inverted.items():
            b[name] = x = block(x)
        b["head"] = x = self.head(x)
        b["gap"] = x = x.mean(dim=(2, 3))
        return self.fc(x), b

    def forward(self, x):
        return self.blocks(x)[0]


MODELS = {"small_cnn": SmallCNN, "resnet_like": ResNetLike, "mobilenet_like": MobileNetLike}

# torch module path of each canonical parameter-name prefix
RENAME = {"res.a": "res_a", "res.b": "res_b"}


def load(model: nn.Module, network: str) -> None:
    w = C.weights(network)
    modules = dict(model.named_modules())
    done = set()
    for key, value in w.items():
        layer, field = key.rsplit(".", 1)
        for a, b in RENAME.items():
            if layer.startswith(a):
                layer = b + layer[len(a):]
        if network == "mobilenet_like" and layer.startswith("block"):
            layer = "inverted." + layer
        m = modules[layer]
        t = torch.from_numpy(value.copy())
        if isinstance(m, nn.BatchNorm2d):
            target = {"gamma": m.weight, "beta": m.bias, "mean": m.running_mean, "var": m.running_var}[field]
        else:
            target = getattr(m, field)
        assert target.shape == t.shape, (key, target.shape, t.shape)
        with torch.no_grad():
            target.copy_(t)
        done.add(id(target))
    for name, p in list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if "running" in n]:
        assert id(p) in done, f"{network}: {name} not loaded"


# torch.onnx's dynamo exporter has no opset-17 implementations: asked for 17 it exports at 18 and
# then tries onnx's version converter, which fails on ReduceMean (axes as an input, not an
# initializer, at that point) and keeps 18. So the dynamo exports are opset 18, asked for directly.
DYNAMO_OPSET = 18


def main():
    import json

    import onnx
    import onnxscript

    info = {"versions": {"torch": torch.__version__, "onnxscript": onnxscript.__version__, "onnx": onnx.__version__,
                         "numpy": np.__version__}}
    C.BUILD_DIR.mkdir(parents=True, exist_ok=True)
    (C.BUILD_DIR / "info-torch_script.json").write_text(json.dumps({**info, "notes": {}}, indent=1))
    note = ("opset 18: the dynamo exporter's lowest; asked for opset 17 it exports 18, then onnx's version converter "
            "fails (axes_input_to_attribute: 'No initializer or constant input to node found', on ReduceMean) and "
            "the model stays at 18")
    (C.BUILD_DIR / "info-torch_dynamo.json").write_text(
        json.dumps({**info, "notes": {n: [note] for n in C.NETWORKS}}, indent=1))
    for network in C.NETWORKS:
        model = MODELS[network]().eval()
        load(model, network)
        x = torch.from_numpy(C.network_input(network))
        with torch.no_grad():
            logits, blocks = model.blocks(x)
            logits64, _ = model.double().blocks(x.double())
            model.float()
        C.save_framework_result(
            "torch", network, logits.numpy(), {k: v.numpy() for k, v in blocks.items()}, "nchw",
            extra={"logits_float64": logits64.numpy().astype(np.float64).ravel().tolist()},
        )

        path = C.export_path(network, "torch_script")
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=C.OPSET,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
        path = C.export_path(network, "torch_dynamo")
        program = torch.onnx.export(
            model, (x,), dynamo=True, opset_version=DYNAMO_OPSET,
            input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
        program.save(str(path), external_data=False)
        print(network, "logits", logits.numpy().ravel())


if __name__ == "__main__":
    main()
