"""The ``serving_raw_rows`` signature: raw CSV columns in, the pipeline's own encoding inside.

A model trained on a CSV (:mod:`pipeline.data.sources.tabular`) sees features the ingest stage built:
numeric columns as they are, text columns one-hot encoded over the schema's vocabulary (or as one
code per column, ``data.categorical=embedding``), missing values filled by preprocess with values
fitted on the train split (``data.missing``, :mod:`pipeline.data.imputation`). This signature repeats
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

from pipeline.data.columns import column_layout

RAW_ROWS_SIGNATURE = "serving_raw_rows"


def input_key(column: str) -> str:
    """The signature input key for a raw column (letters, digits, ``_``, ``.``, ``-``)."""
    key = re.sub(r"[^A-Za-z0-9_.\-]", "_", column.strip())
    return key if key and key[0].isalpha() else f"c_{key}"


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
        raise ValueError(
            f"two columns map to the same signature input key ({keys}): rename the CSV columns"
        )
    specs = [
        tf.TensorSpec([None], tf.float32 if spec["kind"] == "numeric" else tf.string, name=key)
        for key, (_, spec) in zip(keys, layout, strict=False)
    ]
    feature_index = {name: index for index, name in enumerate(meta["feature_names"])}

    def encode(name: str, spec: dict, values):
        if spec["kind"] == "numeric":
            fill = spec.get("fill")
            fill = float(train_means[feature_index[name]]) if fill is None else float(fill)
            return tf.where(tf.math.is_nan(values), tf.fill(tf.shape(values), fill), values)[
                :, tf.newaxis
            ]
        text = tf.strings.strip(values)
        if spec.get("fill") is not None:
            text = tf.where(tf.equal(text, ""), tf.fill(tf.shape(text), str(spec["fill"])), text)
        vocabulary = tf.constant([str(value) for value in spec["vocabulary"]])
        one_hot = tf.cast(tf.equal(text[:, tf.newaxis], vocabulary[tf.newaxis]), tf.float32)
        if spec.get("encoding") == "embedding":  # the code: 1 + the vocabulary index, 0 outside it
            return tf.linalg.matvec(
                one_hot, tf.range(1, len(spec["vocabulary"]) + 1, dtype=tf.float32)
            )[:, tf.newaxis]
        return one_hot

    def serve(*tensors):
        return labelled(
            tf.concat(
                [
                    encode(name, spec, values)
                    for (name, spec), values in zip(layout, tensors, strict=False)
                ],
                axis=1,
            )
        )

    return tf.function(serve, input_signature=specs)
