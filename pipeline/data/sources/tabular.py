"""``csv``: a table with a label column -> float32 features and class indices (or a float32 target).

With ``data.task=regression`` the label column is a number to predict: kept as float32, no class
names; a text value, a missing, NaN or inf target is a bad record (``data.on_bad_record``).

Numeric columns are kept as they are; text columns are one-hot encoded (``column=value``
features) or, with ``data.categorical=embedding``, become one integer code per column (1 + the
value's index in the vocabulary, 0 for a value outside it) that the model embeds. Missing feature values follow ``data.missing``: ``drop`` the row here, or keep the cell
as NaN (a missing category as NaN across its features) for preprocess to fill with a value fitted
on the train split only (``mean``/``median``/``most_frequent``; text columns take the most
frequent category; see :mod:`pipeline.data.imputation`). Vocabularies are computed over the whole file
(a category list, not a statistic), stored in the schema, and reused when ``data.schema`` points
at one, so new data is encoded exactly like the data a model was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.data.records import BadRecords, RawData, require_path
from pipeline.errors import UserError
from pipeline.settings import DataSettings

logger = logging.getLogger(__name__)


def read_table(path: Path, settings: DataSettings, bad: BadRecords):
    """The CSV as a DataFrame with string column names; malformed lines follow ``data.on_bad_record``."""
    import pandas as pd

    header = 0 if settings.header else None
    try:
        try:
            frame = pd.read_csv(path, header=header, skipinitialspace=True)
        except pd.errors.ParserError as error:
            if bad.policy == "fail":
                bad.add(str(path), f"malformed line ({' '.join(str(error).split())})")  # raises
            rejected = []
            frame = pd.read_csv(
                path,
                header=header,
                skipinitialspace=True,
                engine="python",
                on_bad_lines=lambda fields: rejected.append(fields),
            )
            for fields in rejected:
                bad.add(
                    f"{path.name} row '{','.join(fields)[:60]}'",
                    f"malformed line: {len(fields)} fields, expected {frame.shape[1]}",
                )
    except pd.errors.EmptyDataError:
        raise UserError(f"data: {path} is empty: expected a CSV with a label column") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(
            f"data: cannot read {path} as CSV ({str(error).splitlines()[0]}): save it as UTF-8 text"
        ) from None
    if frame.empty:
        raise UserError(f"data: {path} has no data rows: expected a CSV with one example per line")
    if settings.column_names:
        if len(settings.column_names) != frame.shape[1]:
            raise UserError(
                f"data: data.column_names has {len(settings.column_names)} names but {path} has {frame.shape[1]} "
                f"columns: give one name per column"
            )
        frame.columns = [str(name) for name in settings.column_names]
    else:
        frame.columns = (
            [str(name) for name in frame.columns]
            if settings.header
            else [f"column_{i}" for i in range(frame.shape[1])]
        )
    return frame


def label_column(frame, settings: DataSettings, path: Path) -> str:
    """The label column: ``data.label_column`` by name, else as an index (``-1`` = last); ``None`` = last."""
    columns = list(frame.columns)
    wanted = settings.label_column
    if wanted is None:
        return columns[-1]
    if wanted in columns:
        return wanted
    try:
        return columns[int(wanted)]
    except (ValueError, IndexError):
        shown = ", ".join(columns[:12]) + (" ..." if len(columns) > 12 else "")
        raise UserError(
            f"data: label column '{wanted}' is not in {path} (columns: {shown}): set data.label_column to one "
            f"of them or to an index (-1 = last)"
        ) from None


def encode_labels(
    values, reference: dict | None, bad: BadRecords, line_of, task: str = "classification"
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Class indices (or, for ``task=regression``, float32 targets), class names, and the mask of rows whose label is usable."""
    import pandas as pd

    missing = values.isna().to_numpy()
    for row in np.flatnonzero(missing):
        bad.add(line_of(row), "label missing")
    if task == "regression":
        return encode_targets(values, missing, bad, line_of)
    present = values[~missing]
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        numbers = present.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(numbers)) or not np.all(numbers == np.round(numbers)):
            raise UserError(
                "data: the label column holds non-integer numbers (a regression target): set data.task=regression "
                "(see conf/experiment/regression.yaml), or use integer or text class labels"
            )
        text = pd.Series([str(int(v)) for v in numbers], index=present.index)
        order = sorted(set(text), key=int)
    else:
        text = present.astype(str).str.strip()
        order = sorted(set(text))
    names = list(reference["label"]["class_names"]) if reference else order
    lookup = {name: index for index, name in enumerate(names)}
    y = np.full(len(values), -1, dtype=np.int64)
    for row, name in zip(np.flatnonzero(~missing), text, strict=False):
        if name in lookup:
            y[row] = lookup[name]
        else:
            bad.add(line_of(row), f"label '{name}' outside the label set ({', '.join(names[:10])})")
    return y, names, y >= 0


def encode_targets(
    values, missing: np.ndarray, bad: BadRecords, line_of
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """A regression target as float32 (no class names); a text value, NaN or inf is a bad record."""
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    for row in np.flatnonzero(~missing & ~np.isfinite(numbers)):
        shown = values.iloc[row]
        reason = (
            f"label '{shown}' is not a number"
            if np.isnan(numbers[row])
            else f"label {shown} is not finite"
        )
        bad.add(line_of(row), f"{reason} (data.task=regression needs a numeric target)")
    keep = ~missing & np.isfinite(numbers)
    return np.where(keep, numbers, np.nan).astype(np.float32), [], keep


def _numeric(values) -> bool:
    """A numeric column, or a text column whose values are at least 90% numbers (the rest are typos: bad records)."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values):
        return True
    present = values.dropna()
    return bool(pd.to_numeric(present, errors="coerce").notna().mean() >= 0.9)


def coerce_numbers(frame, columns: dict, bad: BadRecords, keep: np.ndarray, line_of):
    """Numeric columns as numbers; a cell that is not a number is a bad record (its row is dropped)."""
    import pandas as pd

    for name, spec in columns.items():
        if (
            spec["kind"] != "numeric"
            or name not in frame.columns
            or pd.api.types.is_numeric_dtype(frame[name])
        ):
            continue
        parsed = pd.to_numeric(frame[name], errors="coerce")
        for row in np.flatnonzero((frame[name].notna() & parsed.isna()).to_numpy() & keep):
            bad.add(line_of(row), f"column '{name}' holds '{frame[name].iloc[row]}', not a number")
            keep[row] = False
        frame[name] = parsed
    return frame


def describe_columns(frame, settings: DataSettings, reference: dict | None) -> dict:
    """Each feature column's kind (numeric | categorical) and vocabulary.

    With a ``reference`` schema its columns are used as stored (same order and vocabularies), so
    the features line up with what a model was trained on.
    """

    if reference and reference.get("columns"):
        return {
            name: {key: value for key, value in spec.items() if key != "fill"}
            for name, spec in reference["columns"].items()
        }
    columns = {}
    for name in frame.columns:
        values = frame[name]
        if values.isna().all():
            raise UserError(f"data: column '{name}' has no values: remove it from the CSV")
        if _numeric(values):
            columns[name] = {"kind": "numeric"}
        else:
            columns[name] = {
                "kind": "categorical",
                "vocabulary": sorted(set(values.dropna().astype(str).str.strip())),
                "encoding": settings.categorical,
            }
    return columns


def encode_features(frame, columns: dict) -> tuple[np.ndarray, list[str], dict]:
    """Float32 features (numeric as-is, categoricals one-hot or as codes) and their names.

    A value unseen in a vocabulary encodes as zeros (one-hot) or code 0 (embedding); a missing
    value stays NaN (across all of a categorical's features) for preprocess to fill.
    """
    import pandas as pd

    blocks, names, unseen = [], [], {}
    for name, spec in columns.items():
        values = frame[name] if name in frame.columns else pd.Series([None] * len(frame))
        if spec["kind"] == "numeric":
            blocks.append(
                pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)[:, None]
            )
            names.append(name)
            continue
        text = values.astype(str).str.strip().where(values.notna(), None)
        vocabulary = spec["vocabulary"]
        block = np.stack(
            [(text == value).to_numpy(dtype=np.float64) for value in vocabulary], axis=1
        )
        if spec.get("encoding") == "embedding":
            block = (
                block @ np.arange(1, len(vocabulary) + 1, dtype=np.float64)[:, None]
            )  # 1 + index; 0 = unseen
            names.append(name)
        else:
            names.extend(f"{name}={value}" for value in vocabulary)
        block[text.isna().to_numpy()] = np.nan
        blocks.append(block)
        new = sorted(set(text.dropna()) - set(vocabulary))
        if new:
            unseen[name] = new
    return np.concatenate(blocks, axis=1).astype(np.float32), names, unseen


def handle_missing(frame, strategy: str, keep: np.ndarray) -> dict:
    """Drop rows with missing feature values (``drop``; others are filled in preprocess); counts per column for the manifest."""
    counts = {name: int(count) for name, count in frame.isna().sum().items() if count}
    if strategy == "drop":
        keep &= ~frame.isna().any(axis=1).to_numpy()
    return counts


def load_csv(settings: DataSettings, staging_dir=None, reference: dict | None = None) -> RawData:
    """A CSV table: features from every column but ``data.label_column``, class indices from it."""
    path = require_path(settings, "file.csv")
    bad = BadRecords(settings.on_bad_record, "csv")
    frame = read_table(path, settings, bad)
    target = label_column(frame, settings, path)
    first_line = 2 if settings.header else 1
    line_of = lambda row: f"{path.name} line {row + first_line}"  # noqa: E731  (names a record in messages)
    y, class_names, keep = encode_labels(frame.pop(target), reference, bad, line_of, settings.task)
    if frame.shape[1] == 0:
        raise UserError(f"data: {path} has only the label column '{target}': add feature columns")
    infinite = np.isinf(frame.select_dtypes("number").to_numpy(dtype=np.float64)).any(axis=1)
    for row in np.flatnonzero(infinite & keep):
        bad.add(line_of(row), "a feature is inf")
    keep &= ~infinite
    columns = describe_columns(frame, settings, reference)
    notes = {"label_column": target}
    if reference:
        notes["missing_columns"] = [name for name in columns if name not in frame.columns]
        notes["unexpected_columns"] = [name for name in frame.columns if name not in columns]
        frame = frame.reindex(columns=list(columns))
    frame = coerce_numbers(frame, columns, bad, keep, line_of)
    before = int(keep.sum())
    missing = handle_missing(frame, settings.missing, keep)
    x, feature_names, unseen = encode_features(frame, columns)
    if missing:
        logger.info("Missing values per column (%s): %s", settings.missing, missing)
    notes["missing_values"] = {
        "strategy": settings.missing,
        "per_column": missing,
        "rows_dropped": before - int(keep.sum()),
        "filled": "no (rows dropped)"
        if settings.missing == "drop"
        else "in preprocess, from the train split",
    }
    if unseen:
        notes["unseen_categories"] = {name: values[:20] for name, values in unseen.items()}
    data = RawData(
        x=x[keep],
        y=y[keep],
        class_names=class_names,
        source="csv",
        feature_names=feature_names,
        columns=columns,
        notes=notes,
        missing_allowed=settings.missing != "drop",
        task=settings.task,
    )
    return bad.attach(data)
