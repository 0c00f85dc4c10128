"""Excitation Backprop compiled into the model's graph (``exbp compile``, docs/method.md §10).

* Every rule case of tests/test_rules.py, compiled (``compile_propagation``), gives the dense
  oracle's signal at the input for a random signal at the output, on mixed-sign and non-negative
  inputs — the same oracle the eager rules meet.
* Every test model and every conformance fixture, compiled, gives the eager walk's maps (rtol 1e-5)
  for MWP and c-MWP, at the default layer and at the pixels, for batches of 1 and 8, top-K targets,
  targets fed as an input, fixed targets and resized maps; the batch stays dynamic.
* The compiled file passes onnx.checker and runs in a process that can import only onnxruntime
  and numpy; its Triton config names exactly the tensors onnxruntime reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import builders
import exbp
from builders import ModelBuilder
from conftest import assert_close, run, save_model
from exbp.engine.compiling import compile_propagation
from oracle import Oracle
from test_rules import CASES, case_model, random_top

DATA = Path(__file__).parent / "data" / "conformance"
MANIFEST = json.loads((DATA / "manifest.json").read_text())


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _outputs(model: onnx.ModelProto, feeds: dict) -> dict:
    session = _session(model)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


# ---- every rule --------------------------------------------------------------------------------

@pytest.mark.parametrize("positive", [False, True], ids=["mixed_signs", "non_negative"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_rule_matches_dense_oracle(name, positive):
    b, model = case_model(CASES[name])
    x = b.input(seed=11, positive=positive)
    top = random_top(model, x)
    compiled = compile_propagation(exbp.Explainer(model).session, b.input_name, rows=2)
    got = _outputs(compiled, {b.input_name: x, "exbp_top": top})["exbp_signal"]
    want = Oracle(model).signal(x, top, b.input_name)
    assert got.shape == want.shape
    assert_close(got, want)


# ---- every test model --------------------------------------------------------------------------

MODELS = {
    "vgg": builders.vgg_like, "inception": builders.inception_like, "resnet": builders.resnet_like,
    "resnet_negative_bn": lambda: builders.resnet_like(negative_scale=True),
    "mobilenet": builders.mobilenet_like, "mobilenet_v2": builders.mobilenet_v2_like,
    "efficientnet": builders.efficientnet_like,
    "residual_channels_last": lambda: builders.residual_net(channels_last=True)[:2],
    "residual_channels_last_preprocessing": lambda: builders.residual_net(True, preprocessing=True)[:2],
}


def _assert_compiled_equals_eager(explainer, compiled, x, targets, layer=None, methods=("mwp", "cmwp"),
                                  resize=False, feeds=None):
    outputs = _outputs(compiled, {explainer.input_spec.name: x, **(feeds or {})})
    eager = explainer.explain_methods(x, targets, layer, methods, resize)
    for method in methods:
        got = outputs[f"exbp_{method}"]
        assert got.shape == eager[method].maps.shape
        assert_close(got, eager[method].maps)
        assert np.abs(eager[method].maps).max() > 0
    if "exbp_targets" in outputs:
        np.testing.assert_array_equal(outputs["exbp_targets"], eager[methods[0]].targets)


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_case(request):
    b, model = MODELS[request.param]()
    return b, model, exbp.Explainer(model, engine="walk")


@pytest.mark.parametrize("at", ["default", "pixels"])
def test_compiled_maps_equal_eager_maps_for_batches_of_one_and_eight(model_case, at):
    b, model, explainer = model_case
    layer = None if at == "default" else explainer.input_spec.name
    compiled = explainer.compile(layer=layer, targets="top3")
    onnx.checker.check_model(compiled)
    for batch in (1, 8):
        x = np.random.default_rng(batch).normal(size=(batch,) + explainer.input_spec.shape[1:]).astype(np.float32)
        _assert_compiled_equals_eager(explainer, compiled, x, "top3", layer)


def test_compiled_targets_as_an_input_fixed_classes_and_resized_maps(model_case):
    b, model, explainer = model_case
    x = np.random.default_rng(3).normal(size=(4,) + explainer.input_spec.shape[1:]).astype(np.float32)
    chosen = np.array([[0, 5], [9, 1], [2, 2], [7, 3]], np.int64) % explainer.classes
    by_input = explainer.compile(targets="input", target_count=2, methods=("cmwp",), resize=True)
    assert [i.name for i in by_input.graph.input][-1] == "exbp_targets"
    _assert_compiled_equals_eager(explainer, by_input, x, chosen, methods=("cmwp",), resize=True,
                                  feeds={"exbp_targets": chosen})
    fixed = explainer.compile(targets=[1, 3], methods=("mwp",), resize=(5, 7))
    _assert_compiled_equals_eager(explainer, fixed, x, [1, 3], methods=("mwp",), resize=(5, 7))


def test_compiled_model_keeps_the_models_outputs_and_dynamic_batch(model_case):
    b, model, explainer = model_case
    compiled = explainer.compile(targets="top2")
    names = [o.name for o in compiled.graph.output]
    assert names[:len(model.graph.output)] == [o.name for o in model.graph.output]
    assert {"exbp_mwp", "exbp_cmwp", "exbp_targets"} <= set(names)
    x = np.random.default_rng(5).normal(size=(3,) + explainer.input_spec.shape[1:]).astype(np.float32)
    plain = _outputs(model, {explainer.input_spec.name: x})
    outputs = _outputs(compiled, {explainer.input_spec.name: x})
    for name, value in plain.items():
        np.testing.assert_array_equal(outputs[name], value)     # the model's own nodes, untouched
    mwp = next(o for o in compiled.graph.output if o.name == "exbp_mwp")
    assert mwp.type.tensor_type.shape.dim[0].dim_param == "N"
    assert exbp.compiled_metadata(compiled)["maps"] == ["exbp_mwp", "exbp_cmwp"]


# ---- other exporters, quantised and float16 models ---------------------------------------------

FIXTURES = [(net, exporter) for net, spec in MANIFEST["networks"].items() for exporter in spec["exports"]]


@pytest.mark.parametrize("network,exporter", FIXTURES, ids=[f"{n}-{e}" for n, e in FIXTURES])
def test_compiled_conformance_fixture_equals_eager(network, exporter):
    export = MANIFEST["networks"][network]["exports"][exporter]
    explainer = exbp.Explainer(DATA / export["file"], engine="walk")
    x = np.load(DATA / MANIFEST["input"]["file"]).astype(np.float32)
    x = (x / np.float32(MANIFEST["networks"][network]["input_divisor"])).astype(np.float32)
    if export["input_layout"] == "nhwc":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    x = np.concatenate([x, x[:, ..., ::-1]]) if explainer.input_spec.fixed_batch is None else x
    for layer in (None, explainer.input_spec.name):
        compiled = explainer.compile(layer=layer, targets="top2")
        _assert_compiled_equals_eager(explainer, compiled, x, "top2", layer)


# float16 models: onnxruntime runs the float16 forward of the compiled graph with other fusions than
# the recording session's (whose recorded tensors are graph outputs), and float16 rounds each
# fused op's result once; measured worst case 2.8e-4 of the map's peak (docs/method.md §10)
FLOAT16_PEAK_FRACTION = 2e-3


@pytest.mark.parametrize("variant", ["qdq", "float16"])
def test_compiled_qdq_and_float16_models_equal_their_eager_maps(tmp_path, variant):
    b, model = builders.resnet_like(size=32, negative_scale=True)
    if variant == "qdq":
        pytest.importorskip("onnxruntime.quantization")
        converted = builders.qdq_quantized(b, model, tmp_path)
    else:
        float16 = pytest.importorskip("onnxconverter_common.float16")
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    explainer = exbp.Explainer(converted, engine="walk")
    x = np.concatenate([b.input(seed=100 + i) for i in range(2)])
    for layer in (None, b.input_name):
        compiled = explainer.compile(layer=layer)
        outputs = _outputs(compiled, {b.input_name: x})
        for method, eager in explainer.explain_methods(x, "top1", layer).items():
            if variant == "qdq":
                assert_close(outputs[f"exbp_{method}"], eager.maps)
            else:
                difference = np.abs(outputs[f"exbp_{method}"] - eager.maps).max()
                assert difference <= FLOAT16_PEAK_FRACTION * np.abs(eager.maps).max()


# ---- the compiled file on its own ----------------------------------------------------------------

def _bare_python_path(tmp_path: Path) -> Path:
    """A folder holding only onnxruntime and numpy (and what importing them needs), linked from
    this environment: the only packages the subprocess below can import."""
    folder = tmp_path / "site"
    folder.mkdir()
    import numpy
    needed = [Path(ort.__file__).parent, Path(numpy.__file__).parent]
    for path in needed:
        (folder / path.name).symlink_to(path)
        libs = path.parent / f"{path.name}.libs"
        if libs.exists():
            (folder / libs.name).symlink_to(libs)
    return folder


def test_compiled_models_run_where_only_onnxruntime_and_numpy_exist(tmp_path):
    """Every test model, compiled, in one process that can import onnxruntime and numpy only:
    its maps equal the eager walk's."""
    cases = {}
    for name, make in MODELS.items():
        b, model = make()
        explainer = exbp.Explainer(model, engine="walk")
        path = tmp_path / f"{name}.onnx"
        exbp.compile(model, path, targets="top2")
        onnx.checker.check_model(str(path))
        x = np.random.default_rng(2).normal(size=(8,) + explainer.input_spec.shape[1:]).astype(np.float32)
        np.save(tmp_path / f"{name}.npy", x)
        cases[name] = (explainer, x, explainer.input_spec.name)
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        import onnxruntime as ort
        for name in ("exbp", "onnx", "click", "PIL"):
            try:
                __import__(name)
            except ImportError:
                pass
            else:
                sys.exit(f"{{name}} is importable")
        for name, input_name in {[(name, case[2]) for name, case in cases.items()]!r}:
            session = ort.InferenceSession(f"{{name}}.onnx", providers=["CPUExecutionProvider"])
            out = dict(zip([o.name for o in session.get_outputs()],
                           session.run(None, {{input_name: np.load(f"{{name}}.npy")}})))
            np.save(f"{{name}}_mwp.npy", out["exbp_mwp"])
            np.save(f"{{name}}_cmwp.npy", out["exbp_cmwp"])
    """)
    environment = {"PYTHONPATH": str(_bare_python_path(tmp_path)), "PATH": os.environ.get("PATH", "")}
    result = subprocess.run([sys.executable, "-S", "-c", script], env=environment, capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for name, (explainer, x, _) in cases.items():
        eager = explainer.explain_methods(x, "top2")
        for method in ("mwp", "cmwp"):
            assert_close(np.load(tmp_path / f"{name}_{method}.npy"), eager[method].maps)


def _parsed_config(text: str) -> dict:
    """{tensor name: (data type, dims)} and max_batch_size from a config.pbtxt (the subset
    exbp writes: one field per line)."""
    tensors, current, batch = {}, None, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("max_batch_size:"):
            batch = int(line.split(":")[1])
        elif line.startswith("name:") and current is not None:
            current["name"] = line.split('"')[1]
        elif line.startswith("data_type:"):
            current["type"] = line.split(":")[1].strip()
        elif line.startswith("dims:"):
            current["dims"] = [int(d) for d in line.split("[")[1].split("]")[0].split(",")]
            tensors[current["name"]] = (current["type"], current["dims"])
        if line == "{":
            current = {}
    return {"tensors": tensors, "max_batch_size": batch}


def test_triton_repository_names_what_onnxruntime_loads(tmp_path):
    b, model = builders.resnet_like()
    compiled = exbp.Explainer(model).compile(targets="input", target_count=2)
    folder = exbp.write_triton_repository(compiled, tmp_path / "repo", "resnet_exbp", max_batch_size=16)
    text = (folder / "config.pbtxt").read_text()
    assert 'name: "resnet_exbp"' in text and 'backend: "onnxruntime"' in text
    config = _parsed_config(text)
    assert config["max_batch_size"] == 16
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    triton_types = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}
    reported = {t.name: (triton_types[t.type], [d if isinstance(d, int) else -1 for d in t.shape[1:]])
                for t in (*session.get_inputs(), *session.get_outputs())}
    assert config["tensors"] == reported
    assert all(isinstance(t.shape[0], str) for t in (*session.get_inputs(), *session.get_outputs()))


def test_triton_config_of_a_fixed_batch_model_does_not_batch():
    b = ModelBuilder((1, 3, 8, 8), dynamic_batch=False)
    model = b.build(b.gemm(b.flatten(b.relu(b.conv(b.input_name, 4))), 3))
    config = _parsed_config(exbp.triton_config(exbp.Explainer(model).compile(), "fixed"))
    assert config["max_batch_size"] == 0
    assert config["tensors"]["input"] == ("TYPE_FP32", [1, 3, 8, 8])


# ---- the Explainer's engines ----------------------------------------------------------------------

def test_explainer_engines_give_the_same_maps_and_auto_walks_what_it_cannot_compile():
    b, model = builders.resnet_like()
    x = b.input(seed=6, batch=3)
    walk, compiled, auto = (exbp.Explainer(model, engine=e) for e in ("walk", "compiled", "auto"))
    for targets in ("top2", [3, 7], np.array([[1], [2], [3]])):
        for layer in (None, b.input_name):
            want = walk.explain_methods(x, targets, layer, ("mwp", "cmwp"), resize=True)
            for explainer in (compiled, auto):
                got = explainer.explain_methods(x, targets, layer, ("mwp", "cmwp"), resize=True)
                for method in ("mwp", "cmwp"):
                    assert_close(got[method].maps, want[method].maps)
                    np.testing.assert_array_equal(got[method].targets, want[method].targets)
                    assert_close(got[method].logits, want[method].logits)
                    assert got[method].layer == want[method].layer
    assert auto._compiled._sessions, "auto compiled nothing"
    mixed = auto.explain(x, ["top1", 3], method="cmwp")       # mixed targets: walked
    assert_close(mixed.maps, walk.explain(x, ["top1", 3], method="cmwp").maps)
    assert_close(auto.explain(x, method="gradient").maps, walk.explain(x, method="gradient").maps)
    with pytest.raises(exbp.MethodError, match="cannot be compiled"):
        compiled.explain(x, ["top1", 3], method="cmwp")
    with pytest.raises(exbp.MethodError, match="unknown engine 'fast'"):
        exbp.Explainer(model, engine="fast")
    assert exbp.Explainer(model, device="numpy").engine == "walk"


def test_compiled_sessions_are_bounded_and_threads_share_them():
    from concurrent.futures import ThreadPoolExecutor
    b, model = builders.vgg_like()
    explainer = exbp.Explainer(model, engine="compiled")
    x = b.input(seed=3, batch=2)
    runner = explainer._compiled
    for count in range(1, runner.MAX_SESSIONS + 3):          # one session per target count
        explainer.explain(x, targets=list(range(count)), method="mwp")
    assert len(runner._sessions) == runner.MAX_SESSIONS
    want = exbp.Explainer(model, engine="walk").explain(x, targets="top2", method="cmwp").maps
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: explainer.explain(x, targets="top2", method="cmwp").maps, range(8)))
    for got in results:
        assert_close(got, want)


def test_compiled_engine_refuses_what_the_walk_refuses_in_the_same_words():
    b, model = builders.vgg_like()
    x = b.input(seed=2)
    for engine in ("walk", "compiled"):
        explainer = exbp.Explainer(model, engine=engine)
        with pytest.raises(exbp.LayerError, match="unknown layer 'nope'"):
            explainer.explain(x, layer="nope")
        with pytest.raises(exbp.TargetError, match="out of range"):
            explainer.explain(x, targets=[10])
        with pytest.raises(exbp.InputError, match="the model's logits are not finite"):
            explainer.explain(np.full_like(x, 3e38))


# ---- refusals and the command line ---------------------------------------------------------------

def test_compile_refuses_what_it_cannot_write():
    b, model = builders.vgg_like()
    explainer = exbp.Explainer(model)
    with pytest.raises(exbp.MethodError, match="'gradient' runs only in the eager walk"):
        explainer.compile(methods=("gradient",))
    with pytest.raises(exbp.TargetError, match="top1' ... 'top10'"):
        explainer.compile(targets="top11")
    with pytest.raises(exbp.TargetError, match="out of range"):
        explainer.compile(targets=[10])
    with pytest.raises(exbp.TargetError, match="'topK' or 'input' alone"):
        explainer.compile(targets=["top2", 3])
    with pytest.raises(exbp.LayerError, match="unknown layer"):
        explainer.compile(layer="nope")
    old = ModelBuilder((1, 3, 8, 8), opset=8)
    old_model = old.build(old.gemm(old.flatten(old.relu(old.conv(old.input_name, 4))), 3))
    with pytest.raises(exbp.ModelError, match="uses opset 8; convert it"):
        exbp.Explainer(old_model).compile()
    spatial = ModelBuilder((1, 3, 8, 8))
    spatial.inputs[0].type.tensor_type.shape.dim[2].dim_param = "H"
    open_model = spatial.build(spatial.gemm(spatial.flatten(spatial.gap(spatial.relu(spatial.conv(
        spatial.input_name, 4)))), 3), check=False)
    with pytest.raises(exbp.InputError, match="give input_shape"):
        exbp.Explainer(open_model).compile()
    compiled = exbp.Explainer(open_model).compile(input_shape=(1, 3, 8, 8))
    assert "exbp_cmwp" in [o.name for o in compiled.graph.output]


def test_cli_compile_verifies_and_writes_the_model_and_triton_repository(tmp_path):
    b, model = builders.inception_like()
    path = save_model(model, tmp_path / "inception.onnx")
    out = tmp_path / "compiled.onnx"
    result = run("compile", str(path), "-o", str(out), "--targets", "top2", "--triton", str(tmp_path / "repo"))
    assert result.exit_code == 0, result.output
    assert "verified: the compiled maps equal the eager walk's" in result.output
    assert "exbp_cmwp: (N, 2, 4, 4)" in result.output
    assert (tmp_path / "repo" / "compiled" / "config.pbtxt").exists()
    x = b.input(seed=4, batch=2)
    assert_close(_outputs(onnx.load(str(out)), {b.input_name: x})["exbp_mwp"],
                 exbp.Explainer(model, engine="walk").explain(x, "top2", method="mwp").maps)
    result = run("compile", str(path), "-o", str(out), "--method", "lrp")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    result = run("compile", str(path), "-o", str(out), "--targets", "input", "--target-count", "3",
                 "--resize", "--method", "cmwp", "--no-verify")
    assert result.exit_code == 0, result.output
    assert "exbp_cmwp: (N, 3, 16, 16)" in result.output


def test_a_compiled_model_past_protobufs_limit_is_written_with_its_weights_beside_it(tmp_path, monkeypatch):
    """Past 2 GB a model's weights go to a .data file, as onnx writes large models (the limit is
    lowered here so that a small model takes that path)."""
    from exbp.exporters import onnx_writer
    b, model = builders.resnet_like()
    compiled = exbp.Explainer(model).compile(targets="top2")
    x = b.input(seed=8, batch=2)
    want = _outputs(compiled, {b.input_name: x})
    monkeypatch.setattr(onnx_writer, "PROTOBUF_LIMIT", 1000)
    path = exbp.write_onnx(compiled, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size > 1000
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {b.input_name: x})))
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


def test_a_rule_the_namespace_cannot_write_is_a_one_line_error_and_auto_walks(monkeypatch):
    """A rule that branched on a value (simulated: the sign scan the walk does) cannot be
    compiled: exbp compile says so in one line, and the default engine walks instead."""
    from exbp.engine import compiling
    monkeypatch.setattr(compiling.CompiledTensors, "holds_negatives",
                        lambda self, name: self.may_be_negative(name) and bool(self.value(name).max() < 0))
    b, model = builders.vgg_like()
    explainer = exbp.Explainer(model)
    with pytest.raises(exbp.ModelError, match="cannot write the walk to layer 'input': .*no truth "
                                              "value.*engine='walk'") as error:
        explainer.compile(layer=b.input_name)
    assert "\n" not in str(error.value)
    x = b.input(seed=1)
    assert_close(explainer.explain(x, layer=b.input_name).maps,
                 exbp.Explainer(model, engine="walk").explain(x, layer=b.input_name).maps)
