"""The cross-framework conformance fixtures in tests/data/conformance agree with their manifest.

Three networks, the same weights in PyTorch, Keras 3 and Flax, each exported to ONNX by five
exporters (tools/conformance/README.md). Only onnx and onnxruntime are needed here: the logits are
the manifest's, every named block tensor exists, and a block holds the same values in every export
once read in its recorded layout.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

DATA = Path(__file__).parent / "data" / "conformance"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
NETWORKS = MANIFEST["networks"]
CASES = [(net, exp) for net, spec in NETWORKS.items() for exp in spec["exports"]]
IDS = [f"{net}-{exp}" for net, exp in CASES]
TO_NCHW = {"nchw": None, "nhwc": (0, 3, 1, 2), "nc": None}


def feed_for(network: str, export: dict) -> dict:
    x = np.load(DATA / MANIFEST["input"]["file"]).astype(np.float32)
    x = (x / np.float32(NETWORKS[network]["input_divisor"])).astype(np.float32)
    if export["input_layout"] == "nhwc":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    return {export["input_name"]: x}


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=None)
def run_export(network: str, exporter: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits, and each manifest block's tensor as NCHW (or NC)."""
    export = NETWORKS[network]["exports"][exporter]
    model = onnx.load(str(DATA / export["file"]))
    existing = {o.name for o in model.graph.output}
    for tensor in export["blocks"].values():
        if tensor not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
            existing.add(tensor)
    sess = session(model)
    names = [export["output_name"]] + list(export["blocks"].values())
    values = dict(zip(names, sess.run(names, feed_for(network, export))))
    blocks = {}
    for block, tensor in export["blocks"].items():
        perm = TO_NCHW[export["block_layouts"][block]]
        blocks[block] = values[tensor] if perm is None else values[tensor].transpose(perm)
    return values[export["output_name"]], blocks


def test_manifest_is_complete():
    assert set(NETWORKS) == {"small_cnn", "resnet_like", "mobilenet_like"}
    for network, spec in NETWORKS.items():
        assert spec["blocks"], network
        assert len(spec["logits"]) == spec["num_classes"]
        assert set(spec["exports"]) == {"torch_script", "torch_dynamo", "tf2onnx", "keras_export", "jax2onnx"}
        for exporter, export in spec["exports"].items():
            assert list(export["blocks"]) == spec["blocks"], (network, exporter)
            assert set(export["block_layouts"]) == set(spec["blocks"])
            assert set(export["block_layouts"].values()) <= set(TO_NCHW)
            assert export["input_layout"] in ("nchw", "nhwc")
            assert (DATA / export["file"]).stat().st_size < 300_000
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 3_000_000


@pytest.mark.parametrize("network,exporter", CASES, ids=IDS)
def test_file_matches_manifest(network, exporter):
    export = NETWORKS[network]["exports"][exporter]
    model = onnx.load(str(DATA / export["file"]))
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == export["opset"]
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    assert [i.name for i in inputs] == [export["input_name"]]
    dims = inputs[0].type.tensor_type.shape.dim
    channel_axis = 1 if export["input_layout"] == "nchw" else 3
    assert dims[channel_axis].dim_value == 3
    assert [o.name for o in model.graph.output] == [export["output_name"]]
    produced = {o for node in model.graph.node for o in node.output}
    for block, tensor in export["blocks"].items():
        assert tensor in produced, f"{network}/{exporter}: block {block!r} tensor {tensor!r} not in the graph"


@pytest.mark.parametrize("network,exporter", CASES, ids=IDS)
def test_logits_match_manifest(network, exporter):
    logits, _ = run_export(network, exporter)
    np.testing.assert_allclose(logits.ravel(), NETWORKS[network]["logits"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_blocks_agree_across_exports(network):
    spec = NETWORKS[network]
    exporters = list(spec["exports"])
    reference = run_export(network, exporters[0])[1]
    for block in spec["blocks"]:
        want = reference[block]
        assert list(want.shape) == spec["block_shapes_nchw"][block]
        for exporter in exporters[1:]:
            got = run_export(network, exporter)[1][block]
            assert got.shape == want.shape, (network, block, exporter)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(),
                                       err_msg=f"{network}: block {block} of {exporter} vs {exporters[0]}")
