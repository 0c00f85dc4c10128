"""The layer catalogue and the default map layer (docs/method.md §5)."""

import numpy as np

import exbp
from builders import ModelBuilder, resnet_like


def test_layers_are_listed_in_order_with_logits_last():
    b, model = resnet_like()
    layers = exbp.Explainer(model).layers()
    assert layers[0] == (b.input_name, "Input", (None, 3, 16, 16), "NCHW")
    assert layers[-1].name == "classifier" and layers[-1].op_type == "Gemm"
    assert all(len(layer.shape) >= 3 and layer.layout == "NCHW" for layer in layers[:-1])
    names = [layer.name for layer in layers]
    order = [b.input_name] + [o for n in model.graph.node for o in n.output]
    assert names == sorted(names, key=order.index)


def _downsampling_net():
    """64×64 input; 8×8 is 1/8 of it. The deepest 8×8 tensor that every path crosses is the
    output of the residual block, not the tensors inside its branch."""
    b = ModelBuilder((1, 3, 64, 64), seed=1)
    x = b.maxpool(b.relu(b.conv(b.input_name, 4)))           # 32
    x = b.maxpool(b.relu(b.conv(x, 4)))                      # 16
    x = b.maxpool(b.relu(b.conv(x, 4)))                      # 8
    branch = b.relu(b.conv(x, 4))
    block = b.relu(b.add(b.conv(branch, 4), x))              # 8: the deepest cut in range
    inside = b.relu(b.conv(block, 4))                        # 8, but a branch of the next block
    x = b.relu(b.add(b.conv(inside, 4, stride=4), b.conv(block, 4, kernel=1, stride=4, pad=0)))  # 2
    return b, b.build(b.gemm(b.flatten(b.gap(x)), 3, name="classifier")), block, inside


def test_default_layer_is_the_deepest_cut_at_one_eighth_to_one_sixteenth():
    b, model, block, inside = _downsampling_net()
    explainer = exbp.Explainer(model)
    assert block in explainer.session.catalogue.cuts and inside not in explainer.session.catalogue.cuts
    assert explainer.default_layer() == block
    assert explainer.explain(b.input()).layer == block


def test_default_layer_for_a_symbolic_input_size():
    b = ModelBuilder((1, 3, 64, 64), seed=2)
    b.inputs[0].type.tensor_type.shape.dim[2].dim_param = "H"
    b.inputs[0].type.tensor_type.shape.dim[3].dim_param = "W"
    x = b.maxpool(b.relu(b.conv(b.input_name, 4)), kernel=4, stride=4)    # 1/4
    sixteenth = b.relu(b.conv(b.maxpool(b.maxpool(x)), 4))                 # 1/16
    model = b.build(b.gemm(b.flatten(b.gap(sixteenth)), 3, name="classifier"))
    explainer = exbp.Explainer(model)
    assert explainer.default_layer() == b.input_name     # sizes unknown until an input comes
    assert explainer.default_layer((1, 3, 64, 64)) == sixteenth
    assert explainer.explain(b.input(), targets=0).layer == sixteenth
    assert explainer.explain(np.ones((1, 3, 96, 96), np.float32), targets=0).layer == sixteenth


def test_tiny_inputs_fall_back_to_a_map_with_several_positions():
    b = ModelBuilder((1, 3, 8, 8), seed=3)
    features = b.relu(b.conv(b.input_name, 4))
    model = b.build(b.gemm(b.flatten(b.gap(b.maxpool(features))), 3, name="classifier"))
    layer = exbp.Explainer(model).default_layer()
    assert layer != b.input_name and np.prod(b.shape(layer)[2:]) > 1
