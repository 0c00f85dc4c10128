"""What every framework script of the conformance fixtures shares: numpy only.

* the three networks' parameters (names, shapes in one canonical layout), drawn from one seeded
  generator, so that PyTorch, Keras and Flax load bit-identical float32 weights;
* the one fixed input image;
* the block names, and where the files go.

Canonical layouts (PyTorch's): a convolution kernel is OIHW, a depthwise kernel is (C, 1, kh, kw),
a dense kernel is (out, in). Each framework script converts to its own layout:

=============  ==============  =====================  ==============
parameter      PyTorch         Keras 3                Flax nnx
=============  ==============  =====================  ==============
conv kernel    OIHW            HWIO  (2, 3, 1, 0)     HWIO  (2, 3, 1, 0)
depthwise      (C, 1, kh, kw)  (kh, kw, C, 1)         (kh, kw, 1, C)
                               (2, 3, 0, 1)           (2, 3, 1, 0)
dense kernel   (out, in)       (in, out)  (.T)        (in, out)  (.T)
BatchNorm      weight, bias,   gamma, beta,           scale, bias,
               running_mean,   moving_mean,           mean, var
               running_var     moving_variance
=============  ==============  =====================  ==============
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SEED = 20240607
BN_EPS = 1e-5
OPSET = 17
NUM_CLASSES = 5
SIZE = 64

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "tests" / "data" / "conformance"
# Framework activations and logits travel between the venvs through this folder (not committed).
BUILD_DIR = Path(os.environ.get("CONFORMANCE_BUILD", "/tmp/exbp-conformance-build"))

NETWORKS = ("small_cnn", "resnet_like", "mobilenet_like")
EXPORTERS = ("torch_script", "torch_dynamo", "tf2onnx", "keras_export", "jax2onnx")

# The input each network sees is input.npy divided by this (float32 division).
INPUT_DIVISOR = {"small_cnn": 255.0, "resnet_like": 255.0, "mobilenet_like": 1.0}

# mobilenet_like's preprocessing: Rescaling(1/127.5, offset=-1), then a per-channel Normalization.
RESCALE_SCALE = 1.0 / 127.5
RESCALE_OFFSET = -1.0
NORM_MEAN = np.array([-0.03, -0.09, -0.19], np.float32)
NORM_VAR = np.array([0.2116, 0.2007, 0.2025], np.float32)

# Candidate blocks, in network order: the output of each natural layer (after its activation).
# The manifest keeps those that every export holds as one tensor.
BLOCKS = {
    "small_cnn": ["stem", "down1", "down2", "res", "gap"],
    "resnet_like": ["stem", "pool", "stage1", "stage2", "stage3", "gap"],
    "mobilenet_like": ["preprocess", "stem", "block1", "block2", "block3", "head", "gap"],
}

# ---- parameters ---------------------------------------------------------------------------------


class _Plan:
    """Records parameter names and shapes, in drawing order."""

    def __init__(self):
        self.entries: list[tuple[str, str, tuple]] = []

    def conv(self, name, cin, cout, k, bias=False):
        self.entries.append((name, "conv", (cout, cin, k, k, bias)))

    def dw(self, name, c, k):
        self.entries.append((name, "dw", (c, k)))

    def bn(self, name, c):
        self.entries.append((name, "bn", (c,)))

    def dense(self, name, cin, cout):
        self.entries.append((name, "dense", (cin, cout)))

    def conv_bn(self, name, cin, cout, k):
        self.conv(name + ".conv", cin, cout, k)
        self.bn(name + ".bn", cout)


def _small_cnn(p: _Plan):
    p.conv_bn("stem", 3, 8, 3)
    p.conv_bn("down1", 8, 16, 3)
    p.conv_bn("down2", 16, 24, 3)
    p.conv_bn("res.a", 24, 24, 3)
    p.conv_bn("res.b", 24, 24, 3)
    p.dense("fc", 24, NUM_CLASSES)


# resnet_like stage widths; stage1 keeps the width (identity shortcut), 2 and 3 project.
RESNET_WIDTHS = {"stem": 16, "stage1": 16, "stage2": 32, "stage3": 48}


def _resnet_like(p: _Plan):
    w = RESNET_WIDTHS
    p.conv_bn("stem", 3, w["stem"], 3)
    cin = w["stem"]
    for stage in ("stage1", "stage2", "stage3"):
        c = w[stage]
        p.conv_bn(stage + ".a", cin, c, 3)
        p.conv_bn(stage + ".b", c, c, 3)
        if c != cin or stage != "stage1":
            p.conv_bn(stage + ".proj", cin, c, 1)
        cin = c
    p.dense("fc", cin, NUM_CLASSES)


# mobilenet_like inverted blocks: (name, cin, expanded, cout, dw stride, SE gate or None, residual)
MOBILENET_BLOCKS = [
    ("block1", 16, 48, 24, 2, "sigmoid", False),
    ("block2", 24, 72, 24, 1, "hard_sigmoid", True),
    ("block3", 24, 72, 32, 2, None, False),
]
MOBILENET_HEAD = 64


def se_width(c):
    return c // 4


def _mobilenet_like(p: _Plan):
    p.conv_bn("stem", 3, 16, 3)
    for name, cin, mid, cout, _stride, gate, _res in MOBILENET_BLOCKS:
        p.conv_bn(name + ".expand", cin, mid, 1)
        p.dw(name + ".dw.conv", mid, 3)
        p.bn(name + ".dw.bn", mid)
        if gate:
            p.conv(name + ".se.reduce", mid, se_width(mid), 1, bias=True)
            p.conv(name + ".se.expand", se_width(mid), mid, 1, bias=True)
        p.conv_bn(name + ".project", mid, cout, 1)
    p.conv_bn("head", MOBILENET_BLOCKS[-1][3], MOBILENET_HEAD, 1)
    p.dense("fc", MOBILENET_HEAD, NUM_CLASSES)


_PLANS = {"small_cnn": _small_cnn, "resnet_like": _resnet_like, "mobilenet_like": _mobilenet_like}


def weights(network: str) -> dict[str, np.ndarray]:
    """All parameters of ``network``, canonical (PyTorch) layout, float32, deterministic.

    Keys: ``<layer>.weight`` (and ``<layer>.bias``) for convolutions, depthwise convolutions and
    dense layers; ``<bn>.gamma``, ``.beta``, ``.mean``, ``.var`` for BatchNorms.
    """
    plan = _Plan()
    _PLANS[network](plan)
    rng = np.random.default_rng([SEED, NETWORKS.index(network)])
    out: dict[str, np.ndarray] = {}

    def put(key, a):
        out[key] = np.asarray(a, np.float32)

    for name, kind, dims in plan.entries:
        if kind == "conv":
            cout, cin, k, _, bias = dims
            put(name + ".weight", rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k)))
            if bias:
                put(name + ".bias", rng.uniform(-0.2, 0.2, cout))
        elif kind == "dw":
            c, k = dims
            put(name + ".weight", rng.standard_normal((c, 1, k, k)) * np.sqrt(2.0 / (k * k)))
        elif kind == "bn":
            (c,) = dims
            put(name + ".gamma", rng.uniform(0.6, 1.4, c))
            put(name + ".beta", rng.uniform(-0.3, 0.3, c))
            put(name + ".mean", rng.uniform(-0.4, 0.4, c))
            put(name + ".var", rng.uniform(0.5, 2.0, c))
        elif kind == "dense":
            cin, cout = dims
            put(name + ".weight", rng.standard_normal((cout, cin)) * np.sqrt(1.0 / cin))
            put(name + ".bias", rng.uniform(-0.1, 0.1, cout))
    return out


# ---- input --------------------------------------------------------------------------------------


def make_input() -> np.ndarray:
    """One fixed 64x64 RGB "image", NCHW (1, 3, 64, 64), float32 integers in [0, 255].

    A colour gradient background, a red disc, a blue square and a little seeded noise.
    """
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) / (SIZE - 1)
    img = np.stack([60 + 80 * xx, 90 + 60 * yy, 140 - 60 * xx * yy])
    disc = (yy - 0.35) ** 2 + (xx - 0.65) ** 2 < 0.18**2
    img[:, disc] = np.array([220.0, 40.0, 30.0])[:, None]
    square = (yy > 0.6) & (yy < 0.85) & (xx > 0.15) & (xx < 0.4)
    img[:, square] = np.array([30.0, 60.0, 200.0])[:, None]
    img += np.random.default_rng([SEED, 99]).normal(0, 6, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.float32)[None]


def network_input(network: str, nchw: bool = True) -> np.ndarray:
    x = make_input() / np.float32(INPUT_DIVISOR[network])
    x = x.astype(np.float32)
    return x if nchw else np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if a.ndim == 4 else a


def to_nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a


def save_framework_result(framework: str, network: str, logits, blocks: dict, layout: str, extra=None):
    """Write a framework's logits and block activations (stored NCHW) for finalize.py."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    arrays = {"logits": np.asarray(logits)}
    for k, v in blocks.items():
        v = np.asarray(v)
        arrays["block:" + k] = to_nchw(v) if layout == "nhwc" else v
    np.savez(BUILD_DIR / f"{framework}-{network}.npz", **arrays)
    if extra is not None:
        import json

        (BUILD_DIR / f"{framework}-{network}.json").write_text(json.dumps(extra, indent=1))


def export_path(network: str, exporter: str) -> Path:
    p = OUT_DIR / network / f"{exporter}.onnx"
    p.parent.mkdir(parents=True, exist_ok=True)
    return p
