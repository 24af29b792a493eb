"""The ``serving_raw_rows`` signature: raw CSV columns in, the pipeline's own encoding inside.

A model trained on a CSV (:mod:`pipeline.sources_tabular`) sees features the ingest stage built:
numeric columns as they are, text columns one-hot encoded over the schema's vocabulary (or as one
code per column, ``data.categorical=embedding``), missing values filled by preprocess with values
fitted on the train split (``data.missing``, :mod:`pipeline.imputation`). This signature repeats
that in the graph, from the vocabularies and fill values stored in ``meta.json``, so a client sends one tensor
per raw column, shape ``[batch]``: float32 for a numeric column (NaN = missing), string for a
categorical one (``""`` = missing). A value outside the vocabulary encodes as all zeros (as at
ingest). With ``data.missing=drop`` training dropped rows with missing values, so there is no fill
value: a missing number then takes the train split's mean and a missing category encodes as zeros.
Input keys are the column names with characters a signature key cannot hold replaced by ``_``
(:func:`input_key`); the SavedModel's ``raw_column_names`` variable holds the names themselves.
"""

from __future__ import annotations

import re

import numpy as np

RAW_ROWS_SIGNATURE = "serving_raw_rows"


def input_key(column: str) -> str:
    """The signature input key for a raw column (letters, digits, ``_``, ``.``, ``-``)."""
    key = re.sub(r"[^A-Za-z0-9_.\-]", "_", column.strip())
    return key if key and key[0].isalpha() else f"c_{key}"


def feature_width(spec: dict) -> int:
    """How many features a raw column became: 1 (numeric, or an embedded categorical's code) or its vocabulary size."""
    return 1 if spec["kind"] == "numeric" or spec.get("encoding") == "embedding" else len(spec["vocabulary"])


def column_layout(columns: dict, feature_names: list[str]) -> list[tuple[str, dict]]:
    """``columns`` (stored with sorted keys) in the order ingest laid their features out in ``feature_names``.

    Raises:
        ValueError: ``feature_names`` is not the encoding of ``columns``.
    """
    layout, position = [], 0
    while position < len(feature_names):
        for name, spec in columns.items():
            width = feature_width(spec)
            single = spec["kind"] == "numeric" or spec.get("encoding") == "embedding"
            expected = [name] if single else [f"{name}={value}" for value in spec["vocabulary"]]
            if width and feature_names[position:position + width] == expected and all(name != done for done, _ in layout):
                layout.append((name, spec))
                position += width
                break
        else:
            raise ValueError(f"feature '{feature_names[position]}' matches no stored column: re-run ingest and preprocess")
    return layout


def embedded_features(columns: dict, feature_names: list[str]) -> list[dict]:
    """The code features of ``data.categorical=embedding`` columns: ``feature`` index, ``column`` and ``input_dim`` (categories + 1)."""
    found, position = [], 0
    for name, spec in column_layout(columns, feature_names):
        if spec.get("encoding") == "embedding":
            found.append({"feature": position, "column": name, "input_dim": len(spec["vocabulary"]) + 1})
        position += feature_width(spec)
    return found


def has_raw_rows(meta: dict) -> bool:
    """Whether ``meta.json`` describes a CSV source's columns (so the signature can be built)."""
    return bool(meta.get("columns")) and bool(meta.get("feature_names"))


def raw_column_names(meta: dict) -> list[str]:
    """The raw CSV columns ``serving_raw_rows`` takes, in the file's order (stored in the SavedModel for clients)."""
    return [name for name, _ in column_layout(meta["columns"], meta["feature_names"])]


def raw_rows_function(tf, meta: dict, train_means: np.ndarray, labelled):
    """A ``tf.function`` taking one ``[batch]`` tensor per raw column and returning ``labelled(features)``.

    Args:
        tf: The TensorFlow module.
        meta: ``meta.json`` with ``columns`` and ``feature_names``.
        train_means: Mean raw value of every feature over the train split (fills for ``data.missing=drop``).
        labelled: ``raw features [batch, num_features] -> outputs`` (normalisation and model inside).
    """
    layout = column_layout(meta["columns"], meta["feature_names"])
    keys = [input_key(name) for name, _ in layout]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two columns map to the same signature input key ({keys}): rename the CSV columns")
    specs = [tf.TensorSpec([None], tf.float32 if spec["kind"] == "numeric" else tf.string, name=key)
             for key, (_, spec) in zip(keys, layout)]
    feature_index = {name: index for index, name in enumerate(meta["feature_names"])}

    def encode(name: str, spec: dict, values):
        if spec["kind"] == "numeric":
            fill = spec.get("fill")
            fill = float(train_means[feature_index[name]]) if fill is None else float(fill)
            return tf.where(tf.math.is_nan(values), tf.fill(tf.shape(values), fill), values)[:, tf.newaxis]
        text = tf.strings.strip(values)
        if spec.get("fill") is not None:
            text = tf.where(tf.equal(text, ""), tf.fill(tf.shape(text), str(spec["fill"])), text)
        vocabulary = tf.constant([str(value) for value in spec["vocabulary"]])
        one_hot = tf.cast(tf.equal(text[:, tf.newaxis], vocabulary[tf.newaxis]), tf.float32)
        if spec.get("encoding") == "embedding":  # the code: 1 + the vocabulary index, 0 outside it
            return tf.linalg.matvec(one_hot, tf.range(1, len(spec["vocabulary"]) + 1, dtype=tf.float32))[:, tf.newaxis]
        return one_hot

    def serve(*tensors):
        return labelled(tf.concat([encode(name, spec, values) for (name, spec), values in zip(layout, tensors)], axis=1))

    return tf.function(serve, input_signature=specs)
