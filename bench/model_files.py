"""What a large model costs to load, export and convert: the library's way against the plain calls it
replaced, side by side in one run on the same model.

Measured, each pair on the same model in this process (nothing is asserted):

1. **save** ``model.keras`` (every checkpoint): ``model.save`` against
   :func:`pipeline.training.model_io.save_model` (tf-keras's walk over every attribute skips the
   layers' ``_tracking_metadata`` JSON);
   **load** ``model.keras``: ``tf.keras.models.load_model`` against
   :func:`pipeline.training.model_io.load_keras_model` (direct seeks inside the archive's stored
   weights file, the same lean walk);
2. **SavedModel** save: the serving module tracking the whole Keras model (every layer's call
   functions traced and stored) against :func:`pipeline.export.saved_model.write_saved_model`
   (its variables only); and each SavedModel's load back;
3. **TFLite float32** conversion: ``TFLiteConverter.from_saved_model`` on that SavedModel's
   ``probabilities`` signature against the signature frozen once and converted
   (:func:`pipeline.training.check.frozen_graph`, :func:`pipeline.training.check.tflite_converter`).

The model is a ``tf.keras.applications`` backbone from random weights (no download) with a softmax
head, after one Adam step (``model.keras`` holds the optimizer's state, as the train stage saves it): MobileNetV2 at 32x32 by default. Printed: each side's seconds and the ratio, plain over
library, and whether both sides give the same outputs.

    python bench/model_files.py                               # MobileNetV2, 32x32, ~2 min on 2 cores
    python bench/model_files.py --backbone ResNet50 --size 64
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="MobileNetV2", help="a tf.keras.applications model")
    parser.add_argument("--size", type=int, default=32, help="input height and width (RGB)")
    parser.add_argument("--classes", type=int, default=10)
    return parser.parse_args(argv)


def build(backbone: str, size: int, classes: int):
    """``backbone`` (random weights, no top) under global pooling and a softmax layer."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    base = getattr(tf.keras.applications, backbone)(
        weights=None, include_top=False, input_shape=(size, size, 3)
    )
    pooled = tf.keras.layers.GlobalAveragePooling2D()(base.output)
    return tf.keras.Model(base.input, tf.keras.layers.Dense(classes, activation="softmax")(pooled))


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def compare(name: str, plain: tuple, library: tuple, same: bool) -> dict:
    (_, plain_seconds), (_, library_seconds) = plain, library
    row = {
        "what": name,
        "plain": plain_seconds,
        "library": library_seconds,
        "ratio": plain_seconds / library_seconds,
        "same": same,
    }
    print(
        f"{name:<34} plain {plain_seconds:7.2f} s   library {library_seconds:7.2f} s   "
        f"ratio {row['ratio']:5.1f}x   same outputs: {'yes' if same else 'NO'}",
        flush=True,
    )
    return row


def run(args: argparse.Namespace, root: Path) -> list[dict]:
    from pipeline.env import import_tensorflow, quiet_native_stderr, quiet_tensorflow_loggers
    from pipeline.export import saved_model
    from pipeline.export.tflite import tflite_predictor
    from pipeline.training.check import frozen_graph, tflite_converter
    from pipeline.training.model_io import load_keras_model, save_model

    tf = import_tensorflow()
    quiet_tensorflow_loggers()
    model = build(args.backbone, args.size, args.classes)
    x = np.random.default_rng(0).uniform(0, 255, size=(4, args.size, args.size, 3))
    x = x.astype(np.float32)
    # the optimizer's state is in model.keras too, as the train stage saves it (one Adam step)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.train_on_batch(x, np.arange(len(x)) % args.classes)
    expected = model.predict(x, verbose=0)
    meta = {
        "input_shape": [args.size, args.size, 3],
        "class_names": [str(index) for index in range(args.classes)],
        "normalization": {"method": "minmax", "offset": 0.0, "scale": 1.0},
    }
    print(f"{args.backbone} at {args.size}x{args.size}: {model.count_params():,} parameters")
    rows = []

    model.save(str(root / "warm.keras"), save_format="keras_v3")  # first-save costs on neither side
    plain = timed(lambda: model.save(str(root / "plain.keras"), save_format="keras_v3"))
    library = timed(lambda: save_model(model, {}, root / "ours"))
    same = np.array_equal(
        load_keras_model(root / "plain.keras").predict(x, verbose=0),
        load_keras_model(root / "ours" / "model.keras").predict(x, verbose=0),
    )
    rows.append(compare("save model.keras", plain, library, same))

    model.save(str(root / "model.keras"), save_format="keras_v3")
    plain = timed(lambda: tf.keras.models.load_model(str(root / "model.keras"), compile=False))
    library = timed(lambda: load_keras_model(root / "model.keras"))
    same = np.array_equal(plain[0].predict(x, verbose=0), library[0].predict(x, verbose=0))
    rows.append(compare("load model.keras", plain, library, same))

    def save_whole():
        module, signatures = saved_model._serving_module(model, meta, 1.0, None)
        module.model = model  # tracked whole, as before
        tf.saved_model.save(module, str(root / "whole"), signatures=signatures)

    plain = timed(save_whole)
    library = timed(lambda: saved_model.write_saved_model(model, meta, 1.0, root / "variables"))
    rows.append(compare("SavedModel save", plain, library, True))
    plain = timed(lambda: saved_model.saved_model_predictor(root / "whole"))
    library = timed(lambda: saved_model.saved_model_predictor(root / "variables"))
    same = np.allclose(plain[0](x), library[0](x), atol=1e-6) and np.allclose(
        library[0](x), expected, atol=1e-5
    )
    rows.append(compare("SavedModel load", plain, library, same))

    def from_saved_model():
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(root / "whole"), signature_keys=["probabilities"]
        )
        return converter.convert()

    def frozen():
        function = library_signatures["probabilities"].get_concrete_function()
        return tflite_converter(frozen_graph(function), False).convert()

    library_signatures = saved_model.write_saved_model(model, meta, 1.0, root / "again")
    with quiet_native_stderr():
        plain = timed(from_saved_model)
        library = timed(frozen)
    outputs = []
    for side, flatbuffer in (("plain", plain[0]), ("library", library[0])):
        (root / f"{side}.tflite").write_bytes(flatbuffer)
        outputs.append(tflite_predictor(root / f"{side}.tflite")(x))
    same = all(np.allclose(output, expected, atol=1e-4) for output in outputs)
    rows.append(compare("TFLite float32 conversion", plain, library, same))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-model-files-") as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
