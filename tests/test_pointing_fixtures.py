"""`exbp pointing-game` end to end on the committed hand-made fixtures, tests/data/voc and
tests/data/coco: four PNG images of a grey background (40, 40, 40) and squares of red (200, 0, 0)
or green (0, 200, 0), each square holding one brighter pixel (255 in its channel) — its peak —
and boxes typed by hand into the VOC XML (1-based) and the COCO JSON ([x, y, w, h]).

The probe model's logits are W · (mean R, G, B) of the ReLU'd input, W = [[1, −1, −1], [−1, 1, −1]]
("red", "green"), at any image size; at the input layer its MWP and c-MWP maps for "red" peak at
the reddest pixel and for "green" at the greenest, so every max point below is known from the
pixels, and each hit from the boxes by hand.

    image  size    class  boxes (0-based, inclusive)        peak      map     centre
    a      96×64   cat    (8, 8, 23, 23)                     (12, 14)  inside  (47.5, 31.5): 24.5 px off
                   dog    (70, 40, 85, 55)                   (80, 50)  inside  22.5 px off
    b      64×96   dog    (10, 20, 53, 75)                   (30, 60)  inside  inside
                   cat    (2, 80, 12, 92), VOC difficult     —         skipped (every cat box difficult)
    c      80×80   cat    (38, 8, 54, 30)                    (23, 12)  15 px: a hit   (39.5, 39.5): 9.5 px
                   dog    (44, 44, 64, 64)                   (12, 68)  32 px: a miss  inside
    d      64×64   cat    (2, 2, 12, 12) and (40, 40, 55, 55) (50, 45) in the second   12.0 px from the second

Difficult pairs (the class's boxes cover under a quarter of the image, another class present):
a's cat and dog (4 % each), c's cat (6 %) and dog (7 %); not b's dog (40 %), nor d's cat (alone).
So the maps hit cat 3/3 and dog 2/3: 83.3 % over all, 75.0 % on the difficult (cat 2/2, dog 1/2);
the centre hits cat 2/3 and dog 2/3: 66.7 %, and on the difficult cat 1/2, dog 1/2: 50.0 %.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import exbp
from builders import ModelBuilder
from conftest import run, save_model

DATA = Path(__file__).parent / "data"
VOC, COCO = DATA / "voc", DATA / "coco"

BOXES = {
    "a.png": {"cat": [(8, 8, 23, 23)], "dog": [(70, 40, 85, 55)]},
    "b.png": {"dog": [(10, 20, 53, 75)], "cat": [(2, 80, 12, 92)]},
    "c.png": {"cat": [(38, 8, 54, 30)], "dog": [(44, 44, 64, 64)]},
    "d.png": {"cat": [(2, 2, 12, 12), (40, 40, 55, 55)]},
}
SIZES = {"a.png": (96, 64), "b.png": (64, 96), "c.png": (80, 80), "d.png": (64, 64)}
PEAKS = {("a.png", "cat"): (12, 14), ("a.png", "dog"): (80, 50), ("b.png", "dog"): (30, 60),
         ("c.png", "cat"): (23, 12), ("c.png", "dog"): (12, 68), ("d.png", "cat"): (50, 45)}
HITS = {("a.png", "cat"): True, ("a.png", "dog"): True, ("b.png", "dog"): True,
        ("c.png", "cat"): True, ("c.png", "dog"): False, ("d.png", "cat"): True}
CENTRE_HITS = {("a.png", "cat"): False, ("a.png", "dog"): False, ("b.png", "dog"): True,
               ("c.png", "cat"): True, ("c.png", "dog"): True, ("d.png", "cat"): True}
DIFFICULT = {("a.png", "cat"), ("a.png", "dog"), ("c.png", "cat"), ("c.png", "dog")}
TABLE = {"mwp": (83.3, 75.0), "cmwp": (83.3, 75.0), "centre": (66.7, 50.0)}


@pytest.fixture
def probe(tmp_path):
    b = ModelBuilder((1, 3, "H", "W"))
    weights = np.array([[1, -1, -1], [-1, 1, -1]], np.float32)
    logits = b.node("Gemm", [b.flatten(b.gap(b.relu(b.input_name))), b.const(weights)], transB=1,
                    name="classifier")
    return save_model(b.build(logits), tmp_path / "probe.onnx",
                      {"exbp.labels": "red\ngreen", "exbp.mean": "0", "exbp.std": "1", "exbp.scale": "1"})


def test_the_fixture_images_hold_the_peaks_the_expectations_rest_on():
    for (image, name), (x, y) in PEAKS.items():
        pixels = np.asarray(Image.open(VOC / "JPEGImages" / image).convert("RGB")).astype(int)
        assert (pixels.shape[1], pixels.shape[0]) == SIZES[image]
        channel = pixels[..., {"cat": 0, "dog": 1}[name]]
        assert channel[y, x] == 255 and (channel == 255).sum() == 1
        assert (np.asarray(Image.open(COCO / "images" / image).convert("RGB")) == pixels).all()


def test_the_readers_give_the_hand_written_boxes():
    voc = exbp.read_voc(VOC)
    assert [a.image.name for a in voc] == list(BOXES)
    assert {a.image.name: a.boxes for a in voc} == BOXES
    assert {a.image.name: (a.width, a.height) for a in voc} == SIZES
    assert {a.image.name: set(a.all_difficult) for a in voc} == {"a.png": set(), "b.png": {"cat"},
                                                                 "c.png": set(), "d.png": set()}
    coco = exbp.read_coco(COCO / "instances.json", COCO / "images")
    without_difficult = dict(BOXES, **{"b.png": {"dog": BOXES["b.png"]["dog"]}})
    assert {a.image.name: {name: sorted(boxes) for name, boxes in a.boxes.items()} for a in coco} == without_difficult
    assert {a.image.name: (a.width, a.height) for a in coco} == SIZES


@pytest.mark.parametrize("dataset", ["voc", "coco"])
def test_the_cli_scores_the_fixtures_as_computed_by_hand(probe, tmp_path, dataset):
    args = (["--voc", VOC, "--classes", VOC / "classes.txt"] if dataset == "voc" else
            ["--coco", COCO / "instances.json", "--images", COCO / "images", "--classes", COCO / "classes.txt"])
    out = tmp_path / "out"
    result = run("pointing-game", probe, *args, "--layer", "input", "--out", out)
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "pointing.json").read_text())
    rows = {row["method"]: row for row in scores["table"]}
    assert set(rows) == set(TABLE)
    for method, (everything, difficult) in TABLE.items():
        assert round(rows[method]["all"], 1) == everything and round(rows[method]["difficult"], 1) == difficult
        assert rows[method]["pairs"] == 6
        assert f"| {method} | {everything:.1f} | {difficult:.1f} | 6 |" in result.stdout
    records = [r for image in scores["images"].values() for r in image]
    assert len(records) == 18
    for r in records:
        pair = (Path(r["image"]).name, r["class"])
        assert r["difficult"] == (pair in DIFFICULT)
        if r["method"] == "centre":
            width, height = SIZES[pair[0]]
            assert r["point"] == [(width - 1) / 2, (height - 1) / 2] and r["hit"] == CENTRE_HITS[pair]
        else:
            assert tuple(r["point"]) == PEAKS[pair] and r["hit"] == HITS[pair], r


def test_a_box_off_by_one_pixel_turns_the_15_px_hit_into_a_miss(probe, tmp_path):
    """c's cat box starts exactly 15 px right of the red peak; moved one pixel further it misses,
    so cat's rate drops to 2/3 and the maps' accuracy to (2/3 + 2/3) / 2."""
    import shutil

    root = shutil.copytree(VOC, tmp_path / "voc")
    xml = root / "Annotations" / "c.xml"
    xml.write_text(xml.read_text().replace("<xmin>39</xmin>", "<xmin>40</xmin>"))
    out = tmp_path / "out"
    result = run("pointing-game", probe, "--voc", root, "--classes", root / "classes.txt",
                 "--layer", "input", "--method", "mwp", "--out", out)
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads((out / "pointing.json").read_text())["table"]}
    assert round(rows["mwp"]["all"], 1) == 66.7 and round(rows["mwp"]["difficult"], 1) == 50.0
