"""The synthetic multi-object set (exbp/evaluation/synthetic.py), its committed test split and the
small CNN trained on it (tests/data/synthetic, made by tools/synthetic/train.py): the generator is
deterministic and its boxes are where its objects are, the committed split is what it writes, and
on that split c-MWP beats MWP, which beats the centre baseline (docs/method.md §6)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import exbp
from exbp.evaluation import synthetic
from conftest import run

SYNTHETIC = Path(__file__).parent / "data" / "synthetic"
MODEL = SYNTHETIC / "model.onnx"
SEED, COUNT = 3, 80          # the committed split: python -m exbp.evaluation.synthetic ... --seed 3 --count 80


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_generator_is_deterministic_and_an_image_does_not_depend_on_the_count(tmp_path):
    synthetic.generate(tmp_path / "one", 6, seed=5)
    synthetic.generate(tmp_path / "two", 6, seed=5)
    synthetic.generate(tmp_path / "short", 3, seed=5)
    synthetic.generate(tmp_path / "other", 6, seed=6)
    one, two, short = _files(tmp_path / "one"), _files(tmp_path / "two"), _files(tmp_path / "short")
    assert one == two and len(one) == 6 * 2 + 2
    for name in ("JPEGImages/test_00002.jpg", "Annotations/test_00002.xml"):
        assert short[name] == one[name]
    assert _files(tmp_path / "other")["JPEGImages/test_00000.jpg"] != one["JPEGImages/test_00000.jpg"]


def test_every_box_is_the_extent_of_its_objects_pixels(tmp_path):
    """Read back through exbp's VOC reader, each box is exactly where the image changes when its
    object is left out of the painting (lossless PNG here)."""
    count = 40
    synthetic.generate(tmp_path, count, seed=11, image_format="png")
    annotations = exbp.read_voc(tmp_path)
    checked = difficult = 0
    for index, annotation in enumerate(annotations):
        drawn = synthetic.scene(11, index)
        pixels = np.asarray(Image.open(annotation.image))
        assert pixels.shape == (synthetic.SIZE, synthetic.SIZE, 3)
        assert 1 <= len(annotation.boxes) <= 3
        assert sorted(annotation.boxes) == sorted(shape.kind for shape in drawn.objects)
        for number, shape in enumerate(drawn.objects):
            changed = (synthetic.render(drawn, omit=[number]) != pixels).any(axis=-1)
            ys, xs = np.nonzero(changed)
            (box,) = annotation.boxes[shape.kind]
            assert (xs.min(), ys.min(), xs.max(), ys.max()) == box
            checked += 1
        for name in annotation.all_difficult:      # cut by the border, as VOC marks such objects
            (x0, y0, x1, y1) = annotation.boxes[name][0]
            assert min(x0, y0) == 0 or max(x1, y1) == synthetic.SIZE - 1
            difficult += 1
    assert checked >= 1.5 * count and difficult >= 1


def test_the_committed_split_is_the_generators_and_reads_as_voc_and_coco(tmp_path):
    synthetic.generate(tmp_path, COUNT, seed=SEED)
    committed = exbp.read_voc(SYNTHETIC)
    assert len(committed) == COUNT
    for annotation in committed:
        name = Path(annotation.image).stem
        assert (SYNTHETIC / "Annotations" / f"{name}.xml").read_text() == \
            (tmp_path / "Annotations" / f"{name}.xml").read_text()
        # JPEG bytes may differ between libjpeg builds; the pixels may not, beyond its rounding
        here = np.asarray(Image.open(annotation.image), np.float32)
        assert np.abs(here - np.asarray(Image.open(tmp_path / "JPEGImages" / annotation.image.name), np.float32)).mean() < 1.0
    coco = exbp.read_coco(SYNTHETIC / "annotations" / "instances_test.json", SYNTHETIC / "JPEGImages")
    for v, c in zip(committed, coco):
        assert v.image == c.image and c.boxes == {k: b for k, b in v.boxes.items() if k not in v.all_difficult}
    classes = {name for annotation in committed for name in annotation.boxes}
    assert classes == set(synthetic.CLASSES)
    assert 0.2 < np.mean([len(a.boxes) == 1 for a in committed]) < 0.45


def test_bad_generator_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        synthetic.generate(tmp_path, 0)
    with pytest.raises(ValueError, match="'jpg' or 'png'"):
        synthetic.generate(tmp_path, 1, image_format="gif")
    with pytest.raises(SystemExit) as exited:
        synthetic.main([str(tmp_path / "x"), "--count", "-2"])
    assert exited.value.code == 1


@pytest.fixture(scope="module")
def explainer():
    return exbp.Explainer(MODEL)


def test_the_committed_model_recognises_the_shapes(explainer):
    """Its classification, through exbp's own preprocessing, of the committed split."""
    assert explainer.labels.names == list(synthetic.CLASSES)
    settings = exbp.resolve_preprocessing(explainer.input_spec, explainer.metadata, None)
    annotations = exbp.read_voc(SYNTHETIC)
    x = np.concatenate([settings.to_input(exbp.load_image(a.image), 3) for a in annotations])
    present = np.array([[name in a.boxes for name in synthetic.CLASSES] for a in annotations])
    predicted = explainer.logits(x) > 0
    assert (predicted == present).mean(axis=0).min() > 0.85
    assert explainer.default_layer(x.shape) in {layer.name for layer in explainer.layers()}


def test_cmwp_beats_mwp_beats_the_centre_on_the_synthetic_split(explainer, capsys):
    annotations = exbp.read_voc(SYNTHETIC)
    settings = exbp.resolve_preprocessing(explainer.input_spec, explainer.metadata, None)
    targets = exbp.pointing.model_targets(annotations, {}, explainer)
    records, failures = exbp.pointing.play(explainer, annotations, settings, ("mwp", "cmwp"), None,
                                           targets, {}, curves=True)
    assert not failures
    rows = {row["method"]: row for row in exbp.pointing.table(records)}
    with capsys.disabled():
        print("\n" + exbp.pointing.markdown(exbp.pointing.table(records)), end="")
    assert rows["cmwp"]["all"] > rows["mwp"]["all"] > rows["centre"]["all"]
    assert rows["cmwp"]["difficult"] > rows["centre"]["difficult"]
    assert rows["mwp"]["pairs"] > 120
    # deleting what c-MWP ranks first drops the class sooner than MWP's ranking, and that sooner
    # than the centre's; inserting it raises the class sooner (curves.py)
    assert rows["cmwp"]["deletion"] < rows["mwp"]["deletion"] < rows["centre"]["deletion"]
    assert rows["cmwp"]["insertion"] > rows["mwp"]["insertion"] > rows["centre"]["insertion"]
    # every record's hit, recomputed here from its point and the boxes (the 15 px rule, inclusive)
    boxes = {str(a.image): a.boxes for a in annotations}
    for r in records:
        x, y = r["point"]
        near = any(np.hypot(max(x0 - x, 0, x - x1), max(y0 - y, 0, y - y1)) <= 15
                   for x0, y0, x1, y1 in boxes[r["image"]][r["class"]])
        assert r["hit"] == near


def test_the_cli_plays_the_synthetic_split_in_both_formats(tmp_path):
    tables = []
    for name, dataset in (("voc", ["--voc", SYNTHETIC]),
                          ("coco", ["--coco", SYNTHETIC / "annotations" / "instances_test.json",
                                    "--images", SYNTHETIC / "JPEGImages"])):
        out = tmp_path / name
        result = run("pointing-game", MODEL, *dataset, "--method", "cmwp", "--limit", 20, "--out", out)
        assert result.exit_code == 0, result.output
        tables.append([(row["method"], row["all"], row["pairs"])
                       for row in json.loads((out / "pointing.json").read_text())["table"]])
    # the same pairs (COCO's JSON leaves out what VOC marks difficult), so the same hits; the
    # difficult subset may differ, since a VOC-difficult object still counts as another class present
    assert tables[0] == tables[1] and tables[0][0][2] > 20
