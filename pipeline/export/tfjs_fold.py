"""The TF.js converter's batch-norm folding with the convolution weights scaled in one numpy operation.

``tensorflowjs.converters.fold_batch_norms.fold_batch_norms`` (tensorflowjs 4.22, Apache License
2.0, Copyright 2018 Google LLC) folds every batch norm that follows a convolution into the
convolution's weights, scaling them one element at a time in a Python ``np.nditer`` loop: ~3 us
an element, 7-8 s of MobileNetV2's TF.js export on the project's 2-core box (2.2 M weights) and
over a minute for ResNet50's 23 M (docs/benchmarks.md#the-tfjs-converters-batch-norm-folding).
:func:`fold_batch_norms` is the same rewrite with the scaling as one broadcast multiplication in
float64, rounded to the weights' dtype as the loop's in-place multiply rounds each element: it
returns the same GraphDef, byte for byte (``tests/export/test_tfjs_fold.py`` compares the two on
the converter's own graphs). :func:`fast_batch_norm_folding` puts it in the converter's place for
the duration of a conversion.
"""

from __future__ import annotations

import contextlib
import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

# The batch-norm ops the converter folds, their inputs' order and their epsilon attribute.
INPUT_ORDER = {
    "BatchNormWithGlobalNormalization": ["conv_op", "mean_op", "var_op", "beta_op", "gamma_op"],
    "FusedBatchNorm": ["conv_op", "gamma_op", "beta_op", "mean_op", "var_op"],
    "FusedBatchNormV3": ["conv_op", "gamma_op", "beta_op", "mean_op", "var_op"],
}
EPSILON_ATTR = {
    "BatchNormWithGlobalNormalization": "variance_epsilon",
    "FusedBatchNorm": "epsilon",
    "FusedBatchNormV3": "epsilon",
}
CONVOLUTIONS = ("Conv2D", "DepthwiseConv2dNative")


def scaled_weights(weights: np.ndarray, scale: np.ndarray, conv_op: str) -> np.ndarray:
    """``weights`` times the per-output-channel ``scale`` (a depthwise kernel's channels are
    ``in_channel * multiplier + m``), computed as the converter's loop computes each element."""
    if conv_op == "DepthwiseConv2dNative":
        scale = np.reshape(scale, weights.shape[2:])
    product = np.multiply(weights, scale, dtype=np.result_type(weights.dtype, scale.dtype))
    return product.astype(weights.dtype)


def _scale_after_normalization(node) -> bool:
    if node.op == "BatchNormWithGlobalNormalization":
        return node.attr["scale_after_normalization"].b
    return True


def _const_node(name: str, like, value: np.ndarray, dtype, shape):
    """A Const NodeDef holding ``value`` with the ``dtype`` attribute of the node ``like``."""
    from tensorflow.core.framework import attr_value_pb2, node_def_pb2
    from tensorflow.python.framework import tensor_util

    node = node_def_pb2.NodeDef()
    node.op = "Const"
    node.name = name
    node.attr["dtype"].CopyFrom(like.attr["dtype"])
    node.attr["value"].CopyFrom(
        attr_value_pb2.AttrValue(tensor=tensor_util.make_tensor_proto(value, dtype, shape))
    )
    return node


def fold_batch_norms(input_graph_def):
    """``tensorflowjs``'s ``fold_batch_norms`` (same patterns, checks and output), vectorised."""
    from tensorflow.core.framework import graph_pb2, node_def_pb2
    from tensorflowjs.converters import graph_rewrite_util as util

    node_map = {}
    for node in input_graph_def.node:
        if node.name in node_map:
            raise ValueError("Duplicate node names detected for ", node.name)
        node_map[node.name] = node

    def constant(bn_node, role: str, channels: int):
        """The values of ``bn_node``'s Const input ``role`` if it has ``channels`` of them, else None."""
        op = util.node_from_map(node_map, bn_node.input[INPUT_ORDER[bn_node.op].index(role)])
        value = util.values_from_const(op) if op.op == "Const" else None
        if value is None or value.shape != (channels,):
            logger.debug(
                "%s of %s is not a constant of %d values: not folded", role, bn_node.name, channels
            )
            return None
        return value

    nodes_to_skip, new_ops = {}, []
    for node in input_graph_def.node:
        if node.op not in INPUT_ORDER:
            continue
        bias = add_op = None
        conv_op = util.node_from_map(node_map, node.input[INPUT_ORDER[node.op].index("conv_op")])
        if conv_op.op in ("BiasAdd", "Add", "AddV2"):  # folded into the mean
            add_op = conv_op
            conv_op = util.node_from_map(node_map, add_op.input[0])
            bias = util.node_from_map(node_map, add_op.input[1])
            if conv_op.op not in CONVOLUTIONS:
                conv_op = util.node_from_map(node_map, add_op.input[1])
                bias = util.node_from_map(node_map, add_op.input[0])
        if (bias and bias.op != "Const") or conv_op.op not in CONVOLUTIONS:
            continue
        weights_op = util.node_from_map(node_map, conv_op.input[1])
        if weights_op.op != "Const":
            continue
        weights = util.values_from_const(weights_op)
        channels = weights.shape[3] * (weights.shape[2] if conv_op.op != "Conv2D" else 1)
        # mean first: the bias adjusts it before its shape is checked, as the converter does
        mean_op = util.node_from_map(node_map, node.input[INPUT_ORDER[node.op].index("mean_op")])
        if mean_op.op != "Const":
            continue
        mean_value = util.values_from_const(mean_op)
        if bias is not None:
            mean_value = mean_value - util.values_from_const(bias)
        if mean_value.shape != (channels,):
            continue
        values = [constant(node, role, channels) for role in ("var_op", "beta_op", "gamma_op")]
        if any(value is None for value in values):
            continue
        var_value, beta_value, gamma_value = values

        epsilon = node.attr[EPSILON_ATTR[node.op]].f
        nodes_to_skip[node.name] = True
        nodes_to_skip[weights_op.name] = True
        nodes_to_skip[conv_op.name] = True
        if bias is not None:
            nodes_to_skip[add_op.name] = True
        scale_value = 1.0 / np.vectorize(math.sqrt)(var_value + epsilon)
        if _scale_after_normalization(node):
            scale_value = scale_value * gamma_value
        offset_value = (-mean_value * scale_value) + beta_value
        scaled = scaled_weights(weights, scale_value, conv_op.op)

        scaled_weights_op = _const_node(
            conv_op.name + "_weights", weights_op, scaled, weights.dtype.type, weights.shape
        )
        for index, weights_node in enumerate(conv_op.input):
            if weights_node == weights_op.name:
                conv_op.input[index] = scaled_weights_op.name
        new_conv_op = node_def_pb2.NodeDef()
        new_conv_op.CopyFrom(conv_op)
        offset_op = _const_node(
            conv_op.name + "_bn_offset",
            mean_op,
            offset_value,
            mean_value.dtype.type,
            offset_value.shape,
        )
        bias_add_op = node_def_pb2.NodeDef()
        bias_add_op.op = "BiasAdd"
        bias_add_op.name = node.name
        bias_add_op.attr["T"].CopyFrom(conv_op.attr["T"])
        bias_add_op.attr["data_format"].CopyFrom(conv_op.attr["data_format"])
        bias_add_op.input.extend([new_conv_op.name, offset_op.name])
        new_ops.extend([scaled_weights_op, new_conv_op, offset_op, bias_add_op])

    result = graph_pb2.GraphDef()
    for node in input_graph_def.node:
        if node.name in nodes_to_skip:
            continue
        new_node = node_def_pb2.NodeDef()
        new_node.CopyFrom(node)
        new_node.input[:] = [
            name
            for name in new_node.input
            if not name.startswith("^") or name[1:] not in nodes_to_skip
        ]
        result.node.extend([new_node])
    result.node.extend(new_ops)
    result.library.CopyFrom(input_graph_def.library)
    result.versions.CopyFrom(input_graph_def.versions)
    return result


@contextlib.contextmanager
def fast_batch_norm_folding():
    """The converter folds batch norms with :func:`fold_batch_norms` inside the block."""
    from tensorflowjs.converters import fold_batch_norms as module

    original = module.fold_batch_norms
    module.fold_batch_norms = fold_batch_norms
    try:
        yield
    finally:
        module.fold_batch_norms = original
