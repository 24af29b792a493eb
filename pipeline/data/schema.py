"""The data's schema: inferred at every ingest, and new data validated against a stored one.

The TFX ExampleValidator idea without the ceremony: ``schema.json`` records feature names,
dtypes, shapes, value ranges, table columns (kind, vocabulary, encoding), the ``task`` and the
label set with class counts (regression: no classes; the target's min, max, mean and std, and new
targets outside the stored range are an anomaly). When ``data.schema`` points at a stored schema
(e.g. a previous run's ``data/raw/schema.json``), ingest lists every disagreement as an anomaly in ``manifest.json`` and
``data.on_anomaly`` decides whether the run fails or only warns.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline.data.records import RawData
from pipeline.errors import UserError

logger = logging.getLogger(__name__)


def _feature_ranges(data: RawData) -> list[dict]:
    x = data.x
    if x.ndim == 2:
        names = data.feature_names or [f"feature_{index}" for index in range(x.shape[1])]
        present = ~np.isnan(x)  # missing values (kept for preprocess to fill) have no range
        low = np.where(present, x, np.inf).min(axis=0, initial=np.inf)
        high = np.where(present, x, -np.inf).max(axis=0, initial=-np.inf)
        return [
            {
                "name": name,
                "dtype": str(x.dtype),
                "min": float(a) if np.isfinite(a) else None,
                "max": float(b) if np.isfinite(b) else None,
            }
            for name, a, b in zip(names, low, high, strict=False)
        ]
    low, high = data.value_range if data.value_range else (float(x.min()), float(x.max()))
    return [
        {
            "name": "image",
            "dtype": str(x.dtype),
            "shape": list(x.shape[1:]),
            "min": float(low),
            "max": float(high),
        }
    ]


def infer_label(data: RawData) -> dict:
    """The label set with class counts, or (regression) no classes and the target's ``stats``: min, max, mean, std."""
    if data.task == "regression":
        y = np.asarray(data.y, dtype=np.float64)
        return {
            "class_names": [],
            "stats": {
                "min": float(y.min()),
                "max": float(y.max()),
                "mean": float(y.mean()),
                "std": float(y.std()),
            },
        }
    counts = np.bincount(data.y, minlength=len(data.class_names))
    return {
        "class_names": list(data.class_names),
        "class_counts": {
            name: int(count) for name, count in zip(data.class_names, counts, strict=False)
        },
    }


def infer_schema(data: RawData) -> dict:
    """The schema of validated ``data`` (see module docstring for the fields)."""
    schema = {
        "source": data.source,
        "task": data.task,
        "num_examples": int(len(data.y)),
        "feature_shape": list(data.x.shape[1:]),
        "feature_dtype": str(data.x.dtype),
        "features": _feature_ranges(data),
        "label": infer_label(data),
    }
    if data.columns is not None:
        schema["columns"] = data.columns
    return schema


def load_schema(path: str) -> dict:
    """A stored schema: ``schema.json``, a ``manifest.json`` holding one, or a folder with ``schema.json``.

    Raises:
        UserError: missing or unreadable file, naming it.
    """
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "schema.json"
    if not file.is_file():
        raise UserError(
            f"data: data.schema={path} does not exist: point it at a previous run's schema.json (e.g. data/raw/schema.json)"
        )
    try:
        stored = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(
            f"data: data.schema={path} is not valid JSON ({error}): point it at a schema.json written by ingest"
        ) from None
    stored = stored.get("schema", stored) if isinstance(stored, dict) else stored
    if not isinstance(stored, dict) or not {"features", "label", "feature_shape"} <= set(stored):
        raise UserError(
            f"data: data.schema={path} is not a schema written by ingest (needs features, label, feature_shape)"
        )
    return stored


def _compare_features(stored: dict, current: dict) -> list[dict]:
    anomalies = []
    old = {feature["name"]: feature for feature in stored["features"]}
    new = {feature["name"]: feature for feature in current["features"]}
    for name in sorted(old.keys() - new.keys()):
        anomalies.append(
            {
                "feature": name,
                "anomaly": "missing: the schema has this feature, the new data does not",
            }
        )
    for name in sorted(new.keys() - old.keys()):
        anomalies.append(
            {
                "feature": name,
                "anomaly": "unexpected: the new data has this feature, the schema does not",
            }
        )
    for name in sorted(old.keys() & new.keys()):
        before, after = old[name], new[name]
        if before.get("shape") != after.get("shape") or before["dtype"] != after["dtype"]:
            anomalies.append(
                {
                    "feature": name,
                    "anomaly": f"type {after['dtype']} {after.get('shape', '')} differs from the "
                    f"schema's {before['dtype']} {before.get('shape', '')}".replace("  ", " "),
                }
            )
        elif None in (after["min"], before["min"]):
            continue  # a feature with no values on one side: its absence is reported as a missing column
        elif after["min"] < before["min"] or after["max"] > before["max"]:
            anomalies.append(
                {
                    "feature": name,
                    "anomaly": f"values span [{after['min']:g}, {after['max']:g}], outside the "
                    f"schema's range [{before['min']:g}, {before['max']:g}]",
                }
            )
    return anomalies


def _compare_columns(notes: dict) -> list[dict]:
    """Table columns the source found missing, unexpected or with unseen categories (see ``sources_tabular``)."""
    anomalies = [
        {"feature": name, "anomaly": "missing column: the schema has it, the new data does not"}
        for name in notes.get("missing_columns", [])
    ]
    anomalies += [
        {"feature": name, "anomaly": "unexpected column: not in the schema (ignored)"}
        for name in notes.get("unexpected_columns", [])
    ]
    anomalies += [
        {
            "feature": name,
            "anomaly": f"values not in the schema's vocabulary: {', '.join(values[:10])}",
        }
        for name, values in notes.get("unseen_categories", {}).items()
    ]
    return anomalies


def _compare_targets(before: dict, after: dict) -> list[dict]:
    """A regression target outside the stored range (a model extrapolates there)."""
    if after["min"] < before["min"] or after["max"] > before["max"]:
        return [
            {
                "feature": "label",
                "anomaly": f"target values span [{after['min']:g}, {after['max']:g}], outside the "
                f"schema's range [{before['min']:g}, {before['max']:g}]",
            }
        ]
    return []


def find_anomalies(stored: dict, current: dict, notes: dict | None = None) -> list[dict]:
    """Every way ``current`` (inferred from new data) disagrees with the ``stored`` schema.

    ``notes`` are the source's findings about raw columns (``RawData.notes``).
    """
    anomalies = []
    if stored["feature_shape"] != current["feature_shape"]:
        anomalies.append(
            {
                "feature": "*",
                "anomaly": f"feature shape {current['feature_shape']} differs from the schema's {stored['feature_shape']}",
            }
        )
    anomalies += _compare_features(stored, current)
    anomalies += _compare_columns(notes or {})
    old_task, new_task = stored.get("task", "classification"), current.get("task", "classification")
    if old_task != new_task:
        return anomalies + [
            {
                "feature": "label",
                "anomaly": f"task {new_task} differs from the schema's {old_task}: set data.task={old_task}",
            }
        ]
    if new_task == "regression":
        return anomalies + _compare_targets(stored["label"]["stats"], current["label"]["stats"])
    old_names, new_names = stored["label"]["class_names"], current["label"]["class_names"]
    if old_names != new_names:
        anomalies.append(
            {
                "feature": "label",
                "anomaly": f"class names {new_names[:10]} differ from the schema's {old_names[:10]}",
            }
        )
    absent = [
        name
        for name, count in current["label"]["class_counts"].items()
        if count == 0 and name in old_names
    ]
    if absent:
        anomalies.append(
            {"feature": "label", "anomaly": f"no examples of class(es) {', '.join(absent[:10])}"}
        )
    return anomalies


def enforce(anomalies: list[dict], policy: str, source: str, schema_path: str) -> None:
    """``fail``: one line naming the first anomaly; ``warn``: log each (the manifest lists them either way)."""
    if not anomalies:
        logger.info("Data matches the schema %s", schema_path)
        return
    first = anomalies[0]
    if policy == "fail":
        raise UserError(
            f"data '{source}': {len(anomalies)} anomalies against the schema {schema_path} (first: {first['feature']}: "
            f"{first['anomaly']}): fix the data, or set data.on_anomaly=warn"
        )
    for anomaly in anomalies:
        logger.warning("Schema anomaly: %s: %s", anomaly["feature"], anomaly["anomaly"])
