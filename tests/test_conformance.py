"""One network, five exporters, the same maps (the frameworks issue's conformance fixtures).

tests/data/conformance holds three networks — a small CNN with BatchNorm and a residual block, a
ResNet-like with strided projections and an explicitly padded max-pool, a MobileNet-like with
depthwise convolutions, ReLU6, squeeze-and-excitation and a Keras preprocessing layer — built with
the same weights in PyTorch, Keras 3 and Flax and exported by torch.onnx (TorchScript and dynamo),
tf2onnx, Keras's own exporter and jax2onnx (tools/conformance regenerates them; the frameworks are
needed only there). The TensorFlow and JAX exports take NHWC input and keep channels-last tensors
between their Transposes. The manifest names each block's tensor in every export.

Every export must give the TorchScript export's MWP and c-MWP maps at the pixels and at every
block (rel ≤ 1e-5 of the map's peak), and pick the same block as its default layer.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import exbp

ROOT = Path(__file__).parent / "data" / "conformance"
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
NETWORKS = MANIFEST["networks"]
REFERENCE = "torch_script"
EXPORTS = [(network, export) for network, spec in NETWORKS.items() for export in spec["exports"]
           if export != REFERENCE]
RELATIVE = 1e-5


@lru_cache(maxsize=None)
def _explainer(network: str, export: str) -> exbp.Explainer:
    return exbp.Explainer(ROOT / NETWORKS[network]["exports"][export]["file"])


def _input(network: str, export: str) -> np.ndarray:
    x = np.load(ROOT / MANIFEST["input"]["file"]) / np.float32(NETWORKS[network]["input_divisor"])
    if NETWORKS[network]["exports"][export]["input_layout"] == "nhwc":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def _map_blocks(network: str, export: str) -> dict[str, str]:
    """Block name -> tensor, for the blocks with spatial axes."""
    spec = NETWORKS[network]["exports"][export]
    return {block: tensor for block, tensor in spec["blocks"].items()
            if spec["block_layouts"][block] in ("nchw", "nhwc")}


@lru_cache(maxsize=None)
def _maps(network: str, export: str) -> dict:
    explainer, x = _explainer(network, export), _input(network, export)
    targets = [int(np.argmax(NETWORKS[network]["logits"])), 0]
    layers = {"pixels": explainer.input_spec.name, **_map_blocks(network, export)}
    return {(where, method): explainer.explain(x, targets=targets, layer=tensor, method=method).maps
            for where, tensor in layers.items() for method in ("mwp", "cmwp")}


@pytest.mark.parametrize("network, export", EXPORTS)
def test_every_export_gives_the_same_maps(network, export):
    reference, maps = _maps(network, REFERENCE), _maps(network, export)
    assert set(maps) == set(reference)
    for key, expected in reference.items():
        difference = np.abs(maps[key] - expected).max() / np.abs(expected).max()
        assert difference <= RELATIVE, f"{key}: {difference:.2e}"


@pytest.mark.parametrize("network, export", EXPORTS)
def test_every_export_has_the_same_logits_and_layout(network, export):
    explainer = _explainer(network, export)
    np.testing.assert_allclose(explainer.logits(_input(network, export))[0], NETWORKS[network]["logits"],
                               rtol=1e-4, atol=1e-5)
    channels_last = NETWORKS[network]["exports"][export]["input_layout"] == "nhwc"
    assert explainer.input_spec.channels_last == channels_last


@pytest.mark.parametrize("network", list(NETWORKS))
def test_the_default_layer_is_the_same_block_in_every_export(network):
    chosen = {}
    for export in NETWORKS[network]["exports"]:
        by_tensor = {tensor: block for block, tensor in _map_blocks(network, export).items()}
        chosen[export] = by_tensor.get(_explainer(network, export).default_layer(), "not a block")
    assert len(set(chosen.values())) == 1 and "not a block" not in chosen.values(), chosen


def test_shape_annotations_that_contradict_the_graph_are_ignored():
    """jax2onnx annotates the tensors it turned channels first with their channels-last shapes
    (the fixtures have those entries removed); exbp infers shapes from the graph alone."""
    import onnx
    from onnx import TensorProto, helper

    export = NETWORKS["resnet_like"]["exports"]["jax2onnx"]
    model = onnx.load(ROOT / export["file"])
    convs = [node.output[0] for node in model.graph.node if node.op_type == "Conv"]
    shapes = {info.name: info for info in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for name in convs:
        dims = [d.dim_value or d.dim_param for d in shapes[name].type.tensor_type.shape.dim]
        model.graph.value_info.append(helper.make_tensor_value_info(
            name, TensorProto.FLOAT, [dims[0], *dims[2:], dims[1]]))
    annotated = exbp.Explainer(model)
    x = _input("resnet_like", "jax2onnx")
    for layer in (annotated.input_spec.name, annotated.default_layer()):
        np.testing.assert_array_equal(
            annotated.explain(x, layer=layer).maps,
            _explainer("resnet_like", "jax2onnx").explain(x, layer=layer).maps)
    assert annotated.default_layer() == _explainer("resnet_like", "jax2onnx").default_layer()


@pytest.mark.parametrize("export", ["torch_script", "keras_export", "jax2onnx"])
def test_check_and_layers_show_the_derived_layouts(export):
    from conftest import run

    path = ROOT / NETWORKS["mobilenet_like"]["exports"][export]["file"]
    layout = NETWORKS["mobilenet_like"]["exports"][export]["input_layout"].upper()
    check = run("check", path)
    assert check.exit_code == 0 and f"{layout} (derived from the graph)" in check.output
    first = run("layers", path).output.splitlines()[0].split()
    assert first[-1] == layout
