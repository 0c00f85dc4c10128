"""Forward recording: what onnxruntime records with its graph optimisations on equals what the
unoptimised graph computes, for every tensor the walk can read, to float32 rounding."""

import numpy as np
import onnxruntime as ort
import pytest

import exbp
from exbp.engine.record.recording import Recorder, default_session_options
from conftest import assert_close
from builders import inception_like, mobilenet_like, resnet_like, vgg_like


@pytest.mark.parametrize("build", [vgg_like, inception_like, resnet_like, mobilenet_like])
def test_optimised_recording_equals_unoptimised(build):
    b, model = build()
    explainer = exbp.Explainer(model)
    plan = explainer.session.plan(b.input_name)          # the walk that reads the most
    values, shapes = plan.values | {explainer.session.logits}, plan.shapes
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert default_session_options().graph_optimization_level != plain.graph_optimization_level
    x = b.input(seed=3, batch=2)
    recorders = [Recorder(model, b.input_name, values, shapes, shared={}, session_options=options)
                 for options in (default_session_options(), plain)]
    (optimised, optimised_shapes), (reference, reference_shapes) = (
        recorder.run(x, values, shapes) for recorder in recorders)
    assert set(optimised) == set(reference) == values | {b.input_name}
    for name in values:
        assert_close(optimised[name], reference[name])
    assert optimised_shapes == reference_shapes
    for name, shape in optimised_shapes.items():
        assert shape[0] == 2 and name in shapes


def test_session_is_built_once_per_layer_and_reused():
    b, model = vgg_like()
    explainer = exbp.Explainer(model)
    sessions = {}
    for _ in range(2):
        for layer in (explainer.default_layer(), b.input_name):
            explainer.explain(b.input(), layer=layer)
            session = explainer.session.recorder(explainer.session.plan(layer)).session
            assert sessions.setdefault(layer, session) is session
    assert len(set(map(id, sessions.values()))) == 2


def test_bound_recording_hands_outputs_over_through_dlpack():
    """The IOBinding path the CUDA backend takes, run on the CPU: same values as a plain run,
    outputs read through DLPack, the input accepted as a DLPack-capable array."""
    class BoundCpu:
        onnxruntime_providers = ("CPUExecutionProvider",)
        binding_device = ("cpu", 0)

        @staticmethod
        def from_onnxruntime(value):
            return np.from_dlpack(value)

    b, model = resnet_like()
    explainer = exbp.Explainer(model)
    plan = explainer.session.plan(b.input_name)
    values, shapes = plan.values | {explainer.session.logits}, plan.shapes | {"relu8"}
    plain = Recorder(model, b.input_name, values, shapes, shared={})
    bound = Recorder(model, b.input_name, values, shapes, shared={}, backend=BoundCpu())
    x = b.input(seed=4, batch=2)
    want, want_shapes = plain.run(x, values, shapes)
    for given in (x, _DLPackOnly(x)):
        got, got_shapes = bound.run(given, values, shapes)
        assert set(got) == set(want) and got_shapes == want_shapes
        for name in values:
            np.testing.assert_array_equal(got[name], want[name])


class _DLPackOnly:
    """An array known only by the DLPack protocol, as a CuPy array is to onnxruntime."""

    def __init__(self, array):
        self._array, self.shape = array, array.shape

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()
