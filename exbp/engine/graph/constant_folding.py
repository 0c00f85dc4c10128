"""Evaluating what does not depend on the input, once, when a model is loaded.

Constant nodes, and every node whose inputs are all constants, become constants. Exporters
compute pads, shapes or transposed weights that way (PyTorch's static "same" padding, TensorFlow's
weight transposes); onnxruntime folds them too. A node the reference evaluator cannot evaluate
stays in the graph and matters only if the walk needs it.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Multinomial", "Bernoulli"}


def fold_constants(nodes: list, constants: dict, opset: int) -> list:
    """The nodes that stay; ``constants`` receives the values of the others."""
    kept = []
    for node in nodes:
        present = [name for name in node.inputs if name]
        foldable = (node.domain == "" and node.op_type not in NOT_FOLDED
                    and (node.op_type == "Constant" or present)
                    and all(name in constants for name in present))
        values = _evaluate(node.proto, constants, opset) if foldable else None
        if values is None:
            kept.append(node)
        else:
            constants.update(values)
    return kept


def _evaluate(proto: onnx.NodeProto, constants: dict, opset: int) -> Optional[dict]:
    present = list(dict.fromkeys(name for name in proto.input if name))
    outputs = [name for name in proto.output if name]
    graph = onnx.helper.make_graph(
        [proto], "fold", [], [onnx.ValueInfoProto(name=name) for name in outputs],
        [onnx.numpy_helper.from_array(np.asarray(constants[name]), name) for name in present])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    try:
        values = ReferenceEvaluator(model).run(None, {})
    except Exception:  # an op the evaluator lacks, a string constant, invalid attributes
        return None
    return {name: np.asarray(value) for name, value in zip(outputs, values)}
