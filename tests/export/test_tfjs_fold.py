"""The vectorised batch-norm folding gives the TF.js converter's own output, byte for byte, on the
graphs the converter folds (convolutions with and without a bias, depthwise ones with a channel
multiplier), and the export's conversion uses it."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.models import batch_norm_conv_net
from pipeline.env import import_tensorflow
from pipeline.export.tfjs_fold import fast_batch_norm_folding, fold_batch_norms, scaled_weights

tf = import_tensorflow()


@pytest.fixture(scope="module")
def converter_graphs(tmp_path_factory):
    """The graphs tensorflowjs's converter hands its batch-norm folding, recorded during a real
    conversion of :func:`~helpers.models.batch_norm_conv_net`'s SavedModel."""
    from tensorflowjs.converters import fold_batch_norms as module
    from tensorflowjs.converters import tf_saved_model_conversion_v2

    root = tmp_path_factory.mktemp("fold")
    tf.saved_model.save(batch_norm_conv_net(), str(root / "saved"))
    original, seen = module.fold_batch_norms, []

    def recording(graph_def):
        seen.append(graph_def.SerializeToString())
        return original(graph_def)

    module.fold_batch_norms = recording
    try:
        tf_saved_model_conversion_v2.convert_tf_saved_model(str(root / "saved"), str(root / "js"))
    finally:
        module.fold_batch_norms = original
    assert seen, "the converter no longer calls fold_batch_norms.fold_batch_norms"
    return seen


def test_the_fold_matches_the_converters_byte_for_byte(converter_graphs):
    from tensorflow.core.framework import graph_pb2
    from tensorflowjs.converters.fold_batch_norms import fold_batch_norms as converters

    for serialized in converter_graphs:
        ours, theirs = graph_pb2.GraphDef(), graph_pb2.GraphDef()
        ours.ParseFromString(serialized)  # each fold rewrites its input's conv nodes: two copies
        theirs.ParseFromString(serialized)
        assert sum(node.op.startswith("FusedBatchNorm") for node in ours.node) == 3
        folded = fold_batch_norms(ours)
        assert sum(node.op.startswith("FusedBatchNorm") for node in folded.node) == 0
        assert folded.SerializeToString() == converters(theirs).SerializeToString()


def test_depthwise_channels_are_input_times_multiplier():
    weights = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2) + 1
    scale = np.array([1.0, 10.0, 100.0, 1000.0, 1e4, 1e5])  # channel c * 2 + m
    scaled = scaled_weights(weights, scale, "DepthwiseConv2dNative")
    assert scaled.dtype == np.float32
    assert scaled[0, 0, 1, 1] == weights[0, 0, 1, 1] * scale[1 * 2 + 1]
    conv = scaled_weights(weights, scale[:2], "Conv2D")  # output channel: the last axis
    assert conv[1, 1, 2, 1] == weights[1, 1, 2, 1] * 10.0


def test_the_converters_fold_is_restored_after_the_block():
    from tensorflowjs.converters import fold_batch_norms as module

    original = module.fold_batch_norms
    with fast_batch_norm_folding():
        assert module.fold_batch_norms is fold_batch_norms
    assert module.fold_batch_norms is original
