"""The pointing game (docs/method.md §6): the protocol by hand, the VOC and COCO readers on
hand-made annotations, and `exbp pointing-game` on a model whose maps are known."""

import json

import numpy as np
import pytest
from PIL import Image

import exbp
from builders import ModelBuilder
from conftest import run, save_model

pointing = exbp.pointing


def test_a_hit_is_within_15_pixels_inclusive():
    box = [(0, 0, 5, 5)]
    assert pointing.hit((20, 5), box) and not pointing.hit((21, 5), box)
    assert not pointing.hit((16, 16), box) and pointing.hit((15, 15), box)   # √242 > 15 ≥ √200
    assert pointing.hit((3, 3), box) and not pointing.hit(None, box)
    assert pointing.hit((40, 40), [(0, 0, 5, 5), (30, 30, 35, 35)])     # any instance of the class


def test_difficult_pairs_are_small_boxes_beside_another_class():
    small_and_other = exbp.Annotation("i", 100, 100, {"cat": [(0, 0, 9, 9)], "dog": [(50, 50, 99, 99)]})
    assert pointing.is_difficult(small_and_other, "cat") and not pointing.is_difficult(small_and_other, "dog")
    alone = exbp.Annotation("i", 100, 100, {"cat": [(0, 0, 9, 9)]})
    assert not pointing.is_difficult(alone, "cat")


def test_accuracy_is_the_mean_of_per_class_hit_rates():
    records = [{"method": "m", "class": "a", "hit": True, "difficult": False},
               {"method": "m", "class": "a", "hit": False, "difficult": True},
               {"method": "m", "class": "b", "hit": True, "difficult": True}]
    assert pointing.accuracy(records) == {"m": 75.0}
    assert pointing.accuracy(records, "difficult") == {"m": 50.0}


# ---- a model whose maps are known, and datasets for it -------------------------------------------

SIZE = 96
BOXES = {  # image -> class -> box (x0, y0, x1, y1), more than 15 px from the centre
    "a": {"cat": (6, 9, 27, 30), "dog": (66, 60, 87, 81)},
    "b": {"cat": (63, 6, 84, 27)},
    "c": {"dog": (9, 66, 30, 87), "cat": (60, 63, 81, 84)},
}
COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0)}


@pytest.fixture
def colour_model(tmp_path):
    """logits = W · (mean R, G, B) with W = [[1, −1, −1], [−1, 1, −1]]: class 0 ("red") sees red
    pixels, class 1 ("green") green ones; its MWP and c-MWP maps at the pixels peak on them."""
    b = ModelBuilder((1, 3, SIZE, SIZE))
    weights = np.array([[1, -1, -1], [-1, 1, -1]], np.float32)
    logits = b.node("Gemm", [b.flatten(b.gap(b.relu(b.input_name))), b.const(weights)], transB=1,
                    name="classifier")
    return save_model(b.build(logits), tmp_path / "colours.onnx",
                      {"exbp.labels": "red\ngreen", "exbp.mean": "0", "exbp.std": "1", "exbp.scale": "1"})


def _image(path, boxes):
    pixels = np.full((SIZE, SIZE, 3), 40, np.uint8)
    for name, (x0, y0, x1, y1) in boxes.items():
        pixels[y0:y1 + 1, x0:x1 + 1] = COLOURS[name]
    Image.fromarray(pixels).save(path)


def voc_dataset(root, boxes=BOXES, difficult=()):
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    for image_id, objects in boxes.items():
        _image(root / "JPEGImages" / f"{image_id}.png", objects)
        xml = "".join(
            f"<object><name>{name}</name><difficult>{int((image_id, name) in difficult)}</difficult>"
            f"<bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1 + 1}</xmax><ymax>{y1 + 1}</ymax>"
            "</bndbox></object>" for name, (x0, y0, x1, y1) in objects.items())
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.png</filename><size><width>{SIZE}</width>"
            f"<height>{SIZE}</height><depth>3</depth></size>{xml}</annotation>")
    (root / "ImageSets/Main/test.txt").write_text("\n".join(boxes) + "\n")
    return root


def coco_dataset(root, boxes=BOXES):
    root.mkdir()
    categories = [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}]
    ids = {"cat": 7, "dog": 9}
    images, annotations = [], []
    for number, (image_id, objects) in enumerate(boxes.items()):
        _image(root / f"{image_id}.png", objects)
        images.append({"id": number, "file_name": f"{image_id}.png", "width": SIZE, "height": SIZE})
        annotations += [{"image_id": number, "category_id": ids[name], "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1]}
                        for name, (x0, y0, x1, y1) in objects.items()]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_the_readers_agree_on_the_same_annotations(tmp_path):
    voc = exbp.read_voc(voc_dataset(tmp_path / "voc", difficult={("a", "dog")}))
    coco = exbp.read_coco(coco_dataset(tmp_path / "coco"), tmp_path / "coco")
    assert [a.boxes for a in voc] == [a.boxes for a in coco] == [
        {name: [box] for name, box in objects.items()} for objects in BOXES.values()]
    assert voc[0].all_difficult == {"dog"} and pointing.pairs(voc[0]) == ["cat"]
    assert voc[0].image.name == "a.png" and (voc[0].width, voc[0].height) == (SIZE, SIZE)


def test_the_game_scores_known_maps_against_the_centre(colour_model, tmp_path):
    (tmp_path / "classes.txt").write_text("cat: red\ndog: 1\n")
    for name, dataset in (("voc", ["--voc", voc_dataset(tmp_path / "voc")]),
                          ("coco", ["--coco", coco_dataset(tmp_path / "coco"), "--images", tmp_path / "coco"])):
        out = tmp_path / f"out-{name}"
        result = run("pointing-game", colour_model, *dataset, "--classes", tmp_path / "classes.txt",
                     "--layer", "input", "--out", out)
        assert result.exit_code == 0, result.output
        rows = {row["method"]: row for row in json.loads((out / "pointing.json").read_text())["table"]}
        assert rows["mwp"]["all"] == rows["cmwp"]["all"] == 100.0 and rows["centre"]["all"] == 0.0
        assert rows["mwp"]["pairs"] == 5 and rows["cmwp"]["difficult"] == 100.0
        assert "| cmwp | 100.0 | 100.0 | 5 |" in result.stdout
        assert (out / "pointing.md").read_text() == result.stdout
        assert (out / "pointing.csv").read_text().splitlines()[0] == "method,all,difficult,pairs"


def test_limit_resume_failures_and_mapping_errors(colour_model, tmp_path):
    root = voc_dataset(tmp_path / "voc")
    (tmp_path / "classes.txt").write_text("cat: 0\ndog: 1\n")
    out = tmp_path / "out"
    common = ["pointing-game", colour_model, "--voc", root, "--classes", tmp_path / "classes.txt",
              "--layer", "input", "--method", "mwp"]
    assert run(*common, "--limit", 2, "--out", out).exit_code == 0
    assert len(json.loads((out / "pointing.json").read_text())["images"]) == 2
    assert "earlier scores" in run(*common, "--out", out).stderr
    (root / "JPEGImages" / "c.png").unlink()
    result = run(*common, "--out", out, "--resume")
    assert result.exit_code == 3 and "c.png" in result.stderr
    scores = json.loads((out / "pointing.json").read_text())
    assert len(scores["images"]) == 2 and list(scores["failures"]) == [str(root / "JPEGImages" / "c.png")]
    (tmp_path / "bad.txt").write_text("cat: 5\n")
    message = run("pointing-game", colour_model, "--voc", root, "--classes", tmp_path / "bad.txt").stderr
    assert "out of range" in message
    message = run("pointing-game", colour_model, "--voc", root).stderr.strip()
    assert "'cat'" in message and message.count("\n") == 0
    assert run("pointing-game", colour_model).exit_code == 2


def test_deletion_and_insertion_prefer_the_maps_to_the_centre(colour_model, tmp_path):
    """Deleting the pixels the maps rank first (the coloured squares) drops the class's
    probability sooner than deleting from the centre outwards; inserting them raises it sooner."""
    (tmp_path / "classes.txt").write_text("cat: 0\ndog: 1\n")
    out = tmp_path / "out"
    result = run("pointing-game", colour_model, "--voc", voc_dataset(tmp_path / "voc"), "--classes",
                 tmp_path / "classes.txt", "--layer", "input", "--curves", "--out", out)
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads((out / "pointing.json").read_text())["table"]}
    for method in ("mwp", "cmwp"):
        assert rows[method]["deletion"] < rows["centre"]["deletion"] - 0.05
        assert rows[method]["insertion"] > rows["centre"]["insertion"] + 0.05
    assert "deletion AUC" in result.stdout


def test_the_curves_by_hand():
    """logits = (mean of the input, 0): deleting (zeroing) a third of a constant image at a time
    takes the probability of class 0 from σ(1) down to ½; inserting it into its blur (the same
    constant image) keeps it at σ(1)."""
    from exbp.evaluation.curves import deletion_insertion

    b = ModelBuilder((1, 1, 3, 3))
    weights = np.array([[1.0], [0.0]], np.float32)
    model = b.build(b.node("Gemm", [b.flatten(b.gap(b.input_name)), b.const(weights)], transB=1))
    explainer = exbp.Explainer(model)
    x = np.ones((1, 1, 3, 3), np.float32)
    saliency = np.arange(9, dtype=np.float32).reshape(3, 3)
    found = deletion_insertion(explainer, x, 0, saliency, steps=3)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    np.testing.assert_allclose(found.deletion, sigmoid(np.array([1, 2 / 3, 1 / 3, 0])), rtol=1e-5)
    np.testing.assert_allclose(found.insertion, sigmoid(np.ones(4)), rtol=1e-5)
    assert found.deletion_auc == pytest.approx(np.mean([(a + b) / 2 for a, b in zip(found.deletion[:-1], found.deletion[1:])]))
