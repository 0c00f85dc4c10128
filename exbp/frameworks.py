"""Models still in their framework, exported to ONNX in memory so that exbp explains what the
exported graph computes — the same file a server would run. The frameworks are optional: each
function imports its own only when called.

The exporters are the ones whose graphs the conformance fixtures check (tests/data/conformance):
``torch.onnx.export`` (TorchScript-based, or ``dynamo=True``) and Keras 3's ``model.export(...,
format="onnx")``, with tf2onnx for models that Keras cannot export itself.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import onnx

from .errors import ModelError

OPSET = 17


def onnx_from_torch(module, example_input, opset: int = OPSET, dynamo: bool = False) -> onnx.ModelProto:
    """``module`` (a torch.nn.Module) exported with ``example_input`` (a tensor, or a tuple of the
    forward's arguments) in eval mode, with a dynamic batch axis."""
    try:
        import torch
    except ImportError:
        raise ModelError("Explainer.from_torch needs PyTorch; install it (pip install torch)") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    was_training = module.training
    module.eval()
    try:
        if dynamo:
            return torch.onnx.export(module, args, dynamo=True, opset_version=opset).model_proto
        buffer = io.BytesIO()
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
        return onnx.load_from_string(buffer.getvalue())
    except Exception as exc:  # the exporter's own message says what it could not export
        raise ModelError(f"torch.onnx.export failed: {str(exc).splitlines()[0]}") from None
    finally:
        module.train(was_training)


def onnx_from_keras(model, opset: int = OPSET) -> onnx.ModelProto:
    """A Keras model exported by Keras itself (Keras 3, ``format="onnx"``), else by tf2onnx, with
    a dynamic batch axis."""
    try:
        import keras
        import tensorflow as tf
    except ImportError:
        raise ModelError("Explainer.from_keras needs Keras and TensorFlow; install them "
                         "(pip install keras tensorflow)") from None
    if not isinstance(model, keras.Model):
        raise ModelError(f"from_keras takes a keras.Model, got {type(model).__name__}")
    if len(model.inputs) != 1:
        raise ModelError(f"from_keras takes a model with one input; this one has {len(model.inputs)}")
    shape = tuple(model.inputs[0].shape)
    signature = (tf.TensorSpec((None,) + shape[1:], model.inputs[0].dtype, name="input"),)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        try:
            model.export(str(path), format="onnx", verbose=False, input_signature=signature,
                         opset_version=opset)
        except (ValueError, NotImplementedError, TypeError):   # a Keras that cannot export ONNX
            return _without_unused_inputs(_tf2onnx(model, signature, opset))
        except Exception as exc:
            raise ModelError(f"Keras's ONNX export failed: {str(exc).splitlines()[0]}") from None
        return _without_unused_inputs(onnx.load(str(path)))


def _tf2onnx(model, signature, opset: int) -> onnx.ModelProto:
    try:
        import tf2onnx
    except ImportError:
        raise ModelError("this Keras cannot export ONNX itself; install tf2onnx") from None
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    except Exception as exc:
        raise ModelError(f"tf2onnx failed: {str(exc).splitlines()[0]}") from None
    return proto


def _without_unused_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keras's exporter leaves a Normalization layer's mean and variance as graph inputs that no
    node reads; onnxruntime would want them fed."""
    read = {name for node in model.graph.node for name in node.input}
    unused = [value for value in model.graph.input if value.name not in read]
    for value in unused[:len(model.graph.input) - 1]:
        model.graph.input.remove(value)
    return model
