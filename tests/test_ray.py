"""exbp on Ray Data (the optional extra "ray"; skips without it): a local cluster of 2 CPUs
explains a folder of 200 photos and 3 broken files through `exbp explain --ray`; every good photo's
maps equal the single-process command's, and no row is lost."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from builders import vgg_like
from conftest import assert_close, run, save_model

ray = pytest.importorskip("ray", reason="the Ray checks need the extra 'ray' (pip install -e \".[ray]\")")
pq = pytest.importorskip("pyarrow.parquet", reason="the Ray checks need pyarrow")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_folder_on_ray_equals_the_single_process_run(cluster, tmp_path):
    _, model = vgg_like(size=16)
    model_path = save_model(model, tmp_path / "model.onnx")
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for index in range(200):
        size = (int(rng.integers(12, 40)), int(rng.integers(12, 40)))
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(photos / f"p{index:03}.png")
    for name in ("broken.png", "empty.jpg", "text.bmp"):
        (photos / name).write_bytes(b"not an image" if name != "empty.jpg" else b"")
    single = run("explain", model_path, photos, "--target", "top1", "--target", "2", "--format", "npy",
                 "--format", "json", "--out", tmp_path / "single")
    assert single.exit_code == 3, single.output
    on_ray = run("explain", model_path, photos, "--target", "top1", "--target", "2", "--ray",
                 "--batch-size", 16, "--out", tmp_path / "ray")
    assert on_ray.exit_code == 3, on_ray.output
    rows = pq.read_table(tmp_path / "ray" / "maps").to_pylist()
    assert len(rows) == 203
    by_path = {row["path"]: row for row in rows}
    assert sorted(p for p, row in by_path.items() if row["error"]) == sorted(
        str(photos / n) for n in ("broken.png", "empty.jpg", "text.bmp"))
    summary = json.loads((tmp_path / "single" / "summary.json").read_text())
    compared = 0
    for record in summary["results"]:
        row = by_path[record["image"]]
        column = list(row["target"]).index(record["target"])
        expected = np.load(next(tmp_path / "single" / f for f in record["files"] if f.endswith(".npy")))
        assert_close(np.asarray(row[record["method"]])[column], expected)
        point = row[f"{record['method']}_max_point"][column]
        assert record["max_point"] is None or (point[0], point[1]) == (record["max_point"]["x"], record["max_point"]["y"])
        compared += 1
    assert compared == len(summary["results"]) >= 200 * 2     # a target or two (top1 may be 2), two methods
    assert len({record["image"] for record in summary["results"]}) == 200
    npy = np.concatenate([np.load(f) for f in sorted((tmp_path / "ray" / "mwp").glob("*.npy"))])
    assert npy.shape[0] == 203
