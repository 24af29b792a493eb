"""``model=backbone``: transfer learning from a ``tf.keras.applications`` backbone.

One functional model takes the pipeline's usual normalised example (so every export, which adds
the normalisation in front, takes the usual raw inputs) and runs:

1. ``resize``: ``Resizing`` to ``model.input_size`` (bilinear; 8x8 digits become e.g. 32x32);
2. ``to_backbone_range``: a fixed (non-trainable) 1x1 convolution that repeats a grey channel to
   RGB, multiplies by 255 and applies the backbone's own ``preprocess_input`` (``tf``: to [-1, 1];
   ``caffe``: RGB to BGR minus the ImageNet means; ``torch``: ImageNet mean/std; EfficientNet:
   nothing, it rescales inside). Every mode is a per-channel affine map, hence one 1x1
   convolution of built-in layers only: the model saves, reloads and converts with no custom
   objects. The map is exact for ``preprocess.normalize=minmax`` (images in [0, 1] after
   preprocess, the default); under ``standardize`` or ``none`` the backbone sees another range,
   which random initialisation does not mind but pretrained weights do;
3. the backbone without its classifier top (frozen, and called with ``training=False`` so its
   BatchNorm runs in inference mode, when ``model.freeze`` and the weights are pretrained: a
   frozen random backbone is a fixed random feature extractor that learns nothing, so with
   ``model.weights=null`` the whole network trains, see :func:`trains_frozen`; an unfrozen
   backbone's BatchNorm statistics follow the batches at momentum 0.9, ``TRAINING_BN_MOMENTUM``);
4. the head: ``GlobalAveragePooling2D``, ``Dropout(dropout_rate)``, then the ``hidden_units``
   dense layers and the task's output as :mod:`pipeline.training.models` builds them for every
   model (it passes them in: see :func:`build_backbone`).

Fine-tuning (``model.fine_tune``, run by :func:`pipeline.training.worker.fit_model`) uses
:func:`unfreeze_backbone`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.settings import BACKBONE_MIN_SIZES, ModelSettings

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]  # relative weights paths: from here, as in conf/
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torch mode, RGB
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # caffe mode: subtracted after RGB -> BGR
# BatchNorm moving-average momentum of a backbone whose BatchNorm layers train (weights=null, or
# freeze=false). Keras's applications use 0.99-0.999 (made for ImageNet's hundreds of thousands of
# steps): after a short run the moving statistics are still mostly the initial (or the pretrained)
# ones, and inference, which uses them, fails. MobileNetV2, digits, 2 epochs from scratch: test
# accuracy 0.10 at 0.999, 0.74 at 0.9; MNIST (800 examples, 5 epochs) from Fashion-MNIST weights
# with freeze=false: 0.14 at 0.999, 0.72 at 0.9 (bench/transfer.py). 0.9 is PyTorch's default
# (its momentum=0.1). A frozen backbone's BatchNorm runs in inference mode and keeps its statistics.
TRAINING_BN_MOMENTUM = 0.9


@dataclass(frozen=True)
class Backbone:
    """How to feed one ``tf.keras.applications`` backbone and name its ImageNet weights."""

    mode: str  # its preprocess_input: tf | caffe | torch | raw (0..255 as they are)
    notop_file: str  # the file keras.applications downloads for include_top=False


BACKBONES = {
    "MobileNetV2": Backbone(
        "tf", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
    ),
    "ResNet50": Backbone("caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "ResNet50V2": Backbone("tf", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "EfficientNetB0": Backbone("raw", "efficientnetb0_notop.h5"),
    "VGG16": Backbone("caffe", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "DenseNet121": Backbone("torch", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "InceptionV3": Backbone("tf", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "Xception": Backbone("tf", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
}


def imagenet_file_name(backbone: str, input_size: list[int]) -> str:
    """The file keras.applications fetches for ``backbone``'s ImageNet weights without the top.

    MobileNetV2 has one file per square size in 96..224 and takes the 224 one otherwise.
    """
    height, width = input_size
    rows = height if height == width and height in (96, 128, 160, 192, 224) else 224
    return BACKBONES[backbone].notop_file.format(rows=rows)


def keras_models_dir() -> Path:
    """Where Keras caches downloaded weights: ``~/.keras/models`` (``/tmp/.keras/models`` when
    the home folder is not writable), as ``tf.keras.utils.get_file`` decides."""
    base = Path(os.path.expanduser(os.path.join("~", ".keras")))
    if not os.access(base, os.W_OK) and not os.access(base.parent, os.W_OK):
        base = Path("/tmp/.keras")
    return base / "models"


def input_affine(mode: str, channels: int):
    """``(kernel, bias)`` of the 1x1 convolution mapping ``channels`` inputs in [0, 1] to the
    backbone's 3 preprocessed channels: ``255 * x`` (grey repeated), then ``preprocess_input``."""
    import numpy as np

    source = (2, 1, 0) if mode == "caffe" else (0, 1, 2)  # caffe wants BGR
    if mode == "tf":  # x / 127.5 - 1
        scale, offset = np.full(3, 255 / 127.5), np.full(3, -1.0)
    elif mode == "caffe":
        scale, offset = np.full(3, 255.0), -np.asarray(CAFFE_MEAN_BGR)
    elif mode == "torch":  # (x / 255 - mean) / std
        scale = 1 / np.asarray(IMAGENET_STD)
        offset = -np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)
    else:
        scale, offset = np.full(3, 255.0), np.zeros(3)
    kernel = np.zeros((1, 1, channels, 3))
    for out in range(3):
        kernel[0, 0, 0 if channels == 1 else source[out], out] = scale[out]
    return kernel, offset


def _exists(path: Path) -> bool:
    """A weights file, or a TensorFlow checkpoint's prefix (``<path>.index`` next to its data)."""
    return path.exists() or path.with_name(path.name + ".index").exists()


def _resolve_weights_file(weights: str) -> Path:
    path = Path(weights).expanduser()
    if not path.is_absolute() and not _exists(path) and _exists(REPO / path):
        path = REPO / path  # Ray workers may run elsewhere: paths in conf/ are from the repo
    if not _exists(path):
        raise UserError(
            f"model: model.weights={weights}: no such file: give a weights file (absolute, or "
            "relative to the repository), imagenet, or null (random initialisation)"
        )
    return path


def _load_weights_file(network, weights: str, backbone: str) -> None:
    """Load a local weights file into ``network`` layer by layer (topological order, every
    shape checked: a file of another network is refused, never half-loaded)."""
    import tensorflow as tf

    path = _resolve_weights_file(weights)
    try:
        status = network.load_weights(str(path))
        if hasattr(status, "assert_existing_objects_matched"):  # TF checkpoint format
            status.assert_existing_objects_matched()
    except (ValueError, OSError, KeyError, AssertionError, tf.errors.OpError) as error:
        reason = " ".join(str(error).split())[:200]
        raise UserError(
            f"model: model.weights={path} does not fit {backbone} (include_top=False): {reason}; "
            f"give weights saved from {backbone} without its top, imagenet, or null"
        ) from None


def _offline_line(settings: ModelSettings, error: Exception) -> str:
    origin = re.search(r"URL fetch failure on (\S+?):? ", str(error))
    url = origin.group(1) if origin else None
    name = (
        url.rsplit("/", 1)[-1]
        if url
        else imagenet_file_name(settings.backbone, settings.input_size)
    )
    source = f" from {url}" if url else ""
    return (
        f"model: model.weights=imagenet: Keras could not download {name} (offline?): put that "
        f"file{source} into {keras_models_dir()}/, or set model.weights to a local weights file "
        "or null"
    )


def _application(settings: ModelSettings):
    """The backbone without its top, with random, ImageNet or file weights."""
    import tensorflow as tf

    constructor = getattr(tf.keras.applications, settings.backbone)
    shape = (*settings.input_size, 3)
    if settings.weights != "imagenet":
        network = constructor(include_top=False, weights=None, input_shape=shape)
        if settings.weights:
            _load_weights_file(network, settings.weights, settings.backbone)
        return network
    try:
        return constructor(include_top=False, weights="imagenet", input_shape=shape)
    except Exception as error:  # get_file raises a bare Exception when the download fails
        if "URL fetch failure" not in str(error):
            raise
        raise UserError(_offline_line(settings, error)) from None


def _check_unfreeze_from(network, settings: ModelSettings) -> None:
    """A ``fine_tune.unfreeze_from`` layer name the backbone lacks fails now, not after phase one."""
    start = settings.fine_tune.unfreeze_from
    if settings.fine_tune.epochs > 0 and isinstance(start, str):
        _start_index(network, start, settings.backbone)


def trains_frozen(settings: ModelSettings) -> bool:
    """Whether the backbone starts frozen: ``model.freeze`` with pretrained weights.

    ``model.freeze`` applies to pretrained weights (``imagenet`` or a file). With
    ``model.weights=null`` the backbone is random: frozen, it would be a fixed random feature
    extractor and the model would barely learn, so the whole network trains from scratch (one log
    line says so). An unfrozen backbone's BatchNorm follows the batches at ``TRAINING_BN_MOMENTUM``.
    Fine-tuning (``model.fine_tune.epochs > 0``) then has nothing to fine-tune.

    Raises:
        UserError: ``model.fine_tune.epochs > 0`` with ``model.weights=null``.
    """
    if settings.weights is not None:
        return settings.freeze
    if settings.fine_tune.epochs > 0:
        raise UserError(
            f"model: model.fine_tune.epochs={settings.fine_tune.epochs} fine-tunes pretrained "
            "weights, but model.weights=null trains the whole backbone from the first epoch: set "
            "model.weights (imagenet or a weights file) or model.fine_tune.epochs=0"
        )
    if settings.freeze:
        logger.info(
            "model.weights=null: the whole %s trains from random initialisation (model.freeze "
            "applies to pretrained weights only)",
            settings.backbone,
        )
    return False


def _check_inputs(
    settings: ModelSettings, input_shape: tuple[int, ...], embeddings: list[dict] | None
) -> None:
    """Images of 1 or 3 channels, a known backbone, an ``input_size`` it accepts."""
    if len(input_shape) != 3 or embeddings:
        raise UserError(
            f"model: backbone needs image inputs (height, width, channels), got shape "
            f"{tuple(input_shape)}: use model=mlp for tabular data"
        )
    if input_shape[-1] not in (1, 3):
        raise UserError(
            f"model: backbone needs grey or RGB images (1 or 3 channels), got {input_shape[-1]} "
            "channels: use model=cnn"
        )
    if settings.backbone not in BACKBONES:
        raise UserError(
            f"model: unknown backbone '{settings.backbone}': choose one of {', '.join(BACKBONES)}"
        )
    minimum = BACKBONE_MIN_SIZES[settings.backbone]
    if (
        not settings.input_size
        or len(settings.input_size) != 2
        or min(settings.input_size) < minimum
    ):
        raise UserError(
            f"model: model.input_size={settings.input_size} is too small for {settings.backbone}: "
            f"each side must be >= {minimum}"
        )


def _network(settings: ModelSettings, frozen: bool):
    """The backbone with its weights, a stable name and, unless frozen, BatchNorm statistics that
    follow the batches at ``TRAINING_BN_MOMENTUM``."""
    import tensorflow as tf

    network = _application(settings)
    network._name = settings.backbone.lower()  # noqa: SLF001 (one stable name per backbone)
    if not frozen:
        for layer in network.layers:  # saved in each layer's config: a reload keeps it
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                layer.momentum = TRAINING_BN_MOMENTUM
    _check_unfreeze_from(network, settings)
    return network


def build_backbone(
    settings: ModelSettings,
    input_shape: tuple[int, ...],
    num_classes: int,
    embeddings: list[dict] | None = None,
    *,
    head: Callable,
):
    """The pretrained-backbone model for ``model=backbone`` (see the module docstring).

    Build it through :func:`pipeline.training.models.build_model` (``MODEL_BUILDERS["backbone"]``),
    which passes ``head``: ``head(features)``, the ``hidden_units`` dense layers and the task's
    output for ``num_classes`` on the pooled (and dropped-out) features, the same layers as the
    built-in models' (this module cannot import ``models``: that imports it).

    Raises:
        UserError: a table or an image with other than 1 or 3 channels, an unknown backbone or too
            small ``input_size``, weights that cannot be downloaded or do not fit, an unknown
            ``fine_tune.unfreeze_from`` layer, fine-tuning random weights.
    """
    import tensorflow as tf

    _check_inputs(settings, input_shape, embeddings)
    frozen = trains_frozen(settings)
    network = _network(settings, frozen)
    kernel, bias = input_affine(BACKBONES[settings.backbone].mode, input_shape[-1])
    inputs = tf.keras.Input(shape=input_shape, name="inputs")
    x = tf.keras.layers.Resizing(*settings.input_size, name="resize")(inputs)
    x = tf.keras.layers.Conv2D(
        3,
        1,
        name="to_backbone_range",
        trainable=False,
        kernel_initializer=tf.keras.initializers.Constant(kernel.tolist()),
        bias_initializer=tf.keras.initializers.Constant(bias.tolist()),
    )(x)
    if frozen:
        network.trainable = False
        x = network(x, training=False)  # BatchNorm in inference mode, also once fine-tuned
    else:
        x = network(x)
    x = tf.keras.layers.GlobalAveragePooling2D(name="pooled")(x)
    if settings.dropout_rate > 0:
        x = tf.keras.layers.Dropout(settings.dropout_rate, name="pooled_dropout")(x)
    return tf.keras.Model(inputs, head(x), name=settings.name)


def find_backbone(model):
    """The pretrained network inside a model :func:`build_backbone` built (or reloaded).

    Raises:
        ValueError: ``model`` holds no nested network.
    """
    import tensorflow as tf

    nested = [layer for layer in model.layers if isinstance(layer, tf.keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"{model.name} holds {len(nested)} nested networks, expected 1 backbone")
    return nested[0]


def _start_index(network, start: str | float | None, backbone: str) -> int:
    layers = network.layers
    if start is None:
        return 0
    if isinstance(start, float):
        return int(round(start * len(layers)))
    names = [layer.name for layer in layers]
    if start not in names:
        samples = ", ".join(names[len(names) * k // 4] for k in (1, 2, 3))
        raise UserError(
            f"model: model.fine_tune.unfreeze_from={start!r} is not a layer of {backbone} "
            f"({len(names)} layers from {names[1]} to {names[-1]}, e.g. {samples}): give a "
            "layer name or a fraction such as 0.7"
        )
    return names.index(start)


def unfreeze_backbone(model, unfreeze_from: str | float | None) -> int:
    """Fine-tuning's trainability: the backbone's layers from ``unfreeze_from`` on become
    trainable (a layer name; a fraction of its layers, 0.7 = the last 30%; None = all), the
    earlier ones stay frozen and so does every BatchNormalization layer. Recompile afterwards.

    Returns:
        The number of backbone layers now trainable.
    """
    import tensorflow as tf

    network = find_backbone(model)
    start = _start_index(network, unfreeze_from, network.name)
    network.trainable = True
    for index, layer in enumerate(network.layers):
        layer.trainable = index >= start and not isinstance(
            layer, tf.keras.layers.BatchNormalization
        )
    return sum(layer.trainable for layer in network.layers)
