"""Train the small multi-label CNN of tests/data/synthetic/model.onnx on the synthetic shapes
(exbp/evaluation/synthetic.py) and export it to ONNX with exbp's metadata.

    PYTHONPATH=. python tools/synthetic/train.py            # a few minutes on two CPU cores

Needs torch (and onnx); nothing is downloaded. Deterministic: the data come from seeds (train 1,
validation 2; the committed test split is seed 3), and torch is seeded and kept to fixed threads.

The network: six 3×3 conv–BN–ReLU blocks, max-pools of 2 after the first three (96 → 12 px) and of
3 after the fifth (12 → 4 px), global average pooling and one linear layer to the eight classes,
trained with a sigmoid per class (binary cross-entropy). relu5, 12 × 12, an eighth of the 96 px
input, is exbp's default layer (docs/method.md §5: the 4 × 4 block above it is too coarse), and
like ResNet's layer3 or GoogLeNet's inception4e it has a block above it, so MWP's map there is not
yet the class's own. Images are read the way exbp reads them: the 160 px image (as a
JPEG, quality 90) resized to 96 × 96 bilinearly by Pillow, then (p / 255 − 0.5) / 0.25.
"""

from __future__ import annotations

import argparse
import io
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnx
import torch
from PIL import Image
from torch import nn

from exbp.evaluation import synthetic

INPUT = 96
MEAN, STD = 0.5, 0.25
WIDTHS = (12, 24, 48, 64, 64, 128)
POOLS = {1: 2, 2: 2, 3: 2, 5: 3}         # after these blocks: 96 → 48 → 24 → 12 → 4
SEEDS = {"train": 1, "validation": 2, "test": 3}
OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "synthetic" / "model.onnx"


def as_exbp_reads_it(pixels: np.ndarray) -> np.ndarray:
    """The rendered image through a JPEG file and exbp's resize: (INPUT, INPUT, 3) uint8."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=synthetic.JPEG_QUALITY)
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return np.asarray(image.resize((INPUT, INPUT), Image.BILINEAR))


def split(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.empty((count, INPUT, INPUT, 3), np.uint8)
    labels = np.zeros((count, len(synthetic.CLASSES)), np.float32)
    for index in range(count):
        drawn = synthetic.scene(seed, index)
        images[index] = as_exbp_reads_it(synthetic.render(drawn))
        for found in synthetic.instances(drawn):
            labels[index, synthetic.CLASSES.index(found.name)] = 1
    return images, labels


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - MEAN) / STD


def network() -> nn.Sequential:
    """Named blocks (their names become the ONNX tensors' names, as `exbp layers` lists them)."""
    layers, before = [], 3
    for number, width in enumerate(WIDTHS, 1):
        layers += [(f"conv{number}", nn.Conv2d(before, width, 3, padding=1, bias=False)),
                   (f"bn{number}", nn.BatchNorm2d(width)), (f"relu{number}", nn.ReLU())]
        if number in POOLS:
            layers.append((f"pool{number}", nn.MaxPool2d(POOLS[number])))
        before = width
    layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
               ("classifier", nn.Linear(before, len(synthetic.CLASSES)))]
    return nn.Sequential(OrderedDict(layers))


@torch.no_grad()
def scores(net: nn.Module, images: np.ndarray) -> np.ndarray:
    net.eval()
    return torch.cat([net(to_tensor(images[i:i + 256])) for i in range(0, len(images), 256)]).numpy()


def report(name: str, logits: np.ndarray, labels: np.ndarray) -> float:
    predicted = logits > 0
    per_class = (predicted == (labels > 0.5)).mean(axis=0)
    exact = (predicted == (labels > 0.5)).all(axis=1).mean()
    cells = " ".join(f"{c} {100 * a:.1f}" for c, a in zip(synthetic.CLASSES, per_class))
    print(f"{name}: per-class accuracy {100 * per_class.mean():.1f}% ({cells}); "
          f"every class right {100 * exact:.1f}% of {len(labels)} images")
    return float(per_class.mean())


def export(net: nn.Module, path: Path) -> None:
    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(net, torch.zeros(1, 3, INPUT, INPUT), str(path), opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
    model = onnx.load(str(path))
    for key, value in {"exbp.labels": "\n".join(synthetic.CLASSES), "exbp.size": f"{INPUT}x{INPUT}",
                       "exbp.mean": ",".join([str(MEAN)] * 3), "exbp.std": ",".join([str(STD)] * 3),
                       "exbp.scale": "1/255"}.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = "exbp synthetic shapes: tools/synthetic/train.py"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=4000, help="training images (default 4000)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=6e-3, help="the one-cycle schedule's peak")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train_x, train_y = split(SEEDS["train"], args.train)
    valid_x, valid_y = split(SEEDS["validation"], 500)
    test_x, test_y = split(SEEDS["test"], 80)
    print(f"data: {args.train} / 500 / 80 images in {time.perf_counter() - started:.0f} s")
    net = network()
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    batch = 64
    steps = args.epochs * (args.train // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=steps)
    order = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        net.train()
        permutation = torch.randperm(args.train, generator=order).numpy()
        total = 0.0
        for start in range(0, args.train - batch + 1, batch):
            chosen = permutation[start:start + batch]
            x, y = to_tensor(train_x[chosen]), torch.from_numpy(train_y[chosen])
            flip = torch.rand(len(chosen), generator=order) < 0.5       # every class is mirror-symmetric
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = nn.functional.binary_cross_entropy_with_logits(net(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(chosen)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / (args.train // batch * batch):.4f}, "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        report("  validation", scores(net, valid_x), valid_y)
    report("train", scores(net, train_x[:1000]), train_y[:1000])
    report("validation", scores(net, valid_x), valid_y)
    report("test split (committed)", scores(net, test_x), test_y)
    export(net, args.out)
    try:
        import onnxruntime
        session = onnxruntime.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": to_tensor(test_x).numpy()})[0]
        print(f"onnx: {args.out} ({args.out.stat().st_size} bytes), largest difference from torch "
              f"{np.abs(got - scores(net, test_x)).max():.2e}")
    except ImportError:
        print(f"onnx: {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
