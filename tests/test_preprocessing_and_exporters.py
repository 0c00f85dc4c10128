"""Preprocessing settings, labels, image reading and colour maps, unit by unit."""

import numpy as np
import pytest
from PIL import Image

import exbp
from exbp.exporters.colormaps import colorize, lookup_table
from exbp.labels import Labels
from exbp.preprocessing import (PRESETS, Preprocessing, load_image, metadata_settings, parse_scale,
                                parse_size, resolve_preprocessing)


def test_to_input_by_hand():
    image = Image.new("RGB", (3, 2), (10, 20, 30))
    settings = Preprocessing(size=(4, 5), mean=(1, 2, 3), std=(2, 4, 8), scale=0.5, bgr=True, layout="nchw")
    x = settings.to_input(image, 3)
    assert x.shape == (1, 3, 4, 5) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(15 - 1) / 2, (10 - 2) / 4, (5 - 3) / 8])
    nhwc = Preprocessing(layout="nhwc").to_input(image, 1)
    assert nhwc.shape == (1, 2, 3, 1)
    np.testing.assert_allclose(nhwc[0, 0, 0, 0], np.asarray(image.convert("L"))[0, 0])


def test_grayscale_model_averages_an_rgb_mean():
    x = PRESETS["imagenet"].to_input(Image.new("L", (2, 2), 51), 1)
    np.testing.assert_allclose(x.reshape(-1)[0], (0.2 - 0.449) / ((0.229 + 0.224 + 0.225) / 3), rtol=1e-5)


def test_resolution_order():
    shape = (None, 3, 32, 48)
    metadata = {"exbp.mean": "1,1,1", "exbp.bgr": "true"}
    assert resolve_preprocessing(shape, {}).mean == PRESETS["imagenet"].mean
    from_model = resolve_preprocessing(shape, metadata)
    assert from_model.mean == (1, 1, 1) and from_model.bgr and from_model.size == (32, 48)
    assert resolve_preprocessing(shape, metadata, preset="none").mean == (0.0,)
    assert resolve_preprocessing(shape, metadata, bgr=False).bgr is False
    assert resolve_preprocessing((None, 32, 48, 3), {}).layout == "nhwc"


@pytest.mark.parametrize("metadata, fragment", [
    ({"exbp.size": "224"}, "exbp.size"), ({"exbp.std": "1,0,1"}, "contains 0"),
    ({"exbp.bgr": "maybe"}, "true or false"), ({"exbp.layout": "chw"}, "nchw, nhwc")])
def test_bad_metadata(metadata, fragment):
    with pytest.raises(exbp.InputError, match=fragment):
        metadata_settings(metadata)


def test_parsers():
    assert parse_size("224x320") == (224, 320) and parse_scale("1/255") == pytest.approx(1 / 255)
    for bad in ("0x5", "axb", "5"):
        with pytest.raises(exbp.InputError):
            parse_size(bad)
    with pytest.raises(exbp.InputError):
        parse_scale("-1")


def test_image_errors(tmp_path):
    with pytest.raises(exbp.InputError, match="does not exist"):
        load_image(tmp_path / "none.png")
    with pytest.raises(exbp.InputError, match="not a file"):
        load_image(tmp_path)
    truncated = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(exbp.InputError, match="could not be read|not an image"):
        load_image(truncated)


def test_labels_match_synonyms_and_suggest():
    labels = Labels(["tabby, tabby cat", "tiger cat", "cup"])
    assert labels.index("Tabby Cat") == 0 and labels.index("tabby, tabby cat") == 0
    assert labels.short_name(0) == "tabby" and labels.name(2) == "cup"
    with pytest.raises(exbp.TargetError, match="did you mean 'tiger cat'"):
        labels.index("tigger cat")


def test_colour_maps():
    inferno = lookup_table("inferno")
    colored = colorize(np.array([[0.0, 1.0], [2.0, 4.0]]))
    np.testing.assert_array_equal(colored[0, 0], inferno[0])
    np.testing.assert_array_equal(colored[1, 1], inferno[255])
    assert inferno[:, :].sum(axis=1)[::32].tolist() == sorted(inferno[:, :].sum(axis=1)[::32].tolist())
    signed = colorize(np.array([[-2.0, 0.0, 2.0]]))
    diverging = lookup_table("diverging")
    np.testing.assert_array_equal(signed[0], [diverging[0], diverging[128], diverging[255]])
    assert signed[0, 0, 2] > signed[0, 0, 0] and signed[0, 2, 0] > signed[0, 2, 2]
    assert colorize(np.zeros((2, 2))).sum() == 4 * inferno[0].sum()


def test_a_map_with_one_spike_stays_visible():
    """Scaled to its maximum, a map at the pixels would be black but for its spike: the colour
    scale's top is the 99.5th percentile of the positive values."""
    values = np.random.default_rng(0).uniform(0.5, 1.0, (40, 40))
    values[3, 4] = 1000.0
    colored = colorize(values)
    inferno = lookup_table("inferno")
    assert (colored.reshape(-1, 3) != inferno[0]).all(axis=1).mean() > 0.99
    np.testing.assert_array_equal(colored[3, 4], inferno[255])
