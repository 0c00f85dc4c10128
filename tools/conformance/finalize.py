"""Checks every export and writes tests/data/conformance/manifest.json and input.npy.

Needs only numpy, onnx and onnxruntime (any of the venvs; regenerate.sh uses the PyTorch one),
and the framework results that export_torch.py, export_keras.py and export_flax.py left in
BUILD_DIR.

For each export:
* ``onnx.checker.check_model(full_check=True)``;
* onnxruntime logits against PyTorch's (float64 forward pass of the same weights);
* block tensors, found by value: a temporary copy of the model lists every float node output as
  a graph output; a tensor holds a block when, read as NCHW or as NHWC, it equals the exporting
  framework's activation to 1e-4 of that activation's peak (max |got - want| <= 1e-4 max |want|).
  When several tensors hold it (a Relu output and the Transpose or Identity after it), the one
  the block computed is recorded — the latest in the graph's node order whose producer does more
  than copy values (a Transpose, Reshape or Identity only moves them, and a Transpose copy that
  feeds one branch of a residual block carries only that branch's share of the signal); all of
  them are listed in ``block_candidates``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

COPYING_OPS = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}

MATCH_RTOL = 1e-4
FRAMEWORK = {"torch_script": "torch", "torch_dynamo": "torch", "tf2onnx": "keras", "keras_export": "keras",
             "jax2onnx": "flax"}
EXPORTER_CALL = {
    "torch_script": "torch.onnx.export(model, (x,), f, dynamo=False, opset_version=17, dynamic_axes=batch)",
    "torch_dynamo": "torch.onnx.export(model, (x,), dynamo=True, opset_version=18, dynamic_shapes=batch)"
                    ".save(f, external_data=False)",
    "tf2onnx": "tf2onnx.convert.from_keras(model, input_signature=[TensorSpec((None, 64, 64, 3))], opset=17)",
    "keras_export": "keras.Model.export(f, format='onnx', input_signature=[TensorSpec((None, 64, 64, 3))], "
                    "opset_version=17)",
    "jax2onnx": "jax2onnx.to_onnx(nnx_model, [('B', 64, 64, 3)], opset=17)",
}
EXPORTER_PACKAGES = {"torch_script": ["torch"], "torch_dynamo": ["torch", "onnxscript"],
                     "tf2onnx": ["tf2onnx", "tensorflow", "keras"], "keras_export": ["keras", "tf2onnx", "tensorflow"],
                     "jax2onnx": ["jax2onnx", "jax", "flax"]}


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def all_tensors(model: onnx.ModelProto, feed: dict) -> tuple[dict, dict]:
    """Every float node output's value, and its producer's (index, op_type)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    producer = {}
    for i, node in enumerate(model.graph.node):
        for o in node.output:
            if o:
                producer[o] = (i, node.op_type)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in producer:
        if name in existing or types.get(name, onnx.TensorProto.FLOAT) != onnx.TensorProto.FLOAT:
            continue
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = session(probe)
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, feed)))
    return {k: v for k, v in values.items() if k in producer}, producer


def matches(value: np.ndarray, want_nchw: np.ndarray) -> list[str]:
    """The layouts in which ``value`` holds ``want_nchw`` ('nchw', 'nhwc'; 'nc' for 2-D)."""
    peak = float(np.abs(want_nchw).max())
    out = []
    if want_nchw.ndim == 2:
        cands = {"nc": want_nchw}
    else:
        cands = {"nchw": want_nchw, "nhwc": C.to_nhwc(want_nchw)}
    for layout, want in cands.items():
        if value.shape == want.shape and float(np.abs(value - want).max()) <= MATCH_RTOL * peak:
            out.append(layout)
    return out


def main():
    C.OUT_DIR.mkdir(parents=True, exist_ok=True)
    np.save(C.OUT_DIR / "input.npy", C.make_input())
    info = {e: json.loads((C.BUILD_DIR / f"info-{e}.json").read_text()) for e in C.EXPORTERS}
    manifest = {
        "format": 1,
        "description": "Cross-framework conformance fixtures: three CNNs with the same weights in PyTorch, Keras 3 "
                       "(TensorFlow) and Flax nnx, each exported to ONNX by five exporters. Regenerate with "
                       "tools/conformance/regenerate.sh.",
        "input": {"file": "input.npy", "shape": [1, 3, C.SIZE, C.SIZE], "layout": "nchw", "dtype": "float32",
                  "range": [0, 255],
                  "how_to_feed": "x = np.load('input.npy') / np.float32(network['input_divisor']) (float32); for an "
                                 "export whose input_layout is 'nhwc' feed x.transpose(0, 2, 3, 1)"},
        "block_matching": {
            "rule": "a tensor holds a block when, read in its recorded layout, max|tensor - activation| <= 1e-4 * "
                    "max|activation| (activation: the exporting framework's own, computed in float32); of several "
                    "such tensors, the latest in graph order whose producer is not a Transpose, Reshape, Flatten, "
                    "Squeeze, Unsqueeze or Identity (a copy) is recorded",
            "layouts": "nchw: (N, C, H, W); nhwc: (N, H, W, C); nc: (N, C)",
        },
        "versions": {e: info[e]["versions"] for e in C.EXPORTERS},
        "networks": {},
    }
    report = []
    for network in C.NETWORKS:
        fw = {f: dict(np.load(C.BUILD_DIR / f"{f}-{network}.npz")) for f in ("torch", "keras", "flax")}
        torch_extra = json.loads((C.BUILD_DIR / f"torch-{network}.json").read_text())
        logits64 = np.array(torch_extra["logits_float64"], np.float64)
        net = {
            "input_divisor": C.INPUT_DIVISOR[network],
            "num_classes": C.NUM_CLASSES,
            "logits": logits64.tolist(),
            "logits_source": "PyTorch, float64 forward pass (model.double()) of the same weights on the same input",
            "framework_logits_float32": {f: fw[f]["logits"].astype(np.float64).ravel().tolist() for f in fw},
            "blocks": [],
            "block_shapes_nchw": {},
            "framework_block_agreement": {},
            "exports": {},
        }
        for blk in C.BLOCKS[network]:
            ref = fw["torch"]["block:" + blk]
            net["block_shapes_nchw"][blk] = list(ref.shape)
            diffs = {f: float(np.abs(fw[f]["block:" + blk] - ref).max() / np.abs(ref).max()) for f in ("keras", "flax")}
            net["framework_block_agreement"][blk] = {f"{f}_vs_torch_max_rel": d for f, d in diffs.items()}
            assert max(diffs.values()) < MATCH_RTOL, (network, blk, diffs)
        found_all = {}
        for exporter in C.EXPORTERS:
            path = C.OUT_DIR / network / f"{exporter}.onnx"
            model = onnx.load(str(path))
            onnx.checker.check_model(model, full_check=True)
            inits = {i.name for i in model.graph.initializer}
            inputs = [i for i in model.graph.input if i.name not in inits]
            assert len(inputs) == 1, (path, [i.name for i in inputs])
            inp = inputs[0]
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in inp.type.tensor_type.shape.dim]
            layout = "nhwc" if dims[-1] == 3 else "nchw"
            assert layout == ("nchw" if exporter.startswith("torch") else "nhwc")
            x = C.network_input(network, nchw=(layout == "nchw"))
            feed = {inp.name: x}
            sess = session(model)
            out_name = sess.get_outputs()[0].name
            logits = sess.run([out_name], feed)[0].astype(np.float64).ravel()
            abs_diff = float(np.abs(logits - logits64).max())
            rel_diff = abs_diff / float(np.abs(logits64).max())
            values, producer = all_tensors(model, feed)
            blocks, layouts, cands = {}, {}, {}
            for blk in C.BLOCKS[network]:
                want = fw[FRAMEWORK[exporter]]["block:" + blk]
                hits = []
                for name, value in values.items():
                    for lay in matches(value, want):
                        hits.append((producer[name][0], name, lay, producer[name][1]))
                hits.sort()
                if not hits:
                    continue
                computed = [hit for hit in hits if hit[3] not in COPYING_OPS] or hits
                _, name, lay, _ = computed[-1]
                blocks[blk], layouts[blk] = name, lay
                cands[blk] = [{"tensor": n, "layout": l, "op_type": o, "node_index": i} for i, n, l, o in hits]
            found_all[exporter] = blocks
            opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
            versions = info[exporter]["versions"]
            net["exports"][exporter] = {
                "file": f"{network}/{exporter}.onnx",
                "exporter": exporter,
                "exporter_version": " ".join(f"{p} {versions[p]}" for p in EXPORTER_PACKAGES[exporter]),
                "exporter_call": EXPORTER_CALL[exporter],
                "producer": f"{model.producer_name} {model.producer_version}".strip(),
                "framework": FRAMEWORK[exporter],
                "input_name": inp.name,
                "input_layout": layout,
                "input_shape": dims,
                "output_name": out_name,
                "opset": opset,
                "blocks": blocks,
                "block_layouts": layouts,
                "block_candidates": cands,
                "logits_vs_torch_float64": {"max_abs_diff": abs_diff, "max_rel_diff": rel_diff},
                "onnx_checker": "passed (full_check=True)",
                "file_bytes": path.stat().st_size,
                "notes": info[exporter]["notes"].get(network, []),
            }
            report.append((network, exporter, abs_diff, rel_diff, opset, layout, path.stat().st_size))
        shared = [b for b in C.BLOCKS[network] if all(b in found_all[e] for e in C.EXPORTERS)]
        dropped = {b: [e for e in C.EXPORTERS if b not in found_all[e]] for b in C.BLOCKS[network] if b not in shared}
        net["blocks"] = shared
        if dropped:
            net["blocks_not_shared"] = {b: f"no single tensor holds it in: {', '.join(es)}" for b, es in dropped.items()}
        for e in C.EXPORTERS:
            ex = net["exports"][e]
            for key in ("blocks", "block_layouts", "block_candidates"):
                ex[key] = {b: ex[key][b] for b in shared}
        manifest["networks"][network] = net
    (C.OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{'network':16} {'exporter':13} {'opset':>5} {'input':>5} {'bytes':>7} {'max|d|':>9} {'rel':>9}")
    for network, exporter, a, r, opset, layout, size in report:
        print(f"{network:16} {exporter:13} {opset:5} {layout:>5} {size:7} {a:9.2e} {r:9.2e}")
        assert r < 1e-5, (network, exporter, r)
    for network, net in manifest["networks"].items():
        print(network, "blocks", net["blocks"], "not shared:", net.get("blocks_not_shared", {}))
        for e, ex in net["exports"].items():
            print("  ", e, {b: f"{ex['blocks'][b]} [{ex['block_layouts'][b]}]" for b in net["blocks"]})


if __name__ == "__main__":
    main()
