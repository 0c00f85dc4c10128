"""The everyday command line under faults: no traceback, no silent NaN, nothing lost, true verdicts,
and the conveniences around a run (labels, overlays, sheets, batches, resume, the HTML report)."""

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

import exbp
from builders import ModelBuilder, vgg_like
from conftest import assert_close, run, save_image, save_model, summary


def one_error_line(result, code=1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: ")
    return message


def crafted_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width × height, with almost no data: Pillow opens it lazily."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
                     chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


# ---- tracebacks that were -----------------------------------------------------------------------

@pytest.mark.parametrize("where", ["under_a_file", "sys"])
def test_an_output_folder_that_cannot_be_created(small, tmp_path, where):
    model, _ = small
    if where == "under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    else:
        out = Path("/sys/exbp-cannot-be-here")
    message = one_error_line(run("explain", model, save_image(tmp_path / "i.png"), "--out", out))
    assert "cannot write to the output folder" in message and str(out) in message


def test_a_decompression_bomb_is_skipped_not_fatal(small, tmp_path):
    model, _ = small
    bomb = crafted_png(tmp_path / "bomb.png", 30000, 30000)         # 900 megapixels declared
    good = save_image(tmp_path / "good.png")
    out = tmp_path / "out"
    result = run("explain", model, bomb, good, "--out", out)
    assert result.exit_code == 3, result.output
    failure = summary(out)["failures"][0]
    assert failure["image"].endswith("bomb.png") and "900000000 pixels" in failure["error"]
    assert "above the cap" in failure["error"]
    assert [Path(r["image"]).name for r in summary(out)["results"]] == ["good.png", "good.png"]


def test_the_image_pixel_cap_is_configurable(small, tmp_path):
    model, _ = small
    out = tmp_path / "out"
    result = run("explain", model, save_image(tmp_path / "i.png", size=(20, 12)), "--out", out,
                 "--max-image-pixels", 100)
    assert result.exit_code == 1 and "above the cap of 100 pixels" in summary(out)["failures"][0]["error"]


def test_a_huge_declared_input_or_size_is_refused_before_any_resize(tmp_path):
    b = ModelBuilder((1, 3, 100000, 100000), dynamic_batch=False)
    huge = save_model(b.build(b.gemm(b.flatten(b.gap(b.input_name)), 3)), tmp_path / "huge.onnx")
    message = one_error_line(run("explain", huge, save_image(tmp_path / "i.png")))
    assert "100000x100000" in message and "above the cap" in message
    _, model = vgg_like()
    free = save_model(model, tmp_path / "small.onnx")
    message = one_error_line(run("explain", free, save_image(tmp_path / "i.png"), "--size", "100000x100000"))
    assert "fixed at 16x16" in message or "above the cap" in message


# ---- silent garbage that was --------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_at_load(tmp_path, bad):
    _, model = vgg_like()
    weight = model.graph.initializer[0]
    values = numpy_helper.to_array(weight).copy()
    values.flat[3] = bad
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    with pytest.raises(exbp.ModelError, match="NaN or infinite") as excinfo:
        exbp.Explainer(model)
    assert weight.name in str(excinfo.value)
    path = save_model(model, tmp_path / "nan.onnx")
    assert weight.name in one_error_line(run("explain", path, save_image(tmp_path / "i.png")))


def test_infinite_constants_that_are_not_weights_are_fine():
    """Some exporters write ReLU as Clip(0, inf), or pad with −inf: those are not weights."""
    b = ModelBuilder((1, 3, 8, 8), seed=1)
    x = b.clip(b.conv(b.input_name, 4), low=0.0, high=np.inf)
    model = b.build(b.gemm(b.flatten(b.gap(x)), 3, name="classifier"))
    assert np.isfinite(exbp.Explainer(model).explain(b.input(), layer=b.input_name).maps).all()


def test_overflowing_activations_are_refused_not_returned_as_nan(tmp_path):
    b = ModelBuilder((1, 3, 8, 8), seed=2)
    loud = b.node("Mul", [b.node("Mul", [b.input_name, b.const(np.float32(1e25))]),
                          b.const(np.float32(1e25))])
    model = b.build(b.gemm(b.flatten(b.gap(b.relu(b.conv(loud, 4)))), 3, name="classifier"))
    x = np.full((1, 3, 8, 8), 3.0, np.float32)
    with pytest.raises(exbp.InputError, match="not finite"):
        exbp.Explainer(model).explain(x)
    out = tmp_path / "out"
    result = run("explain", save_model(model, tmp_path / "loud.onnx"), save_image(tmp_path / "i.png"),
                 "--preset", "none", "--out", out)
    assert result.exit_code == 1 and "RuntimeWarning" not in result.output
    json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(c))


def test_a_16_bit_png_is_explained_like_its_8_bit_copy(probe, tmp_path):
    values = np.random.default_rng(0).integers(0, 256, (12, 20)).astype(np.uint16)
    Image.fromarray(values * 257).save(tmp_path / "deep.png")          # 16-bit grayscale
    Image.fromarray(values.astype(np.uint8)).save(tmp_path / "flat.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    logits = {}
    for name in ("deep", "flat"):
        out = tmp_path / name
        assert run("explain", probe, tmp_path / f"{name}.png", "--target", 0, "--preset", "none",
                   "--method", "mwp", "--out", out).exit_code == 0
        logits[name] = summary(out)["results"][0]["logit"]
    assert logits["deep"] == pytest.approx(logits["flat"], rel=1e-6) and logits["flat"] > 20


# ---- lost work that was -------------------------------------------------------------------------

def test_unreadable_entries_among_good_images_lose_nothing(small, tmp_path):
    model, _ = small
    good = [save_image(tmp_path / "a.png"), save_image(tmp_path / "z.png")]
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "noise.png").write_bytes(os.urandom(300))
    out = tmp_path / "out"
    result = run("explain", model, good[0], tmp_path / "folder.png", tmp_path / "link.png",
                 tmp_path / "noise.png", good[1], "--out", out, "--method", "mwp")
    assert result.exit_code == 3, result.output
    assert [Path(r["image"]).name for r in summary(out)["results"]] == ["a.png", "z.png"]
    assert {Path(f["image"]).name for f in summary(out)["failures"]} == {"link.png", "noise.png"}


def test_ctrl_c_leaves_a_true_summary_and_resume_finishes(small, tmp_path, monkeypatch):
    model, _ = small
    images = [save_image(tmp_path / f"{i}.png", color=(i * 40, 20, 30)) for i in range(4)]
    out = tmp_path / "out"
    original, calls = exbp.explain_images, []

    def interrupted_on_the_third(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)
    monkeypatch.setattr(exbp, "explain_images", interrupted_on_the_third)
    result = run("explain", model, *images, "--out", out, "--method", "mwp")
    assert result.exit_code == 130 and "--resume" in result.stderr
    record = summary(out)
    assert record["interrupted"] is True and record["complete"] is False
    assert [Path(e["image"]).name for e in record["images"]] == ["0.png", "1.png"]
    monkeypatch.setattr(exbp, "explain_images", original)
    result = run("explain", model, *images, "--out", out, "--method", "mwp", "--resume")
    assert result.exit_code == 0, result.output
    record = summary(out)
    assert record["complete"] is True and len(record["images"]) == 4 and len(record["results"]) == 4
    assert "2 of 4 image(s) already done" in result.stderr


def test_a_rerun_into_the_same_folder_is_refused_unless_resumed_or_overwritten(small, tmp_path):
    model, _ = small
    out = tmp_path / "out"
    assert run("explain", model, save_image(tmp_path / "first.png"), "--out", out).exit_code == 0
    message = one_error_line(run("explain", model, save_image(tmp_path / "second.png"), "--out", out))
    assert "holds an earlier run" in message and "--resume or --overwrite" in message
    message = one_error_line(run("explain", model, tmp_path / "second.png", "--out", out, "--resume",
                                 "--method", "mwp"))
    assert "other settings (methods)" in message
    assert run("explain", model, tmp_path / "second.png", "--out", out, "--overwrite").exit_code == 0
    assert not list(out.glob("first_*")) and list(out.glob("second_*_overlay.png"))
    assert one_error_line(run("explain", model, tmp_path / "second.png", "--out", out, "--resume",
                              "--overwrite"), code=2)


# ---- verdicts ------------------------------------------------------------------------------------

def test_an_empty_folder_or_only_missing_images_is_an_error(small, tmp_path):
    model, _ = small
    (tmp_path / "empty").mkdir()
    assert "no images found" in one_error_line(run("explain", model, tmp_path / "empty"))
    out = tmp_path / "out"
    message = one_error_line(run("explain", model, tmp_path / "missing.png", "--out", out))
    assert "no image could be explained" in message
    assert "does not exist" in summary(out)["failures"][0]["error"]


def test_a_size_a_fixed_model_cannot_take_is_refused_once(small, tmp_path):
    model, _ = small
    images = [save_image(tmp_path / f"{i}.png") for i in range(3)]
    result = run("explain", model, *images, "--size", "32x32")
    message = one_error_line(result)
    assert "32x32" in message and "fixed at 16x16" in message and result.stderr.count("Error") == 1


def test_subfolders_are_reported_and_searched_on_request(small, tmp_path):
    model, _ = small
    (tmp_path / "photos" / "deeper").mkdir(parents=True)
    save_image(tmp_path / "photos" / "top.png")
    save_image(tmp_path / "photos" / "deeper" / "inner.png")
    out = tmp_path / "out"
    result = run("explain", model, tmp_path / "photos", "--out", out, "--method", "mwp")
    assert result.exit_code == 0 and "1 subfolder, not searched" in result.stderr
    result = run("explain", model, tmp_path / "photos", "--out", tmp_path / "all", "--method", "mwp", "-r")
    assert result.exit_code == 0
    assert sorted(Path(e["image"]).name for e in summary(tmp_path / "all")["images"]) == ["inner.png", "top.png"]


def test_an_error_of_the_model_not_the_image_stops_the_run_with_1(tmp_path):
    b = ModelBuilder((1, 3, 8, 8), seed=3)
    model = b.build(b.gemm(b.flatten(b.gap(b.relu(b.conv(b.input_name, 4)))), 3, name="classifier"))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"   # unknown before running
    path = save_model(model, tmp_path / "open.onnx")
    images = [save_image(tmp_path / f"{i}.png") for i in range(3)]
    result = run("explain", path, *images, "--target", "top7", "--out", tmp_path / "out")
    assert "top3" in one_error_line(result) and result.stderr.count("skipped") == 0


# ---- noise ---------------------------------------------------------------------------------------

def test_stderr_holds_exbp_s_line_only(tmp_path):
    """onnxruntime's C++ log lines go to the process's stderr, past click: a real process here."""
    b = ModelBuilder((1, 3, 8, 8), seed=4)
    b.const(np.ones(7, np.float32), name="unused_initializer")     # onnxruntime warns about it
    model = save_model(b.build(b.gemm(b.flatten(b.gap(b.relu(b.conv(b.input_name, 4)))), 3)),
                       tmp_path / "warns.onnx")
    process = subprocess.run([sys.executable, "-m", "exbp", "explain", str(model),
                              str(save_image(tmp_path / "i.png")), "--target", "9",
                              "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert process.returncode == 1
    assert process.stderr.strip().splitlines() == [
        "Error: target class 9 is out of range; the model has 3 classes (0 to 2)"]


# ---- rough edges ---------------------------------------------------------------------------------

def test_a_layout_that_contradicts_the_model_says_so(small, tmp_path):
    model, _ = small
    message = one_error_line(run("explain", model, save_image(tmp_path / "i.png"), "--layout", "nhwc"))
    assert "laid out nchw, not nhwc" in message and "channels" in message


def test_a_word_in_several_class_names_lists_them(small, tmp_path):
    model, labels = small
    message = one_error_line(run("explain", model, save_image(tmp_path / "i.png"), "--labels", labels,
                                 "--target", "cat"))
    assert "'tabby, tabby cat'" in message and "'tiger cat'" in message and "exbp labels" in message
    result = run("explain", model, save_image(tmp_path / "i.png"), "--labels", labels,
                 "--target", "espress", "--out", tmp_path / "out", "--method", "mwp")
    assert result.exit_code == 0 and summary(tmp_path / "out")["results"][0]["label"] == "espresso"


def test_labels_lists_and_filters(small):
    model, labels = small
    result = run("labels", model, "--labels", labels)
    assert result.exit_code == 0 and result.output.splitlines()[2] == "2  tabby, tabby cat"
    assert run("labels", model, "cat", "--labels", labels).output.split() == [
        "2", "tabby,", "tabby", "cat", "3", "tiger", "cat"]
    assert "carries no labels" in one_error_line(run("labels", model))
    assert "contains 'zebra'" in one_error_line(run("labels", model, "zebra", "--labels", labels))


def test_layers_lists_neither_the_logits_nor_pad_outputs(tmp_path):
    b = ModelBuilder((1, 3, 8, 8), seed=5)
    padded = b.node("Pad", [b.relu(b.conv(b.input_name, 4)), b.const(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))])
    model = b.build(b.gemm(b.flatten(b.gap(b.relu(b.conv(padded, 4, pad=0)))), 3, name="classifier"))
    explainer = exbp.Explainer(model)
    assert padded not in [layer.name for layer in explainer.layers()]
    with pytest.raises(exbp.LayerError, match="border holds no image"):
        explainer.explain(b.input(), layer=padded)
    listing = run("layers", save_model(model, tmp_path / "pad.onnx")).output
    assert padded not in listing and "logits (no map): classifier" in listing


def test_check_prints_its_verdict_either_way(tmp_path):
    b = ModelBuilder((1, 3, 8, 8))
    x = b.node("Erf", [b.gap(b.relu(b.conv(b.input_name, 4)))], name="odd")
    result = run("check", save_model(b.build(b.gemm(b.flatten(x), 3)), tmp_path / "odd.onnx"))
    assert result.exit_code == 1 and result.output.splitlines()[-1] == "explainable: no"


def test_counts_are_plural_only_when_they_should_be(small, tmp_path):
    model, _ = small
    result = run("explain", model, save_image(tmp_path / "i.png"), "--method", "mwp", "--out", tmp_path / "o")
    assert "wrote 1 map for 1 of 1 image to" in result.stdout


def test_default_outputs_overlays_and_sheets(small, tmp_path):
    model, _ = small
    image = save_image(tmp_path / "photo.png", size=(64, 48), color=(120, 160, 200))
    out = tmp_path / "out"
    assert run("explain", model, image, "--target", "top2", "--out", out).exit_code == 0
    assert not list(out.glob("*_resized.npy")) and len(list(out.glob("*.npy"))) == 4
    record = summary(out)["results"][0]
    overlay = Image.open(next(f for f in record["files"] if f.endswith("_overlay.png")))
    assert overlay.width > 64 and overlay.height > 48            # a colour bar and a title around it
    title_row = np.asarray(overlay.convert("L"))[: overlay.height - 48]
    assert title_row.min() < 100 and title_row.max() == 255      # dark text on white
    sheet = Image.open(out / "photo_sheet.png")
    assert sheet.width >= 2 * overlay.width * 0.9 and sheet.height >= 2 * 48   # 2 methods × 2 targets
    assert summary(out)["images"][0]["sheet"] == str(out / "photo_sheet.png")
    assert len(summary(out)["images"][0]["top"]) == 5


def test_alpha_and_colour_map(small, tmp_path):
    model, _ = small
    image = save_image(tmp_path / "photo.png", size=(24, 18), color=(30, 200, 90))
    out = tmp_path / "out"
    assert run("explain", model, image, "--out", out, "--alpha", "0", "--cmap", "viridis",
               "--no-annotate", "--method", "mwp").exit_code == 0
    record = summary(out)["results"][0]
    overlay = np.asarray(Image.open(next(f for f in record["files"] if f.endswith("_overlay.png"))))
    np.testing.assert_array_equal(overlay, np.asarray(Image.open(image).convert("RGB")))
    heat = np.asarray(Image.open(next(f for f in record["files"] if f.endswith("_heatmap.png"))))
    from exbp.exporters.colormaps import lookup_table
    viridis = {tuple(c) for c in lookup_table("viridis")}
    assert {tuple(p) for p in heat.reshape(-1, 3)} <= viridis


def test_batches_give_the_maps_of_single_images(small, tmp_path):
    model, _ = small
    images = [save_image(tmp_path / f"{i}.png", color=(i * 50, 90, 200 - i * 30)) for i in range(5)]
    images.insert(2, tmp_path / "missing.png")
    outs = {}
    for size in (1, 4):
        outs[size] = tmp_path / f"b{size}"
        result = run("explain", model, *images, "--batch-size", size, "--out", outs[size], "--format", "npy",
                     "--format", "json")
        assert result.exit_code == 3, result.output
    for path in sorted(outs[1].glob("*.npy")):
        assert_close(np.load(outs[4] / path.name), np.load(path))
    assert len(list(outs[4].glob("*.npy"))) == len(list(outs[1].glob("*.npy"))) == 10


def test_a_write_that_fails_half_way_leaves_no_file(tmp_path):
    from exbp.exporters.atomic import write_atomically

    def half(file):
        file.write(b"\x89PNG half")
        raise OSError("disk full")
    target = tmp_path / "map_overlay.png"
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half)
    assert not list(tmp_path.iterdir())
    write_atomically(target, lambda file: file.write(b"whole"))
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_the_report_page_shows_every_overlay(small, tmp_path):
    model, labels = small
    images = [save_image(tmp_path / f"{i}.png", color=(i * 60, 100, 150)) for i in range(2)]
    out = tmp_path / "run"
    assert run("explain", model, *images, tmp_path / "missing.png", "--labels", labels,
               "--out", out).exit_code == 3
    result = run("report", out)
    assert result.exit_code == 0 and "report.html" in result.output
    page = (out / "report.html").read_text()
    sources = [part.split('"')[0] for part in page.split('<img src="')[1:]]
    assert len(sources) == 4 and all((out / source).is_file() for source in sources)
    assert "missing.png" in page and "%</td>" in page
    (tmp_path / "nothing").mkdir()
    assert "holds no readable exbp run" in one_error_line(run("report", tmp_path / "nothing"))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)")
def test_the_report_page_renders_its_images_in_chromium(small, tmp_path):
    model, _ = small
    out = tmp_path / "run"
    assert run("explain", model, *[save_image(tmp_path / f"{i}.png") for i in range(2)],
               "--out", out).exit_code == 0
    assert run("report", out).exit_code == 0
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files",
         "--virtual-time-budget=5000", "--dump-dom", (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    assert 'data-images="4/4"' in dom


# ---- what was fine and must stay fine -------------------------------------------------------------

def test_threads_sharing_one_explainer_give_the_serial_maps():
    from concurrent.futures import ThreadPoolExecutor

    b, model = vgg_like(size=16)
    explainer = exbp.Explainer(model)
    inputs = [b.input(seed=s) for s in range(16)]
    serial = [explainer.explain(x, targets=[1, 4]).maps for x in inputs]
    fresh = exbp.Explainer(model)          # its plans and sessions are built under contention
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda x: fresh.explain(x, targets=[1, 4]).maps, inputs))
    for got, want in zip(threaded, serial):
        np.testing.assert_array_equal(got, want)


def _resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def test_memory_stays_flat_over_300_calls():
    b, model = vgg_like(size=16)
    explainer = exbp.Explainer(model)
    x = b.input(batch=2)
    for _ in range(50):                    # warm-up: sessions, arenas, caches
        explainer.explain_methods(x, targets="top3")
    before = _resident_mb()
    for _ in range(300):
        explainer.explain_methods(x, targets="top3")
    assert _resident_mb() - before < 16


def test_a_hundred_images_with_five_bad_ones_write_the_other_95(small, tmp_path):
    model, _ = small
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(100):
        if i % 20 == 7:
            (folder / f"{i:03d}.png").write_bytes(b"broken")
        else:
            save_image(folder / f"{i:03d}.png", color=(i, 2 * i % 256, 90))
    out = tmp_path / "out"
    result = run("explain", model, folder, "--method", "mwp", "--format", "npy", "--format", "json",
                 "--out", out, "--batch-size", 8)
    assert result.exit_code == 3, result.output
    assert len(summary(out)["images"]) == 95 and len(summary(out)["failures"]) == 5
    assert len(list(out.glob("*.npy"))) == 95
