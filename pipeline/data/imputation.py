"""Missing CSV values, filled from the train split only.

With ``data.missing`` = ``mean``, ``median`` or ``most_frequent``, ingest keeps a missing cell as
NaN (a missing category: NaN across all of its features). Preprocess then fits one fill value per
raw column on the *train* rows (:func:`fit_fills`) and applies it (:func:`apply_fills`) before the
normaliser is fitted, so no statistic ever sees a validation or test row. A categorical column
always takes its most frequent train category. The fills go into ``meta.json`` twice: per feature
(``imputation.fill``, what preprocess applied) and per raw column (``columns.<name>.fill``, what
the SavedModel's ``serving_raw_rows`` signature fills a missing cell with).
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import UserError

FILL_STRATEGIES = ("mean", "median", "most_frequent")


def _most_frequent(values: np.ndarray) -> float:
    """The most frequent value (the smallest on ties, like pandas' ``mode``)."""
    unique, counts = np.unique(values, return_counts=True)
    return float(unique[np.argmax(counts)])


def fit_fills(
    x_train: np.ndarray, columns: dict, feature_names: list[str], strategy: str
) -> tuple[np.ndarray, dict]:
    """Fill values fitted on the train rows.

    Args:
        x_train: The train split's raw features ``[n, num_features]``, NaN where a value is missing.
        columns: The schema's raw columns (kind, vocabulary, encoding).
        feature_names: Ingest's feature names (how the columns were laid out).
        strategy: ``mean``, ``median`` or ``most_frequent`` (numeric columns; categoricals take the mode).

    Returns:
        ``(per-feature fill vector, {raw column: fill value or category})``.

    Raises:
        UserError: a column has no value in any train row.
    """
    from pipeline.data.columns import column_layout, feature_width

    if strategy not in FILL_STRATEGIES:
        raise ValueError(f"unknown fill strategy {strategy!r}")
    fill, per_column, position = np.zeros(len(feature_names)), {}, 0
    for name, spec in column_layout(columns, feature_names):
        width = feature_width(spec)
        block = np.asarray(x_train[:, position : position + width], dtype=np.float64)
        block = block[~np.isnan(block).any(axis=1)]
        if len(block) == 0:
            raise UserError(
                f"preprocess: column '{name}' has no values in the train split, so there is nothing to fill "
                "its gaps with: remove the column or set data.missing=drop"
            )
        if spec["kind"] == "numeric":
            value = {"mean": np.mean, "median": np.median, "most_frequent": _most_frequent}[
                strategy
            ](block[:, 0])
            fill[position], per_column[name] = value, float(value)
        elif (
            spec.get("encoding") == "embedding"
        ):  # an embedded categorical: one code column, 0 = outside the vocabulary
            code = _most_frequent(block[block[:, 0] > 0, 0]) if (block[:, 0] > 0).any() else 0.0
            fill[position], per_column[name] = (
                code,
                spec["vocabulary"][int(code) - 1] if code else None,
            )
        else:  # one-hot: the category most often set
            mode = int(np.argmax(block.sum(axis=0)))
            fill[position + mode], per_column[name] = 1.0, spec["vocabulary"][mode]
        position += width
    return fill, per_column


def apply_fills(rows: np.ndarray, fill: np.ndarray | None) -> np.ndarray:
    """``rows`` with every NaN replaced by its feature's fill (unchanged when ``fill`` is ``None``)."""
    if fill is None:
        return rows
    return np.where(np.isnan(rows), fill, rows)
