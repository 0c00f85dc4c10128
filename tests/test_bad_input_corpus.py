"""A corpus of bad (and legitimate but odd) input, generated here: models, images, command-line
arguments and API values. Each bad case must be refused with the exit code README documents (or an
ExbpError of the right kind, for the API) in one line that names the thing and says what would be
accepted, with no traceback, in bounded time and memory; each odd but legitimate case must give
finite maps.

Exit codes (README, "Errors"): 1 an error that stops the run, 2 a usage error, 3 some images
failed (the rest were written).
"""

from __future__ import annotations

import os
import resource
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

import exbp
from builders import ModelBuilder, vgg_like
from conftest import run, save_image, save_model, summary

SECONDS = 60                      # each case, at most
RSS_LIMIT_MB = 4096               # the test process's peak, across the whole corpus
# words that say what would be accepted
ACCEPTED = ("use ", "give", "choose", "pass", "must", "supported", "one of", "exbp explains",
            "exbp reads", "exbp supports", "exbp needs", "did you mean", "name one", "drop", "resize", "raise the cap", "is not",
            "out of range", "(0 to", "should", "needs", "cannot write", "--help", "expects", "keep ")


# ---- generators ---------------------------------------------------------------------------------

def small_model(tmp: Path) -> Path:
    _, model = vgg_like(size=16)
    return save_model(model, tmp / "small.onnx")


def labels_file(tmp: Path, count=10, name="labels.txt") -> Path:
    path = tmp / name
    path.write_text("\n".join(["tench", "goldfish", "tabby, tabby cat", "tiger cat", "lynx", "cup",
                               "espresso", "spoon", "plate", "bowl", "extra"][:count]))
    return path


def png_with_header(path: Path, width: int, height: int, data: bytes = b"\x00" * 16) -> Path:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))
    return path


def edited_model(tmp: Path, edit: Callable[[onnx.ModelProto], None], name="edited.onnx") -> Path:
    _, model = vgg_like(size=16)
    edit(model)
    path = tmp / name
    path.write_bytes(model.SerializeToString())
    return path


def _set_weight(model, value):
    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] = value
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))


def _drop_inputs(model):
    del model.graph.input[:]


def _second_input(model):
    model.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [1, 3]))


def _dangling(model):
    model.graph.node[1].input[0] = "nowhere"


def _no_outputs(model):
    del model.graph.output[:]


def _opset(version):
    def edit(model):
        model.opset_import[0].version = version
    return edit


def _only_custom_domain(model):
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("com.example", 1))


def _erf_after_first_relu(model):
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    erf = helper.make_node("Erf", [relu.output[0]], ["erf_out"], name="erf_on_path")
    for node in model.graph.node:
        if node is not relu:
            node.input[:] = ["erf_out" if i == relu.output[0] else i for i in node.input]
    model.graph.node.insert(list(model.graph.node).index(relu) + 1, erf)


def _custom_op(model):
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))


def _runtime_conv_weight(model):
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    model.graph.initializer.remove(weight)
    model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(weight), "w_source"))
    # the weight scaled by the input's mean: computed at run time, so no folding makes it constant
    model.graph.node.insert(0, helper.make_node("Mul", ["w_source", "input_mean"], [conv.input[1]], name="w_of"))
    model.graph.node.insert(0, helper.make_node("ReduceMean", ["input"], ["input_mean"], keepdims=0, name="mean"))


def model_with_shape(tmp: Path, shape, name) -> Path:
    b = ModelBuilder(shape, dynamic_batch=False)
    flat = b.flatten(b.node("ReduceMean", [b.input_name], axes=list(range(1, len(shape))), keepdims=1)) \
        if len(shape) != 4 else b.flatten(b.gap(b.input_name))
    return save_model(b.build(b.gemm(flat, 3), softmax=False), tmp / name)


def external_outside(tmp: Path) -> Path:
    _, model = vgg_like(size=16)
    inner = tmp / "inner"
    inner.mkdir()
    onnx.save(onnx.ModelProto.FromString(model.SerializeToString()), str(tmp / "whole.onnx"),
              save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    moved = onnx.load(str(tmp / "whole.onnx"), load_external_data=False)
    for tensor in moved.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../w.bin"
    onnx.save(moved, str(inner / "model.onnx"))
    return inner / "model.onnx"


def external_missing(tmp: Path) -> Path:
    _, model = vgg_like(size=16)
    onnx.save(onnx.ModelProto.FromString(model.SerializeToString()), str(tmp / "ext.onnx"),
              save_as_external_data=True, all_tensors_to_one_file=True, location="gone.bin", size_threshold=0)
    (tmp / "gone.bin").unlink()
    return tmp / "ext.onnx"


def truncated(tmp: Path, fraction: float) -> Path:
    data = small_model(tmp).read_bytes()
    path = tmp / f"cut{int(fraction * 100)}.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def raw_file(name: str, content: bytes):
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(content)
        return path
    return make


# ---- the cases ----------------------------------------------------------------------------------

@dataclass
class Bad:
    """A command line (args built from the temporary folder), its exit code, and fragments of the
    message: ``names`` the thing (any one of them), and the message must say what is accepted."""
    args: Callable[[Path], list]
    code: int
    names: tuple = ()
    failure: bool = False        # the message is an image's failure in summary.json (exit 3)


@dataclass
class BadApi:
    call: Callable[[Path], object]
    error: type
    names: tuple = ()


@dataclass
class Odd:
    """Legitimate but odd: the command succeeds and every map is finite."""
    args: Callable[[Path], list]
    extra: dict = field(default_factory=dict)


def explain_with(image_maker, *flags):
    return lambda tmp: ["explain", small_model(tmp), image_maker(tmp), *flags, "--out", tmp / "out"]


def explain_good(*flags):
    return explain_with(lambda tmp: save_image(tmp / "good.png"), *flags)


def with_good(image_maker, *flags):
    """The bad image beside a good one: exit 3, the bad one in the summary's failures."""
    return lambda tmp: ["explain", small_model(tmp), save_image(tmp / "good.png"), image_maker(tmp),
                        *flags, "--out", tmp / "out"]


def explain_model(model_maker):
    """At the pixels, so that whatever is wrong lies on the walk's path."""
    return lambda tmp: ["explain", model_maker(tmp), save_image(tmp / "good.png"), "--layer", "input",
                        "--out", tmp / "out"]


MODELS = {
    "empty_file": (raw_file("empty.onnx", b""), ("empty.onnx",)),
    "text_file": (raw_file("text.onnx", b"just some words\n" * 20), ("text.onnx",)),
    "random_bytes": (raw_file("noise.onnx", bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8))), ("noise.onnx",)),
    "png_as_model": (lambda tmp: save_image(tmp / "picture.onnx.png").rename(tmp / "picture.onnx"), ("picture.onnx",)),
    "json_as_model": (raw_file("model.json.onnx", b'{"graph": {"node": []}}'), ("model.json.onnx",)),
    "truncated_10": (lambda tmp: truncated(tmp, 0.1), ("cut10",)),
    "truncated_50": (lambda tmp: truncated(tmp, 0.5), ("cut50",)),
    "truncated_90": (lambda tmp: truncated(tmp, 0.9), ("cut90",)),
    "opset_5": (lambda tmp: edited_model(tmp, _opset(5)), ("opset 5",)),
    "opset_40": (lambda tmp: edited_model(tmp, _opset(40)), ("opset 40",)),
    "no_default_opset": (lambda tmp: edited_model(tmp, _only_custom_domain), ("opset",)),
    "no_inputs": (lambda tmp: edited_model(tmp, _drop_inputs), ("input",)),
    "two_inputs": (lambda tmp: edited_model(tmp, _second_input), ("extra",)),
    "dangling_edge": (lambda tmp: edited_model(tmp, _dangling), ("nowhere",)),
    "no_outputs": (lambda tmp: edited_model(tmp, _no_outputs), ("output",)),
    "nan_weight": (lambda tmp: edited_model(tmp, lambda m: _set_weight(m, np.nan)), ("const",)),
    "inf_weight": (lambda tmp: edited_model(tmp, lambda m: _set_weight(m, np.inf)), ("const",)),
    "minus_inf_weight": (lambda tmp: edited_model(tmp, lambda m: _set_weight(m, -np.inf)), ("const",)),
    "unsupported_op_on_path": (lambda tmp: edited_model(tmp, _erf_after_first_relu), ("Erf", "erf_on_path")),
    "custom_domain_op": (lambda tmp: edited_model(tmp, _custom_op), ("com.example",)),
    "runtime_conv_weights": (lambda tmp: edited_model(tmp, _runtime_conv_weight), ("Conv", "weights")),
    "huge_declared_input": (lambda tmp: model_with_shape(tmp, (1, 3, 100000, 100000), "huge.onnx"), ("100000x100000",)),
    "three_d_input": (lambda tmp: model_with_shape(tmp, (1, 3, 16), "flat.onnx"), ("(1, 3, 16)",)),
    "five_channels": (lambda tmp: model_with_shape(tmp, (1, 5, 8, 8), "five.onnx"), ("5 channels",)),
    "external_data_outside": (external_outside, ("../w.bin",)),
    "external_data_missing": (external_missing, ("gone.bin",)),
}

IMAGES = {
    "empty": (raw_file("empty.png", b""), ("empty.png",)),
    "text": (raw_file("text.jpg", b"not an image at all\n"), ("text.jpg",)),
    "noise": (raw_file("noise.png", os.urandom(500)), ("noise.png",)),
    "truncated_png": (lambda tmp: raw_file("cut.png", (save_image(tmp / "whole.png", size=(64, 64)).read_bytes())[:80])(tmp), ("cut.png",)),
    "truncated_jpeg": (lambda tmp: raw_file("cut.jpg", (save_image(tmp / "whole.jpg", size=(64, 64)).read_bytes())[:120])(tmp), ("cut.jpg",)),
    "bomb_header": (lambda tmp: png_with_header(tmp / "bomb.png", 40000, 40000), ("bomb.png",)),
    "over_cap_header": (lambda tmp: png_with_header(tmp / "big.png", 12000, 10000), ("big.png",)),
    "bad_idat": (lambda tmp: png_with_header(tmp / "badidat.png", 8, 8, data=b"\xff" * 3), ("badidat.png",)),
    "missing": (lambda tmp: tmp / "missing.png", ("missing.png",)),
    "broken_link": (lambda tmp: (tmp / "link.png").symlink_to(tmp / "gone.png") or tmp / "link.png", ("link.png",)),
    "gif_disguised_as_jpeg": (raw_file("fake.jpg", b"GIF89a" + b"\x00" * 20), ("fake.jpg",)),
    "zero_height_header": (lambda tmp: png_with_header(tmp / "flat.png", 10, 0), ("flat.png",)),
}

ODD_IMAGES = {
    "sixteen_bit_gray": lambda tmp: (Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16)).save(tmp / "deep.png"), tmp / "deep.png")[1],
    "one_by_one": lambda tmp: save_image(tmp / "dot.png", size=(1, 1)),
    "very_wide": lambda tmp: save_image(tmp / "wide.png", size=(2000, 3)),
    "cmyk_jpeg": lambda tmp: save_image(tmp / "cmyk.jpg", mode="CMYK", color=(10, 20, 30, 40)),
    "la_mode": lambda tmp: save_image(tmp / "la.png", mode="LA", color=(100, 50)),
    "palette": lambda tmp: save_image(tmp / "palette.gif", mode="P", color=7),
    "float_tiff": lambda tmp: (Image.fromarray(np.random.default_rng(1).random((9, 9)).astype(np.float32)).save(tmp / "f.tif"), tmp / "f.tif")[1],
    "thirty_two_bit": lambda tmp: (Image.fromarray((np.arange(64).reshape(8, 8) * 1000).astype(np.int32)).save(tmp / "i32.tif"), tmp / "i32.tif")[1],
    "animated_gif": lambda tmp: (Image.new("RGB", (9, 9), (1, 2, 3)).save(
        tmp / "anim.gif", save_all=True, append_images=[Image.new("RGB", (9, 9), (200, 2, 3))]), tmp / "anim.gif")[1],
    "black": lambda tmp: save_image(tmp / "black.png", color=(0, 0, 0)),
    "white": lambda tmp: save_image(tmp / "white.png", color=(255, 255, 255)),
    "rgba_transparent": lambda tmp: save_image(tmp / "clear.png", mode="RGBA", color=(0, 0, 0, 0)),
}

ARGUMENTS = {
    **{f"size_{text}": Bad(explain_good("--size", text), 1, (text,)) for text in
       ("big", "0x0", "-1x5", "10x", "1e3x2", "x", "100000x100000", "32x32")},
    **{f"mean_{i}": Bad(explain_good("--mean", text), 1, ("mean",)) for i, text in
       enumerate(("a,b,c", "1,2", "", "1,,2"))},
    **{f"std_{i}": Bad(explain_good("--std", text), 1, ("std",)) for i, text in
       enumerate(("0", "1,2", "0,1,1", "nan?"))},
    **{f"scale_{i}": Bad(explain_good("--scale", text), 1, ("scale",)) for i, text in
       enumerate(("zero", "-1", "1/0", "0"))},
    **{f"target_{i}": Bad(lambda tmp, t=text: ["explain", small_model(tmp), save_image(tmp / "g.png"),
                                               "--labels", labels_file(tmp), "--target", t], 1, names)
       for i, (text, names) in enumerate((("-1", ("-1",)), ("10", ("10",)), ("top0", ("top0",)),
                                          ("top99", ("top99",)), ("zebra crossing", ("zebra crossing",)),
                                          ("catt", ("catt",)), ("cat", ("'cat'",)), ("", ("''",))))},
    "target_name_without_labels": Bad(explain_good("--target", "cup"), 1, ("'cup'",)),
    "layer_unknown": Bad(explain_good("--layer", "no_such_layer"), 1, ("no_such_layer",)),
    "layer_flatten": Bad(explain_good("--layer", "flatten9"), 1, ("flatten9",)),
    "layer_logits": Bad(explain_good("--layer", "classifier"), 1, ("classifier",)),
    "method": Bad(explain_good("--method", "smoothgrad"), 2, ("smoothgrad",)),
    "format": Bad(explain_good("--format", "gif"), 2, ("gif",)),
    "preset": Bad(explain_good("--preset", "tf"), 2, ("tf",)),
    "layout": Bad(explain_good("--layout", "chw"), 2, ("chw",)),
    "layout_contradicting": Bad(explain_good("--layout", "nhwc"), 1, ("nhwc",)),
    "device_tpu": Bad(explain_good("--device", "tpu"), 1, ("tpu",)),
    "device_cuda_9": Bad(explain_good("--device", "cuda:9"), 1, ("cuda:9",)),
    "batch_size_0": Bad(explain_good("--batch-size", "0"), 2, ("batch-size",)),
    "alpha_2": Bad(explain_good("--alpha", "2"), 2, ("alpha",)),
    "cmap": Bad(explain_good("--cmap", "rainbow"), 2, ("rainbow",)),
    "max_image_pixels_0": Bad(explain_good("--max-image-pixels", "0"), 2, ("max-image-pixels",)),
    "labels_missing": Bad(explain_good("--labels", "nope.txt"), 2, ("nope.txt",)),
    "labels_binary": Bad(lambda tmp: ["explain", small_model(tmp), save_image(tmp / "g.png"), "--labels",
                                      raw_file("bin.txt", b"\xff\xfe\x00\x81" * 10)(tmp)], 1, ("bin.txt",)),
    "labels_wrong_count": Bad(lambda tmp: ["explain", small_model(tmp), save_image(tmp / "g.png"), "--labels",
                                           labels_file(tmp, 11)], 1, ("11 classes",)),
    "resume_and_overwrite": Bad(explain_good("--resume", "--overwrite"), 2, ("--resume",)),
    "out_under_a_file": Bad(lambda tmp: ["explain", small_model(tmp), save_image(tmp / "g.png"), "--out",
                                         raw_file("plain", b"x")(tmp) / "out"], 1, ("plain",)),
    "out_in_sys": Bad(lambda tmp: ["explain", small_model(tmp), save_image(tmp / "g.png"), "--out",
                                   "/sys/exbp-corpus"], 1, ("/sys/exbp-corpus",)),
    "no_images_given": Bad(lambda tmp: ["explain", small_model(tmp)], 2, ("IMAGES",)),
    "empty_folder": Bad(lambda tmp: ["explain", small_model(tmp), (tmp / "empty").mkdir() or tmp / "empty"], 1, ("empty",)),
    "only_a_missing_image": Bad(lambda tmp: ["explain", small_model(tmp), tmp / "gone.png", "--out", tmp / "out"], 1, ("no image",)),
    "model_missing": Bad(lambda tmp: ["explain", tmp / "absent.onnx", save_image(tmp / "g.png")], 2, ("absent.onnx",)),
    "model_is_a_folder": Bad(lambda tmp: ["check", tmp], 2, ("is a directory",)),
    "report_of_an_empty_folder": Bad(lambda tmp: ["report", (tmp / "r").mkdir() or tmp / "r"], 1, ("r",)),
    "labels_of_a_model_without": Bad(lambda tmp: ["labels", small_model(tmp)], 1, ("small.onnx",)),
    "unknown_command": Bad(lambda tmp: ["explian"], 2, ("explian",)),
    "unknown_option": Bad(explain_good("--targets", "1"), 2, ("--targets",)),
}


def _vgg(tmp):
    b, model = vgg_like(size=16)
    return b, exbp.Explainer(model)


def api_explain(**kwargs):
    def call(tmp):
        b, explainer = _vgg(tmp)
        return explainer.explain(kwargs.pop("x", b.input()), **kwargs)
    return call


API = {
    **{f"targets_{i}": BadApi(api_explain(targets=t), exbp.TargetError, names) for i, (t, names) in enumerate((
        (True, ("True",)), (2.5, ("2.5",)), ([], ("[]",)), ([[1], [2]], ("2 rows",)), ("best", ("best",)),
        ("top0", ("top0",)), (-1, ("-1",)), (10, ("10",)), ({"a": 1}, ("'a'",)), (None, ("None",)),
        ([1, "catt"], ("catt",)), (np.array([[1.5]]), ("1.5",))))},
    **{f"x_{i}": BadApi(api_explain(x=x), exbp.InputError, names) for i, (x, names) in enumerate((
        (np.zeros((1, 3, 8, 8), np.float32), ("(1, 3, 8, 8)",)),
        (np.zeros((3, 16, 16), np.float32), ("(3, 16, 16)",)),
        (np.full((1, 3, 16, 16), np.nan, np.float32), ("NaN",)),
        (np.full((1, 3, 16, 16), np.inf, np.float32), ("infinite",)),
        (np.array([["a"]]), ("<U1",)),
        (np.zeros((0, 3, 16, 16), np.float32), ("batch size 0",)),
        (object(), ("object",)),
        (np.zeros((1, 16, 16, 3), np.float32), ("(1, 16, 16, 3)",))))},
    "layer_number": BadApi(api_explain(layer=3), exbp.LayerError, ("3",)),
    "layer_unknown": BadApi(api_explain(layer="nope"), exbp.LayerError, ("nope",)),
    "layer_flatten": BadApi(api_explain(layer="flatten9"), exbp.LayerError, ("flatten9",)),
    "method_unknown": BadApi(api_explain(method="smoothgrad"), exbp.MethodError, ("smoothgrad",)),
    "method_number": BadApi(api_explain(method=3), exbp.MethodError, ("3",)),
    "method_none": BadApi(api_explain(method=None), exbp.MethodError, ("None",)),
    "device": BadApi(lambda tmp: exbp.Explainer(vgg_like()[1], device="tpu"), exbp.ExbpError, ("tpu",)),
    "device_number": BadApi(lambda tmp: exbp.Explainer(vgg_like()[1], device=7), exbp.ExbpError, ("7",)),
    "model_type": BadApi(lambda tmp: exbp.Explainer(3.5), exbp.ModelError, ("float",)),
    "labels_count": BadApi(lambda tmp: exbp.Explainer(vgg_like()[1], labels=["a", "b"]), exbp.ModelError, ("2 classes",)),
    "labels_missing_file": BadApi(lambda tmp: exbp.Explainer(vgg_like()[1], labels=tmp / "none.txt"), exbp.InputError, ("none.txt",)),
    "preprocessing_setting": BadApi(lambda tmp: exbp.resolve_preprocessing((1, 3, 8, 8), {}, sizes="8x8"), exbp.InputError, ("sizes",)),
    "preprocessing_preset": BadApi(lambda tmp: exbp.resolve_preprocessing((1, 3, 8, 8), {}, "tf"), exbp.InputError, ("tf",)),
    "load_image_missing": BadApi(lambda tmp: exbp.load_image(tmp / "x.png"), exbp.InputError, ("x.png",)),
    "load_image_cap": BadApi(lambda tmp: exbp.load_image(save_image(tmp / "c.png"), max_pixels=10), exbp.InputError, ("c.png",)),
    "check_targets": BadApi(lambda tmp: _vgg(tmp)[1].check_targets("top11"), exbp.TargetError, ("top11",)),
    "propagate_top_shape": BadApi(lambda tmp: (lambda b, e: e.propagate(b.input(), np.ones((1, 3))))(*_vgg(tmp)),
                                  exbp.InputError, ("(1, 3)",)),
}

CASES = {**{f"model/{k}": Bad(explain_model(maker), 1, names) for k, (maker, names) in MODELS.items()},
         **{f"image/{k}": Bad(with_good(maker), 3, names, failure=True) for k, (maker, names) in IMAGES.items()},
         **{f"odd_image/{k}": Odd(explain_with(maker)) for k, maker in ODD_IMAGES.items()},
         **{f"argument/{k}": case for k, case in ARGUMENTS.items()},
         **{f"api/{k}": case for k, case in API.items()}}


def test_the_corpus_is_large():
    assert len(CASES) >= 100 and len({type(c) for c in CASES.values()}) == 3


def _check_message(message: str, names) -> None:
    assert message and "\n" not in message.strip() and "Traceback" not in message, message
    assert any(name in message for name in names), (names, message)
    assert any(word in message for word in ACCEPTED), message


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path):
    case = CASES[name]
    started = time.monotonic()
    if isinstance(case, BadApi):
        with pytest.raises(case.error) as excinfo:
            case.call(tmp_path)
        _check_message(str(excinfo.value), case.names)
    else:
        result = run(*case.args(tmp_path))
        assert "Traceback" not in result.output
        if isinstance(case, Odd):
            assert result.exit_code == 0, result.output
            for path in (tmp_path / "out").glob("*.npy"):
                assert np.isfinite(np.load(path)).all()
            assert summary(tmp_path / "out")["results"]
        else:
            assert result.exit_code == case.code, result.output
            if case.failure:
                failures = summary(tmp_path / "out")["failures"]
                assert len(failures) == 1
                _check_message(failures[0]["error"], case.names)
            else:
                lines = result.stderr.strip().splitlines()
                assert lines and lines[-1].startswith("Error: ")
                _check_message(lines[-1], case.names)
    assert time.monotonic() - started < SECONDS
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 < RSS_LIMIT_MB
