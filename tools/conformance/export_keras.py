"""Keras 3 (TensorFlow backend) functional definitions of the conformance networks.

Run with the TensorFlow venv (requirements-tf.txt), once per exporter, each in its own process
(Keras's ONNX export patches tf2onnx in-process; the tf2onnx export must see tf2onnx as installed):

    python tools/conformance/export_keras.py tf2onnx
    python tools/conformance/export_keras.py keras_export

Both also write the Keras logits and block activations to BUILD_DIR.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if os.environ.get("PYTHONHASHSEED") != "0":
    # str hashes must not vary between runs: see the tf2onnx Node hash below
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx.graph  # noqa: E402

# tf2onnx 1.17's transpose optimizer iterates over set(node.inputs), Node objects hashed by id(),
# so the order in which it removes Transposes, and with it the names of shared constants and the
# layout of the file, change from run to run (the graphs compute the same). Hashing Nodes by their
# (unique, fixed) name with PYTHONHASHSEED=0 makes both TF exports byte-for-byte reproducible.
tf2onnx.graph.Node.__hash__ = lambda self: hash(self.name)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

assert keras.backend.backend() == "tensorflow"
keras.utils.set_random_seed(0)


class Builder:
    """Builds a functional model layer by layer, loading the canonical weights as it goes."""

    def __init__(self, network):
        self.w = C.weights(network)
        self.used: set[str] = set()
        self.loads: list[tuple[layers.Layer, list[np.ndarray]]] = []

    def take(self, key):
        self.used.add(key)
        return self.w[key]

    def conv(self, x, name, cout, k, stride=1, bias=False):
        if k > 1 and stride > 1:
            # PyTorch pads 1 on every side; Keras "same" at stride 2 would pad (0, 1).
            x = layers.ZeroPadding2D(k // 2, name=name.replace(".", "_") + "_pad")(x)
            padding = "valid"
        else:
            padding = "same" if k > 1 else "valid"
        layer = layers.Conv2D(cout, k, strides=stride, padding=padding, use_bias=bias, name=name.replace(".", "_"))
        y = layer(x)
        kernel = self.take(name + ".weight").transpose(2, 3, 1, 0)  # OIHW -> HWIO
        self.loads.append((layer, [kernel, self.take(name + ".bias")] if bias else [kernel]))
        return y

    def depthwise(self, x, name, k, stride):
        if stride > 1:
            x = layers.ZeroPadding2D(k // 2, name=name.replace(".", "_") + "_pad")(x)
            padding = "valid"
        else:
            padding = "same"
        layer = layers.DepthwiseConv2D(k, strides=stride, padding=padding, use_bias=False, name=name.replace(".", "_"))
        y = layer(x)
        kernel = self.take(name + ".weight").transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        self.loads.append((layer, [kernel]))
        return y

    def bn(self, x, name):
        layer = layers.BatchNormalization(epsilon=C.BN_EPS, name=name.replace(".", "_"))
        y = layer(x)
        self.loads.append((layer, [self.take(name + "." + f) for f in ("gamma", "beta", "mean", "var")]))
        return y

    def act(self, x, act, name):
        if act == "relu":
            return layers.ReLU(name=name.replace(".", "_") + "_relu")(x)
        if act == "relu6":
            return layers.ReLU(max_value=6.0, name=name.replace(".", "_") + "_relu6")(x)
        return x

    def conv_bn(self, x, name, cout, k, stride=1, act="relu"):
        x = self.conv(x, name + ".conv", cout, k, stride)
        x = self.bn(x, name + ".bn")
        return self.act(x, act, name)

    def dense(self, x, name, cout):
        layer = layers.Dense(cout, name=name)
        y = layer(x)
        self.loads.append((layer, [self.take(name + ".weight").T, self.take(name + ".bias")]))
        return y

    def finish(self, inp, logits, blocks, name):
        model = keras.Model(inp, logits, name=name)
        for layer, values in self.loads:
            layer.set_weights(values)
        missing = set(self.w) - self.used
        assert not missing, missing
        features = keras.Model(inp, [logits] + [blocks[k] for k in C.BLOCKS[name]], name=name + "_features")
        return model, features


def small_cnn():
    b = Builder("small_cnn")
    inp = keras.Input((C.SIZE, C.SIZE, 3), name="input")
    blocks = {}
    blocks["stem"] = x = b.conv_bn(inp, "stem", 8, 3)
    blocks["down1"] = x = b.conv_bn(x, "down1", 16, 3, 2)
    blocks["down2"] = x = b.conv_bn(x, "down2", 24, 3, 2)
    y = b.conv_bn(x, "res.a", 24, 3)
    y = b.conv_bn(y, "res.b", 24, 3, act=None)
    x = layers.Add(name="res_add")([y, x])
    blocks["res"] = x = layers.ReLU(name="res_relu")(x)
    blocks["gap"] = x = layers.GlobalAveragePooling2D(name="gap")(x)
    logits = b.dense(x, "fc", C.NUM_CLASSES)
    return b.finish(inp, logits, blocks, "small_cnn")


def basic_block(b, x, name, cout, stride, project):
    y = b.conv_bn(x, name + ".a", cout, 3, stride)
    y = b.conv_bn(y, name + ".b", cout, 3, act=None)
    shortcut = b.conv_bn(x, name + ".proj", cout, 1, stride, act=None) if project else x
    x = layers.Add(name=name + "_add")([y, shortcut])
    return layers.ReLU(name=name + "_out")(x)


def resnet_like():
    b = Builder("resnet_like")
    w = C.RESNET_WIDTHS
    inp = keras.Input((C.SIZE, C.SIZE, 3), name="input")
    blocks = {}
    blocks["stem"] = x = b.conv_bn(inp, "stem", w["stem"], 3, 2)
    # MaxPool2d(3, 2, padding=1): zero padding is the same as -inf padding here, after a ReLU.
    x = layers.ZeroPadding2D(1, name="pool_pad")(x)
    blocks["pool"] = x = layers.MaxPooling2D(3, 2, padding="valid", name="pool")(x)
    blocks["stage1"] = x = basic_block(b, x, "stage1", w["stage1"], 1, False)
    blocks["stage2"] = x = basic_block(b, x, "stage2", w["stage2"], 2, True)
    blocks["stage3"] = x = basic_block(b, x, "stage3", w["stage3"], 2, True)
    blocks["gap"] = x = layers.GlobalAveragePooling2D(name="gap")(x)
    logits = b.dense(x, "fc", C.NUM_CLASSES)
    return b.finish(inp, logits, blocks, "resnet_like")


def squeeze_excite(b, x, name, c, gate):
    s = layers.GlobalAveragePooling2D(keepdims=True, name=name.replace(".", "_") + "_pool")(x)
    s = b.conv(s, name + ".reduce", C.se_width(c), 1, bias=True)
    s = layers.ReLU(name=name.replace(".", "_") + "_relu")(s)
    s = b.conv(s, name + ".expand", c, 1, bias=True)
    s = layers.Activation(gate, name=name.replace(".", "_") + "_gate")(s)
    return layers.Multiply(name=name.replace(".", "_") + "_scale")([x, s])


def mobilenet_like():
    b = Builder("mobilenet_like")
    inp = keras.Input((C.SIZE, C.SIZE, 3), name="input")
    blocks = {}
    x = layers.Rescaling(C.RESCALE_SCALE, offset=C.RESCALE_OFFSET, name="rescale")(inp)
    blocks["preprocess"] = x = layers.Normalization(mean=C.NORM_MEAN, variance=C.NORM_VAR, name="normalize")(x)
    blocks["stem"] = x = b.conv_bn(x, "stem", 16, 3, 2, act="relu6")
    for name, _cin, mid, cout, stride, gate, residual in C.MOBILENET_BLOCKS:
        y = b.conv_bn(x, name + ".expand", mid, 1, act="relu6")
        y = b.depthwise(y, name + ".dw.conv", 3, stride)
        y = b.bn(y, name + ".dw.bn")
        y = b.act(y, "relu6", name + ".dw")
        if gate:
            y = squeeze_excite(b, y, name + ".se", mid, gate)
        y = b.conv_bn(y, name + ".project", cout, 1, act=None)
        blocks[name] = x = layers.Add(name=name + "_add")([x, y]) if residual else y
    blocks["head"] = x = b.conv_bn(x, "head", C.MOBILENET_HEAD, 1, act="relu6")
    blocks["gap"] = x = layers.GlobalAveragePooling2D(name="gap")(x)
    logits = b.dense(x, "fc", C.NUM_CLASSES)
    return b.finish(inp, logits, blocks, "mobilenet_like")


MODELS = {"small_cnn": small_cnn, "resnet_like": resnet_like, "mobilenet_like": mobilenet_like}


def drop_unused_inputs(path) -> list[str]:
    """Keras's export leaves the Normalization layer's mean and variance as graph inputs that no
    node reads (tf2onnx folded their values into constants); onnxruntime then refuses to run
    without them. Remove graph inputs that no node consumes; nothing else is touched."""
    import onnx

    model = onnx.load(str(path))
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    dropped = [i.name for i in model.graph.input if i.name not in used]
    if dropped:
        keep = [i for i in model.graph.input if i.name in used]
        del model.graph.input[:]
        model.graph.input.extend(keep)
        onnx.save(model, str(path))
    return dropped


def main(exporter):
    import onnx
    import tf2onnx

    info = {"versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "tf2onnx": tf2onnx.__version__,
                         "onnx": onnx.__version__, "numpy": np.__version__},
            "notes": {n: ["tf2onnx's transpose optimizer iterates a set of Node objects hashed by id(), so constant "
                          "names and file bytes varied between runs; the generator hashes tf2onnx Nodes by name "
                          "(PYTHONHASHSEED=0) to make the export reproducible; the graph is what tf2onnx writes"]
                      for n in C.NETWORKS}}

    for network in C.NETWORKS:
        model, features = MODELS[network]()
        x = C.network_input(network, nchw=False)
        outs = features(x, training=False)
        logits = np.asarray(outs[0])
        blocks = {k: np.asarray(v) for k, v in zip(C.BLOCKS[network], outs[1:])}
        C.save_framework_result("keras", network, logits, blocks, "nhwc")
        path = C.export_path(network, exporter)
        spec = (tf.TensorSpec((None, C.SIZE, C.SIZE, 3), tf.float32, name="input"),)
        if exporter == "tf2onnx":
            model_proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=C.OPSET)
            onnx.save(model_proto, str(path))
        else:
            model.export(str(path), format="onnx", input_signature=spec, opset_version=C.OPSET)
            dropped = drop_unused_inputs(path)
            if dropped:
                info["notes"][network] += [
                    "Keras's export left the Normalization layer's mean and variance as graph inputs that no node "
                    f"reads ({', '.join(dropped)}); onnxruntime refuses to run without feeding them, so the generator "
                    "removed those unused graph inputs (nothing else changed)."
                ]
        print(network, exporter, "logits", logits.ravel())
    import json

    C.BUILD_DIR.mkdir(parents=True, exist_ok=True)
    (C.BUILD_DIR / f"info-{exporter}.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
