"""Targets and the top-down signal at the logits (docs/method.md §2).

A target is a class index, ``"topK"`` (the K highest-scoring classes of each image), or a class
name where the model's labels are known (any synonym, ignoring case; :class:`exbp.labels.Labels`).

For logits of shape (N, classes) the signal of target t is a one-hot of mass 1. For a fully
convolutional head, logits (N, classes, *spatial), it is ``exp(logit)`` of class t normalised over
the spatial positions (a softmax over positions, as Caffe's pointing-game code and TorchRay's
pointing gradient do); for a 1×1 output that is again 1.
"""

from __future__ import annotations

import re
from numbers import Integral

import numpy as np

from ...errors import TargetError
from .maps import class_scores

TOP_K = re.compile(r"^top(\d+)$")


def _specs(targets, labels):
    """Targets as a list of ints and "topK" strings (class names looked up in ``labels``), or,
    for per-image targets, an (N, K) integer array."""
    if isinstance(targets, (str, Integral)) and not isinstance(targets, bool):
        targets = [targets]
    if isinstance(targets, (list, tuple)) and any(isinstance(t, str) for t in targets):
        return [_spec(t, labels) if isinstance(t, str) else t for t in targets]
    array = np.asarray(targets)
    if array.dtype == bool or array.dtype.kind not in "iu" or array.ndim not in (1, 2) or array.size == 0:
        raise TargetError(f"targets must be class indices (an int, a list of ints, or an (N, K) "
                          f"array), 'top1'/'top5' or class names; got {targets!r}")
    return array if array.ndim == 2 else [int(t) for t in array]


def _spec(text: str, labels):
    """A target written as text: "topK", a class index ("281", as a command line or a query
    writes it), or a class name."""
    lowered = text.strip().lower()
    if TOP_K.match(lowered):
        return lowered
    if lowered.lstrip("-").isdigit():
        return int(lowered)
    if labels is None:
        raise TargetError(f"unknown target {text!r}: a class name needs labels, and this model has "
                          "none; give a class index or 'top1'/'top5'")
    return labels.index(text)


def check_targets(targets, classes: int | None, labels=None) -> None:
    """TargetError unless ``targets`` can be explained for a model of ``classes`` classes (None:
    not known before running, so only the form is checked)."""
    specs = _specs(targets, labels)
    if classes is not None:
        _resolved(specs, np.zeros((1, classes), np.float32), per_image_rows=False)


def resolve_targets(targets, logits: np.ndarray, labels=None) -> np.ndarray:
    """Targets as an int64 array (N, K): an int; "top1", "top5", "topK"; a class name (with
    ``labels``); a list of these, each image's targets being their concatenation in order; or an
    (N, K) array-like of ints (per image)."""
    return _resolved(_specs(targets, labels), class_scores(logits))


def _resolved(specs, scores: np.ndarray, per_image_rows: bool = True) -> np.ndarray:
    images, classes = scores.shape
    if isinstance(specs, np.ndarray):
        if per_image_rows and specs.shape[0] != images:
            raise TargetError(f"per-image targets have {specs.shape[0]} rows for {images} images; "
                              "give one row per image")
        return _checked(specs, classes)
    columns = [_top_k(t, scores) if isinstance(t, str) else _checked(np.full((images, 1), t), classes)
               for t in specs]
    return np.concatenate(columns, axis=1)


def _top_k(text: str, scores: np.ndarray) -> np.ndarray:
    classes = scores.shape[1]
    match = TOP_K.match(text)
    if not match or not 1 <= int(match.group(1)) <= classes:
        raise TargetError(f"unknown target {text!r}; use a class index (0 to {classes - 1}), "
                          f"a list of them, or 'top1' ... 'top{classes}'")
    return np.argsort(-scores, axis=1, kind="stable")[:, :int(match.group(1))].astype(np.int64)


def _checked(array: np.ndarray, classes: int) -> np.ndarray:
    if array.dtype == bool or array.dtype.kind not in "iu":
        raise TargetError(f"targets must be class indices or 'topK'; got {array.tolist()!r}")
    out_of_range = array[(array < 0) | (array >= classes)]
    if out_of_range.size:
        raise TargetError(f"target class {int(out_of_range[0])} is out of range; the model has "
                          f"{classes} classes (0 to {classes - 1})")
    return np.ascontiguousarray(array, dtype=np.int64)


def top_signal(xp, logits, targets):
    """The signal at the logits, (K, N, classes, *spatial), for targets (N, K): the one-hot of each
    target, times its softmax over the positions for a spatial head. Written with ``xp`` alone,
    so the compiled graph builds it as the walk does."""
    chosen = xp.moveaxis(xp.asarray(targets), 1, 0)[..., None] == xp.arange(logits.shape[1])
    signal = chosen.astype(xp.float32)                              # (K, N, classes)
    if logits.ndim == 2:
        return signal
    flat = logits.reshape(tuple(logits.shape[:2]) + (-1,))
    weights = xp.exp(flat - flat.max(axis=2, keepdims=True))
    weights = (weights / weights.sum(axis=2, keepdims=True)).reshape(tuple(logits.shape))
    return signal.reshape(tuple(signal.shape) + (1,) * (logits.ndim - 2)) * weights
