"""Flax nnx definitions of the conformance networks; exports jax2onnx.

Run with the JAX venv (requirements-jax.txt; Python 3.12, which JAX 0.12 needs):
``python tools/conformance/export_flax.py``. Also writes the Flax logits and block activations
to BUILD_DIR. Flax convolutions are NHWC, so the export takes NHWC input.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
RNGS = nnx.Rngs(0)


def _pad(k, stride):
    # explicit symmetric padding, as PyTorch's padding=k//2 ("SAME" at stride 2 would pad (0, 1))
    return ((k // 2, k // 2), (k // 2, k // 2))


class ConvBN(nnx.Module):
    def __init__(self, cin, cout, k, stride=1, groups=1, act="relu"):
        self.conv = nnx.Conv(cin, cout, (k, k), strides=(stride, stride), padding=_pad(k, stride),
                             feature_group_count=groups, use_bias=False, rngs=RNGS)
        self.bn = nnx.BatchNorm(cout, use_running_average=True, epsilon=C.BN_EPS, rngs=RNGS)
        self.act = act

    def __call__(self, x):
        x = self.bn(self.conv(x))
        if self.act == "relu":
            x = jax.nn.relu(x)
        elif self.act == "relu6":
            x = jax.nn.relu6(x)
        return x


class SmallCNN(nnx.Module):
    def __init__(self):
        self.stem = ConvBN(3, 8, 3)
        self.down1 = ConvBN(8, 16, 3, 2)
        self.down2 = ConvBN(16, 24, 3, 2)
        self.res_a = ConvBN(24, 24, 3)
        self.res_b = ConvBN(24, 24, 3, act=None)
        self.fc = nnx.Linear(24, C.NUM_CLASSES, rngs=RNGS)

    def blocks(self, x):
        b = {}
        b["stem"] = x = self.stem(x)
        b["down1"] = x = self.down1(x)
        b["down2"] = x = self.down2(x)
        b["res"] = x = jax.nn.relu(self.res_b(self.res_a(x)) + x)
        b["gap"] = x = jnp.mean(x, axis=(1, 2))
        return self.fc(x), b

    def __call__(self, x):
        return self.blocks(x)[0]


class BasicBlock(nnx.Module):
    def __init__(self, cin, cout, stride, project):
        self.a = ConvBN(cin, cout, 3, stride)
        self.b = ConvBN(cout, cout, 3, act=None)
        self.proj = ConvBN(cin, cout, 1, stride, act=None) if project else None

    def __call__(self, x):
        shortcut = self.proj(x) if self.proj is not None else x
        return jax.nn.relu(self.b(self.a(x)) + shortcut)


class ResNetLike(nnx.Module):
    def __init__(self):
        w = C.RESNET_WIDTHS
        self.stem = ConvBN(3, w["stem"], 3, 2)
        self.stage1 = BasicBlock(w["stem"], w["stage1"], 1, False)
        self.stage2 = BasicBlock(w["stage1"], w["stage2"], 2, True)
        self.stage3 = BasicBlock(w["stage2"], w["stage3"], 2, True)
        self.fc = nnx.Linear(w["stage3"], C.NUM_CLASSES, rngs=RNGS)

    def blocks(self, x):
        b = {}
        b["stem"] = x = self.stem(x)
        # MaxPool 3x3 / 2 with -inf padding 1. jax2onnx's nnx.max_pool handler reads only the string
        # paddings and exports explicit ((1, 1), (1, 1)) as VALID (a 15x15 output), and its
        # lax.reduce_window lowering gives a MaxPool onnxruntime rejects ("Unsupported pooling
        # size"); so: an explicit -inf pad, then a VALID max_pool.
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
        b["pool"] = x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="VALID")
        b["stage1"] = x = self.stage1(x)
        b["stage2"] = x = self.stage2(x)
        b["stage3"] = x = self.stage3(x)
        b["gap"] = x = jnp.mean(x, axis=(1, 2))
        return self.fc(x), b

    def __call__(self, x):
        return self.blocks(x)[0]


class SqueezeExcite(nnx.Module):
    def __init__(self, c, gate):
        self.reduce = nnx.Conv(c, C.se_width(c), (1, 1), rngs=RNGS)
        self.expand = nnx.Conv(C.se_width(c), c, (1, 1), rngs=RNGS)
        self.gate = gate

    def __call__(self, x):
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = self.expand(jax.nn.relu(self.reduce(s)))
        s = jax.nn.sigmoid(s) if self.gate == "sigmoid" else jax.nn.hard_sigmoid(s)
        return x * s


class InvertedResidual(nnx.Module):
    def __init__(self, cin, mid, cout, stride, gate, residual):
        self.expand = ConvBN(cin, mid, 1, act="relu6")
        self.dw = ConvBN(mid, mid, 3, stride, groups=mid, act="relu6")
        self.se = SqueezeExcite(mid, gate) if gate else None
        self.project = ConvBN(mid, cout, 1, act=None)
        self.residual = residual

    def __call__(self, x):
        y = self.dw(self.expand(x))
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


NORM_STD = np.sqrt(C.NORM_VAR).astype(np.float32)


class MobileNetLike(nnx.Module):
    def __init__(self):
        self.stem = ConvBN(3, 16, 3, 2, act="relu6")
        for name, cin, mid, cout, s, gate, res in C.MOBILENET_BLOCKS:
            setattr(self, name, InvertedResidual(cin, mid, cout, s, gate, res))
        self.head = ConvBN(C.MOBILENET_BLOCKS[-1][3], C.MOBILENET_HEAD, 1, act="relu6")
        self.fc = nnx.Linear(C.MOBILENET_HEAD, C.NUM_CLASSES, rngs=RNGS)

    def blocks(self, x):
        b = {}
        # Keras's Rescaling + Normalization layers, as explicit affine ops
        x = x * np.float32(C.RESCALE_SCALE) + np.float32(C.RESCALE_OFFSET)
        b["preprocess"] = x = (x - C.NORM_MEAN) / NORM_STD
        b["stem"] = x = self.stem(x)
        for name, *_ in C.MOBILENET_BLOCKS:
            b[name] = x = getattr(self, name)(x)
        b["head"] = x = self.head(x)
        b["gap"] = x = jnp.mean(x, axis=(1, 2))
        return self.fc(x), b

    def __call__(self, x):
        return self.blocks(x)[0]


# jax2onnx asked for opset 17 writes ReduceMean with its axes as a second input (the opset-18 form)
# under an opset-17 import: onnx.checker and onnxruntime reject the model. So opset 18.
JAX2ONNX_OPSET = 18

MODELS = {"small_cnn": SmallCNN, "resnet_like": ResNetLike, "mobilenet_like": MobileNetLike}
RENAME = {"res.a": "res_a", "res.b": "res_b"}


def _set(var, value):
    assert tuple(var[...].shape) == value.shape, (var[...].shape, value.shape)
    var[...] = jnp.asarray(value)


def load(model, network):
    w = C.weights(network)
    for key, value in w.items():
        layer, field = key.rsplit(".", 1)
        for a, b in RENAME.items():
            if layer.startswith(a):
                layer = b + layer[len(a):]
        m = model
        for part in layer.split("."):
            m = getattr(m, part)
        if isinstance(m, nnx.BatchNorm):
            _set({"gamma": m.scale, "beta": m.bias, "mean": m.mean, "var": m.var}[field], value)
        elif isinstance(m, nnx.Linear):
            _set(m.kernel if field == "weight" else m.bias, value.T if field == "weight" else value)
        elif field == "weight":  # conv OIHW -> HWIO; depthwise (C, 1, kh, kw) -> (kh, kw, 1, C) too
            _set(m.kernel, value.transpose(2, 3, 1, 0))
        else:
            _set(m.bias, value)
    # every parameter and statistic must have come from the canonical weights
    n_loaded = len(w)
    n_model = len(jax.tree_util.tree_leaves(nnx.state(model, nnx.Param, nnx.BatchStat)))
    assert n_loaded == n_model, (network, n_loaded, n_model)


def drop_wrong_value_info(proto, x):
    """jax2onnx (every opset tried: 17, 18, 23) annotates tensors that its layout pass turned NCHW
    with their NHWC JAX shapes in graph.value_info (e.g. a Relu output (B, 64, 64, 8) that is
    (B, 8, 64, 64)); onnx.checker's full check fails on that, and onnxruntime warns "Error merging
    shape info". Drop the value_info entries whose shape disagrees with the tensor onnxruntime
    computes; the nodes, initializers, inputs and outputs are untouched."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    annotated = {v.name: v for v in proto.graph.value_info}
    for name in annotated:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, annotated[name].type.tensor_type.elem_type, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = list(annotated)
    actual = dict(zip(names, sess.run(names, {proto.graph.input[0].name: x})))
    wrong = []
    for name, v in annotated.items():
        dims = v.type.tensor_type.shape.dim
        shape = actual[name].shape
        ok = len(dims) == len(shape) and all(
            (not d.HasField("dim_value")) or d.dim_value == s for d, s in zip(dims, shape))
        if not ok:
            wrong.append(name)
    keep = [v for v in proto.graph.value_info if v.name not in wrong]
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(keep)
    return wrong


def main():
    import importlib.metadata
    import json

    import flax
    import jax2onnx
    import jaxlib
    import onnx

    info = {"versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                         "jax2onnx": importlib.metadata.version("jax2onnx"), "onnx": onnx.__version__, "numpy": np.__version__},
            "notes": {n: [f"opset {JAX2ONNX_OPSET}: asked for opset 17, jax2onnx writes ReduceMean with axes as an "
                          "input (the opset-18 form) under an opset-17 import, which onnx.checker and onnxruntime "
                          "reject ('ReduceMean:13 has input size 2 not in range [min=1, max=1]')"]
                      for n in C.NETWORKS}}
    info["notes"]["resnet_like"] += [
        "jax2onnx's nnx.max_pool handler honours only 'SAME'/'VALID': explicit padding ((1, 1), (1, 1)) is exported "
        "as VALID (a 15x15 instead of 16x16 output, wrong logits), and lax.reduce_window(max) with that padding "
        "exports a MaxPool onnxruntime rejects ('Unsupported pooling size'). The Flax model therefore pads with "
        "-inf by jnp.pad and max-pools VALID, so this export has a Pad (constant -inf) before its MaxPool.",
        "jax2onnx's patched nnx.max_pool takes window_shape only as a keyword "
        "(nnx.max_pool(x, (3, 3), ...) fails with 'patched_max_pool() takes 1 positional argument')"]
    for network in C.NETWORKS:
        model = MODELS[network]()
        load(model, network)
        x = C.network_input(network, nchw=False)
        logits, blocks = model.blocks(jnp.asarray(x))
        C.save_framework_result("flax", network, np.asarray(logits), {k: np.asarray(v) for k, v in blocks.items()}, "nhwc")
        path = C.export_path(network, "jax2onnx")
        proto = jax2onnx.to_onnx(model, [("B", C.SIZE, C.SIZE, 3)], model_name=network, opset=JAX2ONNX_OPSET,
                                 input_names=["input"], output_names=["logits"])
        wrong = drop_wrong_value_info(proto, x)
        onnx.checker.check_model(proto, full_check=True)
        info["notes"].setdefault(network, []).append(
            f"jax2onnx annotated {len(wrong)} tensors in graph.value_info with their NHWC (JAX) shapes although the "
            "graph computes them NCHW (onnx.checker full_check: 'Inferred shape and existing shape differ'); the "
            f"generator dropped those {len(wrong)} value_info entries ({', '.join(wrong)}), nothing else")
        onnx.save(proto, str(path))
        print(network, "jax2onnx logits", np.asarray(logits).ravel())
    C.BUILD_DIR.mkdir(parents=True, exist_ok=True)
    (C.BUILD_DIR / "info-jax2onnx.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
