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

A folder is expanded to the supported files below it, its sub-folders included (sorted; hidden
files and folders skipped); a folder with none is an error. A regression model (its SavedModel
returns ``predictions``; a ``.tflite`` file's ``metadata.json`` says ``task: regression``) yields
one number per example, in the target's units, instead of top-k classes.

:func:`run_score` checks a classifier on labelled data instead: each folder given holds one
sub-folder per class, named as the model's classes (the SavedModel's ``class_names`` output, or
``class_names`` of the ``metadata.json`` beside a ``.tflite`` file), and every example below a
class folder counts as that class. It returns accuracy, per-class recall and a confusion matrix.
The metric arithmetic is here, not imported from ``pipeline.evaluation.evaluate``: one stage
module does not import another's (tests/test_architecture.py).
"""

from __future__ import annotations

import csv
import json
import logging
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
from pipeline.progress import track

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
INPUT_SUFFIXES = (*IMAGE_SUFFIXES, ".npy", ".csv")
MAX_PIXEL = 255.0
MAX_TABLE_CLASSES = 20  # a wider confusion table lists the most frequent confusions instead
MAX_LISTED_CLASSES = 30  # class names an error message lists before "... (N in all)"
NAME_WIDTH = 12  # a confusion table's column headers are the class names cut to this width


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


def supported_files(folder: Path) -> list[Path]:
    """The supported files below ``folder``, in its sub-folders too (hidden ones skipped), sorted."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in INPUT_SUFFIXES
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files to predict on: the given files, and the supported files below given folders (recursively)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = supported_files(path)
            if not found:
                raise UserError(
                    f"predict: no {', '.join(INPUT_SUFFIXES)} files in the folder {path} or its sub-folders: "
                    "pass a folder of files the model can read"
                )
            files += found
        elif not path.exists():
            raise UserError(
                f"predict: input {path} not found: pass image, .npy or .csv files or a folder of them"
            )
        else:
            files.append(path)
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
    predictor = load_predictor(model_path)
    files = expand_inputs(inputs)
    results = []
    for path in track(files, "predict", "file") if progress else files:
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


def _class_list(class_names: list[str]) -> str:
    more = f", ... ({len(class_names)} in all)" if len(class_names) > MAX_LISTED_CLASSES else ""
    return ", ".join(class_names[:MAX_LISTED_CLASSES]) + more


def _check_labelled_folder(folder: Path, class_names: list[str]) -> list[Path]:
    """The class sub-folders of ``folder``, each checked to name a class (hidden ones skipped)."""
    if not folder.is_dir():
        raise UserError(
            f"predict: --labels-from-folders takes folders, but {folder} is "
            f"{'a file' if folder.exists() else 'not found'}: pass a folder holding one sub-folder per class "
            "(e.g. new_data/ with new_data/<class>/*.png)"
        )
    subfolders = sorted(
        path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")
    )
    if not subfolders:
        raise UserError(
            f"predict: the folder {folder} has no class sub-folders: put each class's examples in a sub-folder "
            f"named after it ({_class_list(class_names)}); if {folder} holds one class, pass its parent folder"
        )
    for subfolder in subfolders:
        if subfolder.name not in class_names:
            raise UserError(
                f"predict: the sub-folder {subfolder} is not one of the model's classes: rename it to one of "
                f"{_class_list(class_names)} or move it out of {folder}"
            )
    loose = [
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix.lower() in INPUT_SUFFIXES
    ]
    if loose:
        logger.warning(
            "predict: ignored %d file(s) directly in %s: only files in a class sub-folder have a label",
            len(loose),
            folder,
        )
    return subfolders


def labelled_files(folders: list[Path], class_names: list[str]) -> list[tuple[Path, int]]:
    """``(file, class index)`` for the supported files below each folder's class sub-folders (recursively).

    Raises:
        UserError: a path that is not a folder, a folder without class sub-folders, a sub-folder that
            is not a class (listing the classes), a class folder without supported files.
    """
    labelled = []
    for folder in map(Path, folders):
        for subfolder in _check_labelled_folder(folder, class_names):
            files = supported_files(subfolder)
            if not files:
                raise UserError(
                    f"predict: the class folder {subfolder} has no {', '.join(INPUT_SUFFIXES)} files (its sub-folders "
                    "included): add examples of that class or remove the folder"
                )
            labelled += [(path, class_names.index(subfolder.name)) for path in files]
    return labelled


def score_labels(true: list[int], predicted: list[int], class_names: list[str]) -> dict:
    """Accuracy, per-class recall and support (classes with examples), and the confusion matrix.

    The matrix has true classes as rows and predicted ones as columns, over the classes that occur
    as either (in the model's order), so a 1000-class model scored on three folders stays small.
    """
    matrix = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, np.int64), np.asarray(predicted, np.int64)), 1)
    support = matrix.sum(axis=1)
    shown = [index for index in range(len(class_names)) if support[index] or matrix[:, index].any()]
    return {
        "examples": int(support.sum()),
        "accuracy": float(np.trace(matrix) / max(int(support.sum()), 1)),
        "per_class": {
            class_names[index]: {
                "recall": float(matrix[index, index] / support[index]),
                "support": int(support[index]),
            }
            for index in range(len(class_names))
            if support[index]
        },
        "confusion": {
            "labels": [class_names[index] for index in shown],
            "matrix": matrix[np.ix_(shown, shown)].tolist(),
        },
    }


def run_score(model_path: Path, folders: list[Path], progress: bool = True) -> dict:
    """Score a classifier on labelled examples: each folder holds one sub-folder per class, named as
    the model's classes, with that class's images, ``.npy`` or CSV files below it (recursively).

    Returns:
        ``{"model", "examples", "accuracy", "per_class": {name: {"recall", "support"}},
        "confusion": {"labels", "matrix"}}`` (matrix rows: true class; columns: predicted).

    Example:
        ``run_score(Path("exports/tflite/int8.tflite"), [Path("new_data")])["accuracy"]``
    """
    predictor = load_predictor(model_path)
    if predictor.task == "regression":
        raise UserError(
            f"predict: {model_path} is a regression model (one value per example, no classes): "
            "--labels-from-folders scores classifiers only; run kp-predict without it for the values"
        )
    labelled = labelled_files(folders, predictor.class_names)
    true, predicted = [], []
    for path, label in track(labelled, "predict: scoring", "file") if progress else labelled:
        for _, probabilities in predict_file(path, predictor):
            true.append(label)
            predicted.append(int(np.argmax(probabilities)))
    if not true:
        raise UserError(
            f"predict: no examples in {', '.join(map(str, folders))}: the files hold no rows or arrays"
        )
    return {"model": str(model_path), **score_labels(true, predicted, predictor.class_names)}


def _top_confusions(labels: list[str], matrix: list[list[int]]) -> list[str]:
    """The most frequent (true, predicted) mistakes, for a confusion matrix too wide for a table."""
    pairs = sorted(
        (-count, labels[row], labels[column])
        for row, counts in enumerate(matrix)
        for column, count in enumerate(counts)
        if row != column and count
    )[:MAX_TABLE_CLASSES]
    title = f"most frequent confusions ({len(labels)} classes, too many for a table; --json has the matrix):"
    return (
        [title, *(f"  {true} -> {guess}: {-count}" for count, true, guess in pairs)]
        if pairs
        else [f"no confusions among the {len(labels)} classes"]
    )


def _confusion_table(labels: list[str], matrix: list[list[int]]) -> list[str]:
    """Rows: true class; columns: predicted, headed by the class names cut to ``NAME_WIDTH`` (or,
    when cut names would clash, by the rows' numbers)."""
    columns = [label[:NAME_WIDTH] for label in labels]
    title = "confusion (rows: true class, columns: predicted):"
    rows = list(labels)
    if len(set(columns)) < len(columns):
        columns = [f"[{number}]" for number in range(1, len(labels) + 1)]
        rows = [f"{column} {label}" for column, label in zip(columns, labels, strict=True)]
        title = "confusion (rows: true class, columns: predicted, numbered as the rows):"
    first = max(len("true\\pred"), *map(len, rows))
    width = max(*map(len, columns), *(len(str(count)) for counts in matrix for count in counts))
    return [
        title,
        "true\\pred".ljust(first) + "".join(f"  {column:>{width}}" for column in columns),
        *(
            row.ljust(first) + "".join(f"  {count:>{width}}" for count in counts)
            for row, counts in zip(rows, matrix, strict=True)
        ),
    ]


def format_score(score: dict) -> str:
    """Accuracy, one per-class recall line per class, and the confusion table, for a terminal."""
    width = max(map(len, score["per_class"]))
    recalls = [
        f"  {name:<{width}}  {item['recall']:.4f}  ({item['support']} example{'' if item['support'] == 1 else 's'})"
        for name, item in score["per_class"].items()
    ]
    labels, matrix = score["confusion"]["labels"], score["confusion"]["matrix"]
    table = _confusion_table if len(labels) <= MAX_TABLE_CLASSES else _top_confusions
    return "\n".join(
        [
            f"{score['model']}: accuracy {score['accuracy']:.4f} on {score['examples']} examples",
            "recall per class:",
            *recalls,
            *table(labels, matrix),
        ]
    )
