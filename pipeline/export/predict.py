"""Predict with an exported model: a SavedModel directory or a ``.tflite`` file.

Inputs are raw, as a client would send them (the preprocessing is inside the exports):

* PNG/JPEG images: converted to the model's channels (grey or RGB) and resized to its size;
  pixels 0..255 map onto the training data's raw range (``pixel_to_raw`` of the export).
* ``.npy`` arrays: one example of the model's input shape or a batch of them, raw values.
* CSV files: one example per row. A SavedModel trained on a CSV takes the raw CSV itself (a
  header naming its columns, text values, empty cells for missing values; extra columns such as
  the label are ignored) through its ``serving_raw_rows`` signature, which encodes them as ingest
  did. Otherwise: as many numeric columns as the model has input values (a non-numeric first row
  is a header and skipped).

A folder is expanded to the supported files in it (sorted). A regression model (its SavedModel
returns ``predictions``; a ``.tflite`` file's ``metadata.json`` says ``task: regression``) yields
one number per example, in the target's units, instead of top-k classes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.export.raw_rows import RAW_ROWS_SIGNATURE, input_key
from pipeline.export.saved_model import (
    IMAGES_INPUT_NAME,
    IMAGES_SIGNATURE,
    INPUT_NAME,
    OUTPUT_NAME,
    PREDICTIONS_NAME,
    SIGNATURE,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
INPUT_SUFFIXES = (*IMAGE_SUFFIXES, ".npy", ".csv")
MAX_PIXEL = 255.0


@dataclass
class Predictor:
    """A loaded model: its raw input shape, class names, and ``raw batch -> probabilities``."""

    path: Path
    input_shape: list[int]
    class_names: list[str]
    pixel_to_raw: float
    predict: Callable[[np.ndarray], np.ndarray]
    predict_images: Callable[[np.ndarray], np.ndarray] | None = (
        None  # uint8 pixels, any size (SavedModel)
    )
    raw_columns: dict[str, bool] | None = (
        None  # CSV column -> numeric? (SavedModel trained on a CSV)
    )
    predict_rows: Callable[[dict[str, np.ndarray]], np.ndarray] | None = (
        None  # raw CSV columns -> probabilities
    )
    task: str = "classification"  # regression: predict returns one value per example and class_names is empty


def _load_saved_model(path: Path) -> Predictor:
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures[SIGNATURE]
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"predict: {path} is not a usable SavedModel ({first}): pass the exports/saved_model directory "
            "written by the export stage"
        ) from None
    input_shape = [
        int(size) for size in signature.structured_input_signature[1][INPUT_NAME].shape[1:]
    ]
    regression = (
        PREDICTIONS_NAME in signature.structured_outputs
    )  # a regression model: one value per example, no classes
    output = PREDICTIONS_NAME if regression else OUTPUT_NAME
    probe = (
        None if regression else signature(**{INPUT_NAME: tf.zeros([1, *input_shape], tf.float32)})
    )
    class_names = [] if regression else [name.decode() for name in probe["class_names"].numpy()[0]]
    images = loaded.signatures.get(IMAGES_SIGNATURE)
    predictor = Predictor(
        path,
        input_shape,
        class_names,
        1.0,
        lambda x: signature(**{INPUT_NAME: tf.constant(x, tf.float32)})[output].numpy(),
        None
        if images is None
        else lambda x: images(**{IMAGES_INPUT_NAME: tf.constant(x, tf.uint8)})[output].numpy(),
        task="regression" if regression else "classification",
    )
    rows = loaded.signatures.get(RAW_ROWS_SIGNATURE)
    if rows is not None:
        specs = rows.structured_input_signature[1]
        names = [name.decode() for name in loaded.raw_column_names.numpy()]
        predictor.raw_columns = {name: specs[input_key(name)].dtype != tf.string for name in names}
        predictor.predict_rows = lambda columns: rows(
            **{input_key(name): tf.constant(values) for name, values in columns.items()}
        )[output].numpy()
    return predictor


def _load_tflite(path: Path) -> Predictor:
    from pipeline.export.tflite import load_interpreter, tflite_predictor

    try:
        interpreter = load_interpreter(path)
        predict = tflite_predictor(path)
    except (ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"predict: {path} is not a valid TFLite model ({first}): re-export it (dvc repro export)"
        ) from None
    input_shape = [int(size) for size in interpreter.get_input_details()[0]["shape"][1:]]
    num_classes = int(interpreter.get_output_details()[0]["shape"][-1])
    # beside the file (tflite/<variant>.tflite), or in tflite/ next to the default exports/model.tflite
    metadata_path = next(
        (
            candidate
            for candidate in (
                path.with_name("metadata.json"),
                path.parent / "tflite" / "metadata.json",
            )
            if candidate.is_file()
        ),
        path.with_name("metadata.json"),
    )
    metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    task = metadata.get("task", "classification")
    class_names = (
        []
        if task == "regression"
        else metadata.get("class_names") or [str(index) for index in range(num_classes)]
    )
    return Predictor(
        path, input_shape, class_names, float(metadata.get("pixel_to_raw", 1.0)), predict, task=task
    )


def load_predictor(model_path: Path) -> Predictor:
    """Load a SavedModel directory or a ``.tflite`` file.

    Raises:
        UserError: a missing path, an unknown format or a corrupt model, naming the file and the fix.
    """
    model_path = Path(model_path)
    if not model_path.exists():
        raise UserError(
            f"predict: model {model_path} not found: pass exports/saved_model, exports/model.tflite or exports/tflite/<variant>.tflite"
        )
    if model_path.is_dir():
        if (model_path / "DISABLED.md").is_file() and not (model_path / "saved_model.pb").is_file():
            raise UserError(
                f"predict: {model_path} holds no model: the export switched that format off ({model_path / 'DISABLED.md'} "
                "says how to turn it on): pass exports/model.tflite or another exported model"
            )
        if not (model_path / "saved_model.pb").is_file():
            raise UserError(
                f"predict: {model_path} has no saved_model.pb: pass the exports/saved_model directory or a .tflite file"
            )
        return _load_saved_model(model_path)
    if model_path.suffix.lower() == ".tflite":
        return _load_tflite(model_path)
    raise UserError(
        f"predict: {model_path}: unknown model format '{model_path.suffix}': pass a SavedModel directory "
        "or a .tflite file"
    )


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files to predict on: the given files, and the supported files inside given folders."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(
                item for item in path.iterdir() if item.suffix.lower() in INPUT_SUFFIXES
            )
        elif not path.exists():
            raise UserError(
                f"predict: input {path} not found: pass image, .npy or .csv files or a folder of them"
            )
        else:
            files.append(path)
    if not files:
        raise UserError(
            f"predict: no {', '.join(INPUT_SUFFIXES)} files in {', '.join(map(str, paths))}: pass files the model can read"
        )
    return files


def read_image(path: Path, predictor: Predictor) -> np.ndarray:
    """An image as uint8 ``[height, width, channels]`` with the model's channel count (any size)."""
    from PIL import Image, UnidentifiedImageError

    if len(predictor.input_shape) != 3 or predictor.input_shape[-1] not in (1, 3):
        raise UserError(
            f"predict: {path} is an image but the model takes inputs of shape {predictor.input_shape}: "
            "pass .npy arrays or CSV rows"
        )
    try:
        with Image.open(path) as image:
            pixels = np.asarray(
                image.convert("L" if predictor.input_shape[-1] == 1 else "RGB"), dtype=np.uint8
            )
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(
            f"predict: cannot read the image {path} ({error}): pass a valid PNG or JPEG file"
        ) from None
    return pixels.reshape(*pixels.shape[:2], predictor.input_shape[-1])


def image_inputs(pixels: np.ndarray, predictor: Predictor) -> np.ndarray:
    """Resize uint8 pixels to the model's size and map them onto its raw range (for ``.tflite``)."""
    from PIL import Image

    height, width, channels = predictor.input_shape
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    resized = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    return resized.reshape(1, height, width, channels) * predictor.pixel_to_raw


def read_npy(path: Path, predictor: Predictor) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise UserError(
            f"predict: cannot read {path} as .npy ({error}): save it with numpy.save"
        ) from None
    size = int(np.prod(predictor.input_shape))
    if array.size == size:
        return array.reshape(1, *predictor.input_shape).astype(np.float32)
    if array.ndim >= 2 and int(np.prod(array.shape[1:])) == size:
        return array.reshape(-1, *predictor.input_shape).astype(np.float32)
    raise UserError(
        f"predict: {path} has shape {list(array.shape)}: the model takes {predictor.input_shape} "
        f"or [n, {', '.join(map(str, predictor.input_shape))}] raw values"
    )


def read_raw_rows(
    path: Path, header: list[str], rows: list[list[str]], predictor: Predictor
) -> dict[str, np.ndarray]:
    """Raw CSV columns by name for ``serving_raw_rows``: numbers (empty = NaN) or text (empty = missing)."""
    header = [name.strip() for name in header]
    absent = [name for name in predictor.raw_columns if name not in header]
    if absent:
        raise UserError(
            f"predict: {path} lacks the column(s) {', '.join(absent)}: the model takes raw columns "
            f"{', '.join(predictor.raw_columns)} (a header row naming them; leave a cell empty for a missing value)"
        )
    columns = {}
    for name, numeric in predictor.raw_columns.items():
        position = header.index(name)
        cells = [row[position].strip() if position < len(row) else "" for row in rows]
        if not numeric:
            columns[name] = np.asarray(cells, dtype=object).astype(str)
            continue
        for number, cell in enumerate(cells, start=1):
            if cell and not _numeric([cell]):
                raise UserError(
                    f"predict: {path} row {number}: '{cell}' in column {name} is not a number: fix it or leave it empty (missing)"
                )
        columns[name] = np.asarray(
            [float(cell) if cell else np.nan for cell in cells], dtype=np.float32
        )
    return columns


def read_csv(path: Path, predictor: Predictor) -> np.ndarray | dict[str, np.ndarray]:
    """Encoded rows ``[n, *input_shape]``, or raw columns by name when the model takes raw CSV rows and the file has a header."""
    size = int(np.prod(predictor.input_shape))
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if rows and not _numeric(rows[0]):
        if predictor.raw_columns is not None:
            if len(rows) < 2:
                raise UserError(
                    f"predict: {path} has no data rows: add one row of raw values per example under the header"
                )
            return read_raw_rows(path, rows[0], rows[1:], predictor)
        rows = rows[1:]  # a header
    for number, row in enumerate(rows, start=1):
        if len(row) != size:
            raise UserError(
                f"predict: {path} row {number} has {len(row)} columns: the model takes {size} raw values per row "
                "(add the missing columns or drop the extra ones)"
            )
        if not _numeric(row):
            raise UserError(
                f"predict: {path} row {number} has a non-numeric value: this model takes numbers (a model trained "
                "on a CSV with text columns takes raw rows only as exports/saved_model, with a header row)"
            )
    if not rows:
        raise UserError(
            f"predict: {path} has no data rows: add one row of {size} raw values per example"
        )
    return np.asarray(rows, dtype=np.float32).reshape(-1, *predictor.input_shape)


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def predict_file(path: Path, predictor: Predictor) -> Iterator[tuple[str, np.ndarray]]:
    """``(label, probabilities)`` for each example in ``path`` (``file`` or ``file:row``)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        pixels = read_image(path, predictor)
        if predictor.predict_images is not None:
            yield str(path), predictor.predict_images(pixels[np.newaxis])[0]
        else:
            yield str(path), predictor.predict(image_inputs(pixels, predictor))[0]
        return
    if suffix not in (".npy", ".csv"):
        raise UserError(
            f"predict: {path}: unknown input format '{suffix}': pass {', '.join(INPUT_SUFFIXES)} files"
        )
    batch = read_npy(path, predictor) if suffix == ".npy" else read_csv(path, predictor)
    probabilities = (
        predictor.predict_rows(batch) if isinstance(batch, dict) else predictor.predict(batch)
    )
    for index, row in enumerate(probabilities):
        yield (str(path) if len(probabilities) == 1 else f"{path}:{index + 1}"), row


def top_k(probabilities: np.ndarray, class_names: list[str], k: int) -> list[dict]:
    order = np.argsort(-np.asarray(probabilities))[:k]
    return [
        {"class": class_names[index], "probability": float(probabilities[index])} for index in order
    ]


def run_predict(model_path: Path, inputs: list[Path], k: int, progress: bool = True) -> list[dict]:
    """Top-``k`` classes for every example in ``inputs``: ``[{"input", "top": [{"class", "probability"}]}]``;
    a regression model's value instead: ``[{"input", "prediction"}]`` (``k`` does not apply)."""
    from tqdm import tqdm

    predictor = load_predictor(model_path)
    files = expand_inputs(inputs)
    results = []
    for path in tqdm(files, desc="predict", unit="file", disable=not progress or len(files) < 2):
        for label, probabilities in predict_file(path, predictor):
            if predictor.task == "regression":
                results.append({"input": label, "prediction": float(np.ravel(probabilities)[0])})
            else:
                results.append(
                    {"input": label, "top": top_k(probabilities, predictor.class_names, k)}
                )
    return results


def format_results(results: list[dict]) -> str:
    """One line per example: ``input: class (probability), ...``, or ``input: value`` for a regression model."""
    return "\n".join(
        f"{result['input']}: "
        + (
            f"{result['prediction']:.6g}"
            if "prediction" in result
            else ", ".join(f"{item['class']} ({item['probability']:.4f})" for item in result["top"])
        )
        for result in results
    )
