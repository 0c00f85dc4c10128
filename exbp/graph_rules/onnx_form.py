"""ONNX nodes that compute parts of a rule: the derived quantities the recording session computes
beside the activations (and a compiled graph's max-pool winners), and the names of the weight
parts."""

from __future__ import annotations

from typing import Mapping

import onnx
from onnx import helper

POSITIVE, NEGATIVE, WHOLE = "positive", "negative", "whole"   # W⁺, W⁻, W (the gradient's)


def listed(attrs: Mapping) -> dict:
    """A node's attributes as onnx.helper.make_node takes them (lists, not tuples), without the
    unset ones."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items() if v is not None}


def weight_part_nodes(weight: str, part: str, output: str) -> list[onnx.NodeProto]:
    """Nodes computing W⁺ = Relu(W), W⁻ = −Relu(−W) or W itself from the initializer ``weight``;
    onnxruntime folds them into constants when it builds the session."""
    if part == WHOLE:
        return [helper.make_node("Identity", [weight], [output], name=output)]
    if part == POSITIVE:
        return [helper.make_node("Relu", [weight], [output], name=output)]
    return [helper.make_node("Neg", [weight], [output + "_negated"], name=output + "_negated"),
            helper.make_node("Relu", [output + "_negated"], [output + "_relu"], name=output + "_relu"),
            helper.make_node("Neg", [output + "_relu"], [output], name=output)]
