"""Evaluation: the pointing game (docs/method.md §6) on VOC- and COCO-format datasets."""

from . import pointing
from .datasets import Annotation, read_class_mapping, read_coco, read_voc
from .scores import PointingScores

__all__ = ["Annotation", "PointingScores", "pointing", "read_class_mapping", "read_coco", "read_voc"]
