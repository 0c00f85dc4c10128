"""Shared test helpers, and the one tolerance policy of the suite.

Tolerances, by what a result is compared with (relative, and absolute as a fraction of the
expected array's largest magnitude, so that near-zero entries of a map do not decide):

* ``"oracle"`` — exbp against an independent computation of the same float32 quantities (the dense
  oracle, another exbp call that must agree): 1e-5 relative, 1e-6 of the peak;
* ``"device"`` — the same computation on another device (GPU against CPU), where reductions run in
  another order: 1e-4 and 1e-5;
* ``"reference"`` — another implementation (TorchRay, Zennit, in PyTorch), or finite differences
  in float64 (tests/gradient_oracle.py): 1e-4 and 1e-6;
* ``"relevance"`` — LRP-ε against another implementation: 1e-4 and 5e-5, since R / (z + ε) turns
  the float32 rounding of an output z near 0 (1e-7) into a visible share where |z| is small.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from builders import ModelBuilder, vgg_like

TOLERANCES = {"oracle": (1e-5, 1e-6), "device": (1e-4, 1e-5), "reference": (1e-4, 1e-6),
              "relevance": (1e-4, 5e-5)}


def assert_close(got, want, against: str = "oracle") -> None:
    rtol, peak_fraction = TOLERANCES[against]
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=peak_fraction * np.abs(want).max())


# ---- the command line, on real files --------------------------------------------------------------

def run(*args):
    from exbp.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def save_model(model, path: Path, metadata=None) -> Path:
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def save_image(path: Path, size=(20, 12), color=(10, 20, 30), mode="RGB") -> Path:
    Image.new(mode, size, color).save(path)
    return path


@pytest.fixture
def probe(tmp_path):
    """logits = per-channel means of the preprocessed input: they show what preprocessing did."""
    b = ModelBuilder((1, 3, 8, 8), dynamic_batch=False)
    logits = b.node("Gemm", [b.flatten(b.gap(b.input_name)), b.const(np.eye(3, dtype=np.float32))])
    return save_model(b.build(logits), tmp_path / "probe.onnx")


@pytest.fixture
def small(tmp_path):
    b, model = vgg_like(size=16)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["tench", "goldfish", "tabby, tabby cat", "tiger cat", "lynx", "cup",
                                 "espresso", "spoon", "plate", "bowl"]))
    return save_model(model, tmp_path / "small.onnx"), labels


