"""Ingest stage: load a source, check every record, infer (and check) the schema, write the outputs.

Output contract (``paths.raw``):
- ``x.npy``: ``uint8 (n, height, width, channels)`` images or ``float32 (n, features)`` tables,
  loadable with ``np.load(..., mmap_mode="r")``; ``y.npy``: ``int64`` class indices (``float32`` targets
  under ``data.task=regression``);
- ``split.npy`` (sources with their own test split: Keras's datasets, an ``.npz`` with
  ``x_test``/``y_test``): ``int8`` per example, 1 = the source's test split (kept apart by
  ``preprocess.test_split=source``);
- ``schema.json``: see :mod:`pipeline.data.schema`;
- ``manifest.json``: source, ``task``, example count, class names and counts (regression: ``class_names``
  is empty and ``label_stats`` holds the target's min, max, mean, std), feature shape/dtype/names,
  SHA-256 checksums, the schema, bad records skipped (by path or row) and schema anomalies.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.data.records import SOURCE_SPLIT_FILE, BadRecords, RawData
from pipeline.data.schema import enforce, find_anomalies, infer_schema, load_schema
from pipeline.data.sources import load_source
from pipeline.errors import UserError
from pipeline.io import atomic_dir, sha256_file, write_json
from pipeline.settings import DataSettings

logger = logging.getLogger(__name__)


def check_shapes(data: RawData) -> RawData:
    """Whole-dataset checks (shapes, dtypes); grey images get a channel axis, tables become float32.

    Raises:
        UserError: one line naming the problem and how to fix it.
    """
    x, y, name = data.x, data.y, data.source
    if x.ndim == 3:  # grey images without a channel axis
        x = x[..., np.newaxis]
    if x.ndim not in (2, 4):
        raise UserError(
            f"data '{name}': features have shape {x.shape}: expected (n, features) or (n, height, width[, channels])"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(
            f"data '{name}': labels have shape {y.shape} for {len(x)} examples: expected one integer label per example"
        )
    if len(x) == 0:
        raise UserError(f"data '{name}': no examples: check the source file")
    if not np.issubdtype(x.dtype, np.number):
        raise UserError(f"data '{name}': features have dtype {x.dtype}: expected numbers")
    if data.task == "regression":
        if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
            raise UserError(
                f"data '{name}': targets have dtype {y.dtype}: data.task=regression needs numeric targets"
            )
    elif not np.issubdtype(y.dtype, np.integer):
        raise UserError(
            f"data '{name}': labels have dtype {y.dtype}: expected integer class indices"
            + (
                " (a numeric target? set data.task=regression)"
                if np.issubdtype(y.dtype, np.floating)
                else ""
            )
        )
    if x.ndim == 2 and x.dtype != np.float32:
        x = x.astype(np.float32)
    data.x, data.y = x, y.astype(np.float32 if data.task == "regression" else np.int64)
    return data


def _bad_rows(data: RawData, policy: str) -> np.ndarray:
    """Mask of usable rows: finite features and a label inside the class set (``fail``: one line at the first bad one).

    NaN is a missing value, not a bad record, when the source keeps gaps for preprocess to fill (``missing_allowed``).
    """
    x, y, name = data.x, data.y, data.source
    bad = BadRecords(policy, name)
    keep = np.ones(len(y), dtype=bool)
    if np.issubdtype(x.dtype, np.floating):
        usable = ~np.isinf(x) if data.missing_allowed else np.isfinite(x)
        finite = usable.reshape(len(x), -1).all(axis=1)
        if policy == "fail" and not finite.all():
            raise UserError(
                f"data '{name}': {int((~finite).sum())} examples contain NaN or inf (first at index "
                f"{int(np.argmax(~finite))}): clean or drop them, or set data.on_bad_record=skip"
            )
        for index in np.flatnonzero(~finite):
            bad.add(f"index {index}", "NaN or inf in the features")
        keep &= finite
    inside = _usable_labels(data, bad)
    bad.attach(data)
    return keep & inside


def _usable_labels(data: RawData, bad: BadRecords) -> np.ndarray:
    """Mask of labels inside the class set (classification) or finite (regression targets); the rest are bad records."""
    y, name, num_classes = data.y, data.source, len(data.class_names)
    if data.task == "regression":
        finite = np.isfinite(y)
        for index in np.flatnonzero(~finite):
            bad.add(
                f"index {index}", f"target {y[index]} is NaN or inf"
            )  # fail: raises at the first
        return finite
    inside = (y >= 0) & (y < num_classes)
    if bad.policy == "fail" and not inside.all():
        raise UserError(
            f"data '{name}': labels span {int(y.min())}..{int(y.max())}: expected 0..{num_classes - 1} for "
            f"{num_classes} classes; fix the labels or class_names, or set data.on_bad_record=skip"
        )
    for index in np.flatnonzero(~inside):
        bad.add(
            f"index {index}", f"label {int(y[index])} outside the label set 0..{num_classes - 1}"
        )
    return inside


def check_records(data: RawData, policy: str) -> RawData:
    """Drop (``skip``) or refuse (``fail``) bad records; refuse data with nothing usable or a single class.

    Raises:
        UserError: one line naming the first bad record, or saying nothing usable remains.
    """
    data = check_shapes(data)
    keep = _bad_rows(data, policy)
    if not keep.all():
        data.x, data.y, data.written = np.asarray(data.x[keep]), data.y[keep], False
        if data.is_test is not None:
            data.is_test = data.is_test[keep]
    name = data.source
    if len(data.y) == 0:
        first = data.bad_records[0] if data.bad_records else {"record": "?", "reason": "?"}
        raise UserError(
            f"data '{name}': no usable examples remain ({data.bad_record_count} bad records, first: "
            f"{first['record']}: {first['reason']}): fix the source"
        )
    present = np.unique(data.y)
    if data.task == "regression":
        if len(present) < 2:
            raise UserError(
                f"data '{name}': every example has target {float(present[0]):g}: a regression needs a target that varies"
            )
        return data
    if len(present) < 2:
        raise UserError(
            f"data '{name}': every example has label {data.class_names[int(present[0])]!r}: a classifier needs "
            f"at least two classes"
        )
    return data


def run_ingest(settings: DataSettings, output_dir: Path) -> dict:
    """Load ``settings.name``, check it and write ``x.npy``, ``y.npy``, ``schema.json``, ``manifest.json``.

    Returns:
        The manifest written.
    """
    reference = load_schema(settings.schema) if settings.schema else None
    if reference and reference.get("task", "classification") != settings.task:
        stored = reference.get("task", "classification")
        raise UserError(
            f"data: data.schema={settings.schema} holds a {stored} schema but data.task={settings.task}: set "
            f"data.task={stored}, or point data.schema at a {settings.task} run's schema"
        )
    with atomic_dir(Path(output_dir)) as tmp:
        data = check_records(load_source(settings, tmp, reference), settings.on_bad_record)
        if not data.written:
            np.save(tmp / "x.npy", data.x)
        np.save(tmp / "y.npy", data.y)
        written = ["x.npy", "y.npy"]
        if data.is_test is not None:
            np.save(tmp / SOURCE_SPLIT_FILE, np.asarray(data.is_test, dtype=np.int8))
            written.append(SOURCE_SPLIT_FILE)
        schema = infer_schema(data)
        anomalies = find_anomalies(reference, schema, data.notes) if reference else []
        if reference:
            enforce(anomalies, settings.on_anomaly, data.source, settings.schema)
        write_json(tmp / "schema.json", schema)
        manifest = {
            "source": data.source,
            "num_examples": int(len(data.y)),
            "task": data.task,
            "class_names": data.class_names,
            **(
                {"label_stats": schema["label"]["stats"]}
                if data.task == "regression"
                else {"class_counts": schema["label"]["class_counts"]}
            ),
            "feature_shape": list(data.x.shape[1:]),
            "feature_dtype": str(data.x.dtype),
            "feature_names": [feature["name"] for feature in schema["features"]]
            if data.x.ndim == 2
            else None,
            "source_test_examples": None if data.is_test is None else int(np.sum(data.is_test)),
            "checksums": {name: sha256_file(tmp / name) for name in written},
            "schema": schema,
            "validated_against": settings.schema,
            "anomalies": anomalies,
            "bad_records": {
                "policy": settings.on_bad_record,
                "count": data.bad_record_count,
                "records": data.bad_records,
            },
            **data.notes,
        }
        write_json(tmp / "manifest.json", manifest)
        del data  # an image folder's x is a memmap of tmp/x.npy: release it before the rename
    logger.info(
        "Ingested %d examples of '%s' (%d classes, shape %s, %d bad records skipped, %d anomalies)",
        manifest["num_examples"],
        manifest["source"],
        len(manifest["class_names"]),
        tuple(manifest["feature_shape"]),
        manifest["bad_records"]["count"],
        len(anomalies),
    )
    return manifest
