"""Every rule and attribute combination against the dense brute-force oracle (docs/method.md §7).

Each case is a small model around one op; the engine's signal at the input (for a random positive
signal at the output, two rows, two images where the model allows) must equal the oracle's to
rtol 1e-5, on inputs of mixed sign (the z⁺ rule's negative branch) and on non-negative inputs,
where the signal must also be conserved: Σ P_in = Σ P_out − the mass the oracle counts as lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from onnx import helper

import exbp
from builders import ModelBuilder
from conftest import assert_close
from oracle import Oracle, forward


@dataclass
class Case:
    build: Callable[[ModelBuilder], str]
    input_shape: tuple = (2, 3, 6, 6)
    opset: int = 17
    dynamic_batch: bool = True


def _flat(b):
    return b.flatten(b.input_name)


def _gemm(b, x, out, weight_shape, **attrs):
    weight = b.const(b.rng.normal(size=weight_shape).astype(np.float32))
    bias = b.const(b.rng.normal(size=out).astype(np.float32))
    return b.node("Gemm", [x, weight, bias], **attrs)


def _kept_quantization_pair(b):
    scale, zero_point = b.const(np.float32(0.05)), b.const(np.uint8(100))
    codes = b.node("QuantizeLinear", [b.input_name, scale, zero_point])
    return b.add(b.node("DequantizeLinear", [codes, scale, zero_point]), b.input_name)


def _se_gate(b):
    x = b.relu(b.conv(b.input_name, 4))
    gate = b.node("Sigmoid", [b.conv(b.gap(x), 4, kernel=1, pad=0)])
    return b.node("Mul", [x, gate])


def _hard_sigmoid_gate(b):
    """Keras's squeeze-and-excitation with a hard sigmoid, as tf2onnx writes it: a ReLU6 activation
    times relu6(z + 3) / 6 — both operands come out of a Clip, and only the second is the gate."""
    x = b.clip(b.conv(b.input_name, 4))
    z = b.node("Add", [b.conv(b.gap(x), 4, kernel=1, pad=0), b.const(np.float32(3))])
    gate = b.node("Mul", [b.clip(z), b.const(np.float32(1 / 6))])
    return b.node("Mul", [x, gate])


def _const(b, values, dtype=np.int64):
    return b.const(np.asarray(values, dtype=dtype))


def _floats(b, *shape, low=-1.0, high=1.0):
    return b.const(b.rng.uniform(low, high, shape).astype(np.float32))


def _channels_last(b, x):
    return b.node("Transpose", [x], perm=[0, 2, 3, 1])


def _layer_norm(b, x, channels, bias=True, **attrs):
    """LayerNormalization with a scale of mixed signs (a channel with a negative γ flips)."""
    inputs = [x, b.const(np.array([1.5, -0.7, 0.4, 1.1][:channels], np.float32))]
    if bias:
        inputs.append(_floats(b, channels))
    return b.node("LayerNormalization", inputs, epsilon=1e-5, **attrs)


def _gelu_torch_form(b, x):
    """torch.nn.functional.gelu as PyTorch exports it before opset 20."""
    erf = b.node("Erf", [b.node("Div", [x, b.const(np.float32(np.sqrt(2.0)))])])
    return b.node("Mul", [b.node("Mul", [x, b.node("Add", [erf, b.const(np.float32(1.0))])]),
                          b.const(np.float32(0.5))])


def _gelu_half_first(b, x):
    """The same GELU with 1/√2 and 0.5 as Mul factors, the half applied to x first."""
    erf = b.node("Erf", [b.node("Mul", [b.const(np.float32(1 / np.sqrt(2.0))), x])])
    return b.node("Mul", [b.node("Add", [b.const(np.float32(1.0)), erf]),
                          b.node("Mul", [x, b.const(np.float32(0.5))])])


def _linear_last_axis(b, x, inputs, outputs):
    return b.node("Add", [b.node("MatMul", [x, _floats(b, inputs, outputs)]), _floats(b, outputs)])


def _convnext_block(b):
    """ConvNeXt's block: depthwise 7×7 (3×3 here), channels last, LayerNorm, Linear, GELU (Erf),
    Linear, channels first, layer scale, residual."""
    x = b.conv(b.input_name, 3, group=3)
    h = _layer_norm(b, _channels_last(b, x), 3)
    h = _linear_last_axis(b, _gelu_torch_form(b, _linear_last_axis(b, h, 3, 8)), 8, 3)
    h = b.node("Mul", [_floats(b, 3, 1, 1, low=0.1, high=1.0), b.node("Transpose", [h], perm=[0, 3, 1, 2])])
    return b.add(h, x)


def _chunk(b):
    """PyTorch's ``x.chunk(2, dim=1)``: Slice bounds from the (static) channel dim of a tensor
    with a dynamic batch, swapped and concatenated."""
    x = b.conv(b.input_name, 4)
    channels = b.node("Gather", [b.node("Shape", [x]), _const(b, [1])], axis=0)
    half = b.node("Div", [b.node("Add", [channels, _const(b, [1])]), _const(b, [2])])
    first = b.node("Slice", [x, _const(b, [0]), half, _const(b, [1])])
    second = b.node("Slice", [x, half, b.node("Mul", [half, _const(b, [2])]), _const(b, [1])])
    return b.concat([b.relu(second), first])


CASES = {
    # Conv: attributes one at a time, then together
    "conv": Case(lambda b: b.conv(b.input_name, 4)),
    "conv_no_bias": Case(lambda b: b.conv(b.input_name, 4, bias=False)),
    "conv_stride2_asymmetric_pads": Case(lambda b: b.conv(b.input_name, 4, stride=2, pad=[1, 0, 0, 2])),
    "conv_dilation2": Case(lambda b: b.conv(b.input_name, 4, dilation=2)),
    "conv_groups": Case(lambda b: b.conv(b.relu(b.conv(b.input_name, 4)), 6, group=2)),
    "conv_depthwise": Case(lambda b: b.conv(b.input_name, 3, group=3)),
    "conv_depthwise_multiplier": Case(lambda b: b.conv(b.input_name, 6, group=3, stride=2)),
    "conv_same_upper": Case(lambda b: b.conv(b.input_name, 4, kernel=2, stride=2, auto_pad="SAME_UPPER")),
    "conv_same_lower": Case(lambda b: b.conv(b.input_name, 4, kernel=4, stride=3, auto_pad="SAME_LOWER")),
    "conv_valid": Case(lambda b: b.conv(b.input_name, 4, auto_pad="VALID")),
    "conv_rectangular": Case(lambda b: b.conv(b.input_name, 4, kernel=(1, 3), stride=(2, 1), pad=[0, 1, 0, 1])),
    "conv_all_attributes": Case(lambda b: b.conv(b.input_name, 6, kernel=3, stride=2, group=3,
                                                 dilation=2, pad=[2, 1, 1, 2])),
    "conv_1d": Case(lambda b: b.conv(b.input_name, 4, kernel=3, stride=2), input_shape=(2, 3, 9)),
    "conv_3d": Case(lambda b: b.conv(b.input_name, 2, kernel=3), input_shape=(1, 2, 4, 4, 4)),
    # ConvTranspose: the transposed convolution as a linear op
    "conv_transpose": Case(lambda b: b.node("ConvTranspose", [
        b.input_name, b.const(b.rng.normal(size=(3, 4, 3, 3)).astype(np.float32)),
        b.const(b.rng.normal(size=4).astype(np.float32))], strides=[2, 2], pads=[1, 0, 1, 2],
        output_padding=[1, 0])),
    "conv_transpose_groups_dilation": Case(lambda b: b.node("ConvTranspose", [
        b.relu(b.input_name), b.const(b.rng.normal(size=(3, 2, 2, 2)).astype(np.float32))],
        group=3, dilations=[2, 2])),
    # Gemm and MatMul
    "gemm_transB": Case(lambda b: b.gemm(_flat(b), 5)),
    "gemm_plain": Case(lambda b: _gemm(b, _flat(b), 5, (108, 5))),
    "gemm_alpha": Case(lambda b: _gemm(b, _flat(b), 5, (5, 108), transB=1, alpha=0.5, beta=2.0)),
    "gemm_negative_alpha": Case(lambda b: _gemm(b, _flat(b), 5, (5, 108), transB=1, alpha=-1.5)),
    "gemm_transA": Case(lambda b: b.node("Transpose", [_gemm(
        b, b.node("Reshape", [b.input_name, _const(b, [54, 2])]), 5, (54, 5), transA=1)], perm=[1, 0]),
        input_shape=(1, 3, 6, 6), dynamic_batch=False),
    "gemm_activation_second": Case(lambda b: b.node("Transpose", [b.node(
        "Gemm", [b.const(b.rng.normal(size=(4, 54)).astype(np.float32)),
                 b.node("Reshape", [b.input_name, _const(b, [54, 2])])])], perm=[1, 0]),
        input_shape=(1, 3, 6, 6), dynamic_batch=False),
    "matmul_with_bias_add": Case(lambda b: b.node("Add", [b.node("MatMul", [
        _flat(b), b.const(b.rng.normal(size=(108, 5)).astype(np.float32))]),
        b.const(b.rng.normal(size=5).astype(np.float32))])),
    "matmul_3d": Case(lambda b: b.node("MatMul", [b.node("Reshape", [b.input_name, _const(b, [0, 18, 6])]),
                                                  b.const(b.rng.normal(size=(6, 4)).astype(np.float32))])),
    "matmul_4d_channels_last": Case(lambda b: b.node("MatMul", [_channels_last(b, b.input_name),
                                                                 _floats(b, 3, 5)])),
    "matmul_activation_second": Case(lambda b: b.node("MatMul", [
        b.const(b.rng.normal(size=(4, 18)).astype(np.float32)),
        b.node("Reshape", [b.input_name, _const(b, [0, 18, 6])])])),
    # pooling
    "maxpool": Case(lambda b: b.maxpool(b.input_name)),
    "maxpool_overlapping": Case(lambda b: b.maxpool(b.input_name, kernel=3, stride=1)),
    "maxpool_ceil_mode": Case(lambda b: b.maxpool(b.input_name, kernel=3, stride=2, ceil_mode=1),
                              input_shape=(2, 3, 8, 8)),
    "maxpool_pads_dilations": Case(lambda b: b.maxpool(b.input_name, kernel=2, stride=1, pads=[1, 0, 0, 1],
                                                       dilations=[2, 2])),
    "maxpool_same_upper": Case(lambda b: b.maxpool(b.input_name, kernel=3, stride=2, auto_pad="SAME_UPPER")),
    "maxpool_1d": Case(lambda b: b.maxpool(b.input_name, kernel=3, stride=2), input_shape=(2, 3, 9)),
    "global_max_pool": Case(lambda b: b.node("GlobalMaxPool", [b.input_name])),
    "avgpool": Case(lambda b: b.avgpool(b.input_name)),
    "avgpool_pads_exclude": Case(lambda b: b.avgpool(b.input_name, kernel=3, stride=2, pads=[1, 1, 1, 1])),
    "avgpool_pads_include": Case(lambda b: b.avgpool(b.input_name, kernel=3, stride=2, pads=[1, 0, 2, 1],
                                                     count_include_pad=1)),
    "avgpool_ceil_mode": Case(lambda b: b.avgpool(b.input_name, kernel=3, stride=2, ceil_mode=1),
                              input_shape=(2, 3, 8, 8)),
    "avgpool_ceil_mode_pads": Case(lambda b: b.avgpool(b.input_name, kernel=2, stride=2, ceil_mode=1,
                                                       pads=[1, 1, 1, 1]), input_shape=(2, 3, 7, 7)),
    "global_average_pool": Case(lambda b: b.gap(b.input_name)),
    "reduce_mean_attribute": Case(lambda b: b.node("ReduceMean", [b.input_name], axes=[2, 3], keepdims=0),
                                  opset=13),
    "reduce_mean_axes_input": Case(lambda b: b.node("ReduceMean", [b.input_name, _const(b, [-1, -2])]),
                                   opset=18),
    "reduce_sum_channels": Case(lambda b: b.node("ReduceSum", [b.input_name, _const(b, [1])], keepdims=1)),
    # element-wise
    **{f"pass_through_{op.lower()}": Case(lambda b, op=op: b.node(op, [b.input_name]))
       for op in ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Identity",
                  "Dropout")},
    **{f"pass_through_{op.lower()}": Case(lambda b, op=op: b.node(op, [b.input_name]), opset=opset)
       for op, opset in (("Elu", 17), ("Selu", 17), ("Celu", 17), ("Softplus", 17), ("Softsign", 17),
                         ("ThresholdedRelu", 17), ("Mish", 18), ("Gelu", 20))},
    "pass_through_prelu": Case(lambda b: b.node("PRelu", [
        b.input_name, b.const(np.array([0.2, -0.5, 1.5], np.float32).reshape(3, 1, 1))])),
    "clip": Case(lambda b: b.clip(b.input_name)),
    # normalisation by the sample's statistics and GELU's Erf form (docs/method.md §3.5)
    "layer_normalization_channels_last": Case(lambda b: _linear_last_axis(
        b, _layer_norm(b, _channels_last(b, b.input_name), 3), 3, 4)),
    "layer_normalization_over_chw_no_bias": Case(lambda b: b.conv(b.node(
        "LayerNormalization", [b.input_name, _floats(b, 3, 6, 6)], axis=1), 2)),
    "gelu_erf_form": Case(lambda b: b.conv(_gelu_torch_form(b, b.conv(b.input_name, 4)), 2)),
    "gelu_erf_form_half_first": Case(lambda b: _gelu_half_first(b, b.input_name)),
    "gelu_op_before_conv": Case(lambda b: b.conv(b.node("Gelu", [b.conv(b.input_name, 4)]), 2), opset=20),
    "convnext_block": Case(_convnext_block),
    "lrn": Case(lambda b: b.node("LRN", [b.input_name], size=3)),
    "cast": Case(lambda b: b.node("Cast", [b.input_name], to=1)),
    "batchnorm_unfoldable": Case(lambda b: b.batchnorm(b.input_name, negative_scale=True)),
    "batchnorm_folded_negative_scale": Case(lambda b: b.batchnorm(b.conv(b.input_name, 4),
                                                                  negative_scale=True)),
    "batchnorm_after_shared_conv": Case(lambda b: (lambda c: b.add(b.batchnorm(c), c))(
        b.conv(b.input_name, 3))),
    "mul_per_channel_constant_folded": Case(lambda b: b.node("Mul", [
        b.conv(b.input_name, 4), b.const(np.array([1.5, -2.0, 0.5, -1.0], np.float32).reshape(4, 1, 1))])),
    "sub_and_div_by_constants": Case(lambda b: b.node("Div", [b.node("Sub", [
        b.input_name, b.const(np.float32(0.3))]), b.const(np.float32(2.0))])),
    # data movement
    "flatten": Case(lambda b: b.flatten(b.input_name)),
    "reshape": Case(lambda b: b.node("Reshape", [b.input_name, _const(b, [0, 9, -1])])),
    "squeeze_unsqueeze": Case(lambda b: b.node("Squeeze", [b.node("Unsqueeze", [b.input_name, _const(b, [2])]),
                                                           _const(b, [2])])),
    "transpose": Case(lambda b: b.node("Transpose", [b.input_name], perm=[0, 2, 3, 1])),
    "pad_constant": Case(lambda b: b.node("Pad", [b.input_name, _const(b, [0, 0, 1, 2, 0, 0, 2, 1]),
                                                  b.const(np.float32(0.5))])),
    # a negative pad value makes the padded ReLU output signed: the normaliser needs its x⁻ term
    "conv_after_negative_pad_value": Case(lambda b: b.conv(b.node("Pad", [
        b.relu(b.input_name), _const(b, [0, 0, 1, 1, 0, 0, 1, 1]), b.const(np.float32(-0.5))]), 3, pad=0)),
    "pad_reflect": Case(lambda b: b.node("Pad", [b.input_name, _const(b, [0, 0, 2, 1, 0, 0, 1, 2])],
                                         mode="reflect")),
    "pad_edge": Case(lambda b: b.node("Pad", [b.input_name, _const(b, [0, 0, 1, 0, 0, 0, 0, 3])],
                                      mode="edge")),
    "pad_negative_crop": Case(lambda b: b.node("Pad", [b.input_name, _const(b, [0, 0, -1, 2, 0, 0, 1, -2])])),
    "pad_axes_input": Case(lambda b: b.node("Pad", [b.input_name, _const(b, [1, 2, 2, 1]), "",
                                                    _const(b, [2, 3])]), opset=18),
    "pad_attribute_opset9": Case(lambda b: b.node("Pad", [b.input_name], pads=[0, 0, 1, 1, 0, 0, 1, 1]),
                                 opset=9),
    "slice": Case(lambda b: b.node("Slice", [b.input_name, _const(b, [1, 0]), _const(b, [5, 100]),
                                             _const(b, [2, 3])])),
    "slice_negative_steps": Case(lambda b: b.node("Slice", [b.input_name, _const(b, [-1, 4]), _const(b, [-100, 0]),
                                                            _const(b, [2, 3]), _const(b, [-1, -2])])),
    "slice_attributes_opset9": Case(lambda b: b.node("Slice", [b.input_name], starts=[1], ends=[3], axes=[1]),
                                    opset=9),
    "slice_bounds_from_static_shape": Case(_chunk),
    "split_and_concat": Case(lambda b: b.concat(list(reversed(b.node(
        "Split", [b.input_name, _const(b, [2, 4])], outputs=2, axis=2))), axis=2)),
    "split_one_branch": Case(lambda b: b.node("Split", [b.input_name], outputs=3, axis=1)[1]),
    "gather": Case(lambda b: b.node("Gather", [b.input_name, _const(b, [[0, 2], [2, -1]])], axis=3)),
    "concat": Case(lambda b: b.concat([b.relu(b.conv(b.input_name, 2)), b.input_name,
                                       b.maxpool(b.input_name, kernel=3, stride=1, pads=[1, 1, 1, 1])])),
    # merging
    "add_residual_mixed_signs": Case(lambda b: b.add(b.conv(b.input_name, 3), b.input_name)),
    "add_broadcast": Case(lambda b: b.add(b.input_name, b.gap(b.input_name))),
    "add_bias_constant": Case(lambda b: b.add(b.input_name, b.const(np.float32(1.0)))),
    "sum_three": Case(lambda b: b.node("Sum", [b.input_name, b.relu(b.conv(b.input_name, 3)),
                                               b.conv(b.input_name, 3)])),
    "mul_squeeze_excitation_gate": Case(_se_gate),
    "mul_hard_sigmoid_gate": Case(_hard_sigmoid_gate),
    "max_min_relu6": Case(lambda b: b.node("Min", [b.node("Max", [b.input_name, b.const(np.float32(0))]),
                                                   b.const(np.float32(6))])),
    "max_min_bounds": Case(lambda b: b.node("Max", [b.const(np.float32(-0.5)), b.node(
        "Min", [b.input_name, b.const(np.full((1, 3, 1, 1), 0.7, np.float32))])])),
    "mul_silu": Case(lambda b: b.node("Mul", [b.input_name, b.node("Sigmoid", [b.input_name])])),
    "mul_constant": Case(lambda b: b.node("Mul", [b.const(np.float32(-2.0)), b.input_name])),
    # quantisation: a pair canonicalisation keeps (its input also read in float) passes through
    "quantize_dequantize_kept": Case(_kept_quantization_pair, opset=19),
}


def case_model(case: Case):
    """(the builder, the model) of a rule case."""
    b = ModelBuilder(case.input_shape, seed=3, opset=case.opset, dynamic_batch=case.dynamic_batch)
    return b, b.build(case.build(b), softmax=False)


def random_top(model, x, rows=2, seed=4):
    """A random positive signal at the model's output: ``rows`` rows for input ``x``."""
    logits = forward(model, x)[model.graph.output[0].name]
    return np.random.default_rng(seed).uniform(0.1, 1.0, (rows,) + logits.shape).astype(np.float32)


@pytest.mark.parametrize("device", ["cpu", "numpy"])
@pytest.mark.parametrize("positive", [False, True], ids=["mixed_signs", "non_negative"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_matches_dense_oracle(name, positive, device):
    """``cpu``: onnxruntime's kernels and recorded normalisers and winners; ``numpy``: exbp's
    own kernels (the CuPy backend's), with Z and the winners computed in the rules."""
    case = CASES[name]
    b, model = case_model(case)
    x = b.input(seed=11, positive=positive)
    top = random_top(model, x)
    got = exbp.Explainer(model, device=device).propagate(x, top, layer=b.input_name)
    oracle = Oracle(model)
    want = oracle.signal(x, top, b.input_name)
    assert got.shape == want.shape
    assert_close(got, want)
    if positive:
        lost = sum(oracle.lost.values()) if oracle.lost else 0.0
        np.testing.assert_allclose(got.reshape(2, -1).sum(axis=1),
                                   top.reshape(2, -1).sum(axis=1) - lost, rtol=1e-5)
        assert got.min() >= 0


def test_every_registered_op_has_an_oracle_case():
    """A rule without a case here is a rule nothing checks: registering an op means adding one."""
    covered = {node.op_type for case in CASES.values() for node in case_model(case)[1].graph.node}
    assert set(exbp.supported_ops()) <= covered, sorted(set(exbp.supported_ops()) - covered)
