"""The exbp command, with click's CliRunner, on real files."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

import exbp
from exbp.cli.main import cli
from exbp import cuda_unavailable
from builders import ModelBuilder, vgg_like
from conftest import assert_close, run, save_image, save_model, summary

DATA = Path(__file__).parent / "data"
DEMO = Path(exbp.__file__).parent / "demo"


def logits_of(out: Path) -> dict:
    return {r["target"]: r["logit"] for r in summary(out)["results"] if r["method"] == "mwp"}


# ---- preprocessing, through the command ----------------------------------------------------------

@pytest.mark.parametrize("flags, expected", [
    (["--preset", "none"], [10, 20, 30]),
    (["--preset", "caffe"], [30 - 103.939, 20 - 116.779, 10 - 123.68]),
    (["--preset", "imagenet"], [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224,
                                (30 / 255 - 0.406) / 0.225]),
    ([], [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225]),
    (["--scale", "1/10", "--mean", "1,2,3", "--std", "2", "--bgr"], [(3 - 1) / 2, (2 - 2) / 2, (1 - 3) / 2]),
    (["--preset", "caffe", "--rgb", "--mean", "0"], [10, 20, 30]),
])
def test_preprocessing_flags(probe, tmp_path, flags, expected):
    image = save_image(tmp_path / "flat.png")
    out = tmp_path / "out"
    result = run("explain", probe, image, "--target", 0, "--target", 1, "--target", 2,
                 "--method", "mwp", "--out", out, *flags)
    assert result.exit_code == 0, result.output
    got = logits_of(out)
    np.testing.assert_allclose([got[0], got[1], got[2]], expected, rtol=1e-5, atol=1e-5)


def test_model_metadata_gives_preprocessing_and_flags_override(probe, tmp_path):
    model = onnx.load(str(probe))
    with_metadata = save_model(model, tmp_path / "meta.onnx",
                               {"exbp.mean": "5,5,5", "exbp.std": "5,5,5", "exbp.scale": "1",
                                "exbp.labels": "red\ngreen\nblue"})
    image = save_image(tmp_path / "flat.png")
    out = tmp_path / "a"
    assert run("explain", with_metadata, image, "--target", "red", "--target", "blue", "--method", "mwp",
               "--out", out).exit_code == 0
    assert logits_of(out) == pytest.approx({0: 1.0, 2: 5.0})
    assert {r["label"] for r in summary(out)["results"]} == {"red", "blue"}
    out = tmp_path / "b"
    assert run("explain", with_metadata, image, "--target", 0, "--std", "1", "--method", "mwp",
               "--out", out).exit_code == 0
    assert logits_of(out) == pytest.approx({0: 5.0})


def test_size_layout_and_image_modes(tmp_path):
    b = ModelBuilder((1, 6, 6, 1), dynamic_batch=False)          # NHWC, grayscale
    nchw = b.node("Transpose", [b.input_name], perm=[0, 3, 1, 2])
    model = save_model(b.build(b.gemm(b.flatten(b.relu(b.conv(nchw, 2))), 3)), tmp_path / "nhwc.onnx")
    images = [save_image(tmp_path / "rgba.png", mode="RGBA", color=(10, 20, 30, 128)),
              save_image(tmp_path / "gray.jpg", mode="L", color=90),
              save_image(tmp_path / "palette.png", mode="P", color=3)]
    out = tmp_path / "out"
    result = run("explain", model, *images, "--layer", b.input_name, "--out", out, "--method", "mwp",
                 "--format", "json", "--format", "npy-resized")
    assert result.exit_code == 0, result.output
    records = summary(out)["results"]
    assert summary(out)["preprocessing"]["layout"] == "nhwc"
    assert summary(out)["preprocessing"]["size"] == [6, 6]
    assert [r["map_shape"] for r in records] == [[6, 6]] * 3
    assert records[0]["image_size"] == {"width": 20, "height": 12}
    assert np.load(out / "rgba_0_mwp_resized.npy").shape == (12, 20)


def test_size_flag_for_a_model_with_free_spatial_size(tmp_path):
    b = ModelBuilder((1, 3, 16, 16))
    b.inputs[0].type.tensor_type.shape.dim[2].dim_param = "H"
    b.inputs[0].type.tensor_type.shape.dim[3].dim_param = "W"
    model = save_model(b.build(b.gemm(b.flatten(b.gap(b.relu(b.conv(b.input_name, 4)))), 3,
                                      name="classifier")), tmp_path / "free.onnx")
    image = save_image(tmp_path / "image.png", size=(30, 20))
    out = tmp_path / "out"
    assert run("explain", model, image, "--size", "12x24", "--layer", b.input_name, "--out", out).exit_code == 0
    assert summary(out)["results"][0]["map_shape"] == [12, 24]


# ---- explain: targets, methods, layers, formats, files ---------------------------------------

def test_targets_methods_formats_and_files(small, tmp_path):
    model, labels = small
    image = save_image(tmp_path / "photo.jpg", size=(40, 30), color=(200, 100, 50))
    out = tmp_path / "out"
    result = run("explain", model, image, "--labels", labels, "--target", "tabby cat", "--target", 7,
                 "--target", "top1", "--method", "cmwp", "--format", "npy", "--format", "npy-resized",
                 "--format", "json",
                 "--layer", "relu4", "--out", out)
    assert result.exit_code == 0, result.output
    records = summary(out)["results"]
    assert [r["target"] for r in records][:2] == [2, 7] and {r["method"] for r in records} == {"cmwp"}
    assert not list(out.glob("*.png"))
    first = records[0]
    assert first["label"] == "tabby, tabby cat" and first["layer"] == "relu4"
    raw = np.load(out / "photo_2-tabby_cmwp.npy")
    resized = np.load(out / "photo_2-tabby_cmwp_resized.npy")
    assert first["files"] == [str(out / "photo_2-tabby_cmwp.npy"), str(out / "photo_2-tabby_cmwp_resized.npy")]
    assert raw.dtype == np.float32 and list(raw.shape) == first["map_shape"] == [16, 16]
    assert resized.shape == (30, 40)
    y, x = np.unravel_index(np.argmax(resized), resized.shape)
    assert first["max_point"] == {"x": int(x), "y": int(y)}
    explainer = exbp.Explainer(str(model))
    from exbp.preprocessing import load_image, resolve_preprocessing
    settings = resolve_preprocessing(explainer.input_spec.shape, explainer.metadata)
    expected = explainer.explain(settings.to_input(load_image(image), 3), targets=2, layer="relu4",
                                 method="cmwp").maps[0, 0]
    assert_close(raw, expected)     # the run walked (its targets mix "top1" and classes)
    assert 0 < first["probability"] < 1 and first["seconds"] > 0


def test_top5_and_both_methods_write_pngs(small, tmp_path):
    model, labels = small
    image = save_image(tmp_path / "photo.png", size=(24, 18), color=(30, 200, 90))
    out = tmp_path / "out"
    assert run("explain", model, image, "--target", "top5", "--out", out, "--no-annotate").exit_code == 0
    records = summary(out)["results"]
    assert len(records) == 10 and [r["method"] for r in records[:2]] == ["mwp", "cmwp"]
    logits = [r["logit"] for r in records[::2]]
    assert logits == sorted(logits, reverse=True)
    heatmap = Image.open(out / f"photo_{records[0]['target']}_mwp_heatmap.png")
    overlay = np.asarray(Image.open(out / f"photo_{records[0]['target']}_mwp_overlay.png"), np.float64)
    assert heatmap.size == (24, 18) and overlay.shape == (18, 24, 3)
    photo = np.asarray(Image.open(image).convert("RGB"), np.float64)
    np.testing.assert_allclose(overlay, 0.5 * photo + 0.5 * np.asarray(heatmap, np.float64), atol=0.51)


def test_directories_expand_and_stems_stay_unique(small, tmp_path):
    model, _ = small
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        save_image(tmp_path / folder / "same.png")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = run("explain", model, tmp_path / "a", tmp_path / "b", "--method", "mwp", "--out", out)
    assert result.exit_code == 0, result.output
    assert [Path(r["image"]).parent.name for r in summary(out)["results"]] == ["a", "b"]
    assert len(list(out.glob("same_*_mwp_overlay.png"))) == 1
    assert len(list(out.glob("same-2_*_mwp_overlay.png"))) == 1


def test_png_only_and_progress_bar(small, tmp_path):
    model, _ = small
    images = [save_image(tmp_path / f"{i}.png") for i in range(3)]
    out = tmp_path / "out"
    result = run("explain", model, *images, "--format", "png", "--out", out)
    assert result.exit_code == 0
    assert "explaining" in result.stderr
    assert not (out / "summary.json").exists() and not list(out.glob("*.npy"))
    assert len(list(out.glob("*_heatmap.png"))) == len(list(out.glob("*_overlay.png"))) == 6
    assert "wrote 6 maps for 3 of 3 images" in result.stdout


def test_a_bad_file_does_not_lose_the_batch(small, tmp_path):
    model, _ = small
    good = [save_image(tmp_path / "one.png"), save_image(tmp_path / "two.png")]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "out"
    result = run("explain", model, good[0], broken, tmp_path / "missing.png", good[1], "--out", out)
    assert result.exit_code == 3
    report = summary(out)
    assert [Path(r["image"]).name for r in report["results"][::2]] == ["one.png", "two.png"]
    errors = {Path(f["image"]).name: f["error"] for f in report["failures"]}
    assert "not an image Pillow can read" in errors["broken.jpg"]
    assert "does not exist" in errors["missing.png"]
    assert "skipped" in result.stderr and "2 images failed" in result.stderr


# ---- errors that stop the run ------------------------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--target", "tabby catt"], "did you mean 'tabby cat'"),
    (["--target", "42"], "out of range; the model has 10 classes"),
    (["--target", "top20"], "top10"),
    (["--layer", "relu_4"], "did you mean 'relu4'"),
    (["--size", "big"], "is not HxW"),
    (["--mean", "1,2"], "mean has 2 values"),
    (["--scale", "zero"], "is not a number"),
])
def test_one_line_errors(small, tmp_path, args, fragment):
    model, labels = small
    image = save_image(tmp_path / "image.png")
    result = run("explain", model, image, "--labels", labels, *args)
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("Error: ") and fragment in message and "\n" not in message
    assert "Traceback" not in result.output


def test_class_name_without_labels(small, tmp_path):
    model, _ = small
    result = run("explain", model, save_image(tmp_path / "i.png"), "--target", "cup")
    assert result.exit_code == 1 and "needs labels" in result.stderr


def test_model_that_does_not_load(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"garbage" * 10)
    result = run("explain", broken, save_image(tmp_path / "i.png"))
    assert result.exit_code == 1 and "is not an ONNX model" in result.stderr


def test_channel_mismatch(tmp_path):
    b = ModelBuilder((1, 4, 8, 8))
    model = save_model(b.build(b.gemm(b.flatten(b.gap(b.input_name)), 3)), tmp_path / "rgbd.onnx")
    result = run("explain", model, save_image(tmp_path / "i.png"))
    assert result.exit_code == 1 and "takes 4 channels" in result.stderr


def test_device_auto_says_which_and_unknown_device_is_refused(small, tmp_path):
    model, _ = small
    out = tmp_path / "out"
    result = run("explain", model, save_image(tmp_path / "i.png"), "--device", "auto", "--out", out)
    assert result.exit_code == 0, result.output
    chosen = "cpu" if cuda_unavailable() else "cuda:0"
    assert f"device: {chosen}" in result.stderr and summary(out)["device"] == chosen
    result = run("explain", model, save_image(tmp_path / "i.png"), "--device", "tpu")
    assert result.exit_code == 1 and "unknown device 'tpu'; use cpu, cuda, cuda:N or auto" in result.stderr


# ---- layers, check, demo -----------------------------------------------------------------------

def test_layers_marks_the_default(small):
    model, _ = small
    result = run("layers", model)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    explainer = exbp.Explainer(str(model))
    logits = explainer.layers()[-1].name
    assert lines[0].split()[:2] == ["input", "Input"] and lines[-1].startswith(f"logits (no map): {logits} ")
    assert not any(line.split()[:1] == [logits] for line in lines[:-1])
    default = explainer.default_layer()
    assert any(line.startswith("*") and default in line for line in lines)
    assert lines[-2] == f"* default map layer: {default}"


def test_check_explainable_model(small):
    result = run("check", small[0])
    assert result.exit_code == 0, result.output
    assert "opset: 17" in result.output and "explainable: yes" in result.output
    assert "cmwp at the default layer: yes" in result.output and "Conv ×3" in result.output


def test_check_refused_model(tmp_path):
    b = ModelBuilder((1, 3, 8, 8))
    x = b.node("Erf", [b.gap(b.relu(b.conv(b.input_name, 4)))], name="odd")
    model = save_model(b.build(b.gemm(b.flatten(x), 3)), tmp_path / "odd.onnx")
    result = run("check", model)
    assert result.exit_code == 1
    assert "refused: Erf 'odd' (on the input-to-logits path)" in result.output
    assert "mwp at the default layer: no" in result.output


def test_demo_and_pointing_on_the_cat(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--out", out)
    assert result.exit_code == 0, result.output
    overlays = sorted(out.glob("*_cmwp_overlay.png"))
    assert len(overlays) == 4 and all(str(path) in result.output for path in overlays)
    boxes = json.loads((DATA / "boxes.json").read_text())
    points = {(Path(r["image"]).name, r["label"], r["method"]): r["max_point"]
              for r in summary(out)["results"]}
    assert {r["label"] for r in summary(out)["results"]} >= {"tabby, tabby cat", "cup"}
    assert _within(points[("chelsea.png", "tabby, tabby cat", "cmwp")], boxes["chelsea.png"]["cat face"])
    assert _within(points[("coffee.png", "espresso", "cmwp")], boxes["coffee.png"]["cup"])


def _within(point, box, tolerance=15):
    """The pointing game's hit: within 15 px (inclusive) of the box."""
    x0, y0, x1, y1 = box
    dx = max(x0 - point["x"], 0, point["x"] - x1)
    dy = max(y0 - point["y"], 0, point["y"] - y1)
    return dx * dx + dy * dy <= tolerance * tolerance


def test_pointing_hit_rule():
    assert _within({"x": 10, "y": 10}, [0, 0, 5, 5]) and not _within({"x": 20, "y": 20}, [0, 0, 5, 5])
    assert _within({"x": 20, "y": 5}, [0, 0, 5, 5]) and not _within({"x": 21, "y": 5}, [0, 0, 5, 5])


def test_explain_on_ray_without_ray_says_what_to_install(small, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    model, _ = small
    image = save_image(tmp_path / "photo.png")
    result = run("explain", model, image, "--ray", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "--ray needs Ray" in result.output and "Traceback" not in result.output
