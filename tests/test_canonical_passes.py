"""The canonicalisation passes that make ShuffleNetV2 and ConvNeXt explainable: shape arithmetic on
statically known shapes folded at load, and GELU's Erf form fused into one Gelu (docs/method.md
§3.4, §3.5). Each compares with the same network written without the construct, by hand."""

import numpy as np
import pytest

import exbp
from builders import ModelBuilder
from conftest import assert_close


def _int(b, values):
    return b.const(np.asarray(values, dtype=np.int64))


def _classifier(b, x, features, classes):
    """A Gemm on ``x`` (N, features) whose shape the builder's shape inference may not know."""
    weight = b.rng.normal(size=(classes, features)).astype(np.float32)
    return b.node("Gemm", [x, b.const(weight), b.const(np.zeros(classes, np.float32))], transB=1,
                  name="classifier")


def _conv(b, x, in_channels, out_channels):
    weight = b.rng.normal(size=(out_channels, in_channels, 3, 3)).astype(np.float32)
    return b.node("Conv", [x, b.const(weight)], pads=[1, 1, 1, 1])


def _chunk(b, x, static, channels=6):
    """(first half, second half) of ``x``'s channels: with bounds from Shape(x)[1] as PyTorch's
    chunk exports them, or (``static``) with constant bounds written by hand."""
    if static:
        half = channels // 2
        bounds = [(_int(b, [0]), _int(b, [half])), (_int(b, [half]), _int(b, [2 * half]))]
    else:
        channels = b.node("Gather", [b.node("Shape", [x]), _int(b, [1])], axis=0)
        half = b.node("Div", [b.node("Add", [channels, _int(b, [1])]), _int(b, [2])])
        bounds = [(_int(b, [0]), half), (half, b.node("Mul", [half, _int(b, [2])]))]
    return [b.node("Slice", [x, start, end, _int(b, [1])]) for start, end in bounds]


def _shuffle_like(static: bool):
    """Two ShuffleNetV2-like units: chunk, a branch on one half, concat; the second unit's input
    shape is unknown to shape inference until the first chunk's bounds are folded."""
    b = ModelBuilder((1, 3, 8, 8), seed=7)
    x = b.relu(b.conv(b.input_name, 6))
    for _ in range(2):
        kept, branch = _chunk(b, x, static)
        x = b.concat([kept, b.relu(_conv(b, branch, 3, 3))])
    return b, b.build(_classifier(b, b.flatten(b.gap(x)), 6, 5))


def _slices(explainer):
    return [node for node in explainer.session.graph.nodes if node.op_type == "Slice"]


def test_chunk_bounds_from_static_shapes_are_folded():
    b, model = _shuffle_like(static=False)
    explainer = exbp.Explainer(model)
    slices = _slices(explainer)
    assert len(slices) == 4
    assert [(n.attrs["starts"], n.attrs["ends"]) for n in slices] == [((0,), (3,)), ((3,), (6,))] * 2
    graph = explainer.session.graph
    assert all(graph.is_constant(name) for n in slices for name in n.inputs[1:])
    assert not any(n.op_type == "Shape" for n in graph.nodes)


def test_folding_needs_shape_inference_again_after_the_first_chunk():
    """Guards the test above: onnx's shape inference alone does not know the second unit's shape
    (it propagates no values through Div), so one round of folding would not do."""
    from exbp.engine.graph.model import Graph

    _, model = _shuffle_like(static=False)
    original = Graph.from_model(model, 17)
    concat = [n for n in original.nodes if n.op_type == "Concat"][0]
    assert original.shapes[concat.outputs[0]][1] is None


def test_folded_chunks_give_the_maps_of_constant_bounds():
    (b, dynamic), (_, static) = _shuffle_like(static=False), _shuffle_like(static=True)
    x = b.input(seed=3, batch=2)
    want_explainer, got_explainer = exbp.Explainer(static), exbp.Explainer(dynamic)
    for method in ("mwp", "cmwp"):
        want = want_explainer.explain(x, targets=[0, 3], layer=b.input_name, method=method).maps
        got = got_explainer.explain(x, targets=[0, 3], layer=b.input_name, method=method).maps
        assert_close(got, want)


def test_shape_with_start_and_end_is_folded():
    b = ModelBuilder((1, 3, 6, 6), seed=2, opset=15)
    x = b.conv(b.input_name, 4)
    channels = b.node("Shape", [x], start=1, end=2)
    out = b.node("Slice", [x, _int(b, [1]), channels, _int(b, [1])])
    slices = _slices(exbp.Explainer(b.build(_classifier(b, b.flatten(b.gap(out)), 3, 3))))
    assert slices[0].attrs["starts"] == (1,) and slices[0].attrs["ends"] == (4,)


def test_bounds_from_the_dynamic_batch_dim_stay_and_are_refused():
    b = ModelBuilder((1, 3, 6, 6), seed=2)
    x = b.conv(b.input_name, 4)
    batch = b.node("Gather", [b.node("Shape", [x]), _int(b, [0])], axis=0)
    out = b.node("Slice", [x, _int(b, [0]), batch, _int(b, [1])])
    explainer = exbp.Explainer(b.build(_classifier(b, b.flatten(b.gap(out)), 4, 3)))
    assert any(n.op_type == "Shape" for n in explainer.session.graph.nodes)
    with pytest.raises(exbp.errors.UnsupportedOpError, match="computed at run time") as raised:
        explainer.explain(b.input(batch=1), targets=0, layer=b.input_name, method="mwp")
    assert "\n" not in str(raised.value)


# ---- GELU written with Erf -----------------------------------------------------------------

def _gelu_erf(b, x, divisor=np.sqrt(2.0), half_first=False):
    if half_first:
        erf = b.node("Erf", [b.node("Mul", [b.const(np.float32(1 / divisor)), x])])
        return b.node("Mul", [b.node("Add", [b.const(np.float32(1.0)), erf]),
                              b.node("Mul", [x, b.const(np.float32(0.5))])])
    erf = b.node("Erf", [b.node("Div", [x, b.const(np.float32(divisor))])])
    return b.node("Mul", [b.node("Mul", [x, b.node("Add", [erf, b.const(np.float32(1.0))])]),
                          b.const(np.float32(0.5))])


def _gelu_net(form, **options):
    """conv → GELU → conv → GELU → classifier, GELU as the Gelu op (opset 20) or its Erf form."""
    b = ModelBuilder((1, 3, 8, 8), seed=9, opset=20 if form == "op" else 17)

    def gelu(x):
        return b.node("Gelu", [x]) if form == "op" else _gelu_erf(b, x, **options)
    x = gelu(b.conv(b.input_name, 4))
    x = gelu(b.conv(x, 4, stride=2))
    return b, b.build(b.gemm(b.flatten(x), 5, name="classifier"))


@pytest.mark.parametrize("half_first", [False, True], ids=["torch_form", "half_first"])
def test_erf_gelu_is_one_gelu_with_the_maps_of_the_gelu_op(half_first):
    (b, erf_form), (_, op_form) = _gelu_net("erf", half_first=half_first), _gelu_net("op")
    explainer = exbp.Explainer(erf_form)
    ops = [n.op_type for n in explainer.session.graph.nodes]
    assert ops.count("Gelu") == 2 and "Erf" not in ops
    x = b.input(seed=4, batch=2)
    for layer in (None, b.input_name):     # the default layer: the second GELU's output in both
        for method in ("mwp", "cmwp"):
            want = exbp.Explainer(op_form).explain(x, targets=[1, 2], layer=layer, method=method).maps
            got = explainer.explain(x, targets=[1, 2], layer=layer, method=method).maps
            assert_close(got, want)


def test_a_removed_gelu_product_names_the_gelu_output():
    b, model = _gelu_net("erf")
    product = next(n.output[0] for n in model.graph.node if n.op_type == "Mul"
                   and any(i.startswith("add") for i in n.input))
    explainer = exbp.Explainer(model)
    gelu = next(n for n in explainer.session.graph.nodes if n.op_type == "Gelu")
    assert explainer.resolve_layer(product) == gelu.outputs[0]


def test_an_erf_that_is_not_gelu_is_refused():
    b, model = _gelu_net("erf", divisor=2.0)
    explainer = exbp.Explainer(model)
    assert "Gelu" not in [n.op_type for n in explainer.session.graph.nodes]
    with pytest.raises(exbp.errors.UnsupportedOpError) as raised:
        explainer.explain(b.input(), targets=0, layer=b.input_name, method="mwp")
    assert "Erf" in str(raised.value) or "Mul" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_gelu_whose_erf_is_read_elsewhere_is_not_fused():
    b = ModelBuilder((1, 3, 6, 6), seed=1)
    x = b.conv(b.input_name, 4)
    gelu = _gelu_erf(b, x)
    erf = next(n.output[0] for n in b.nodes if n.op_type == "Erf")
    out = b.add(gelu, erf)
    explainer = exbp.Explainer(b.build(b.gemm(b.flatten(out), 3), softmax=False))
    assert "Gelu" not in [n.op_type for n in explainer.session.graph.nodes]
