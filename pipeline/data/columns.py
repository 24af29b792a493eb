"""The CSV column layout: how ingest turned a table's raw columns into features.

Numeric columns become one feature each; a text column becomes one feature per vocabulary entry
(``column=value``, one-hot) or, with ``data.categorical=embedding``, one code feature. ``meta.json``
stores the columns (sorted by name) and ingest's ``feature_names``; :func:`column_layout` recovers
the file's order from them. Preprocess (which features are codes), imputation (per-column fills)
and the ``serving_raw_rows`` export signature all read the layout from here.
"""

from __future__ import annotations


def feature_width(spec: dict) -> int:
    """How many features a raw column became: 1 (numeric, or an embedded categorical's code) or its vocabulary size."""
    return (
        1
        if spec["kind"] == "numeric" or spec.get("encoding") == "embedding"
        else len(spec["vocabulary"])
    )


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
            if (
                width
                and feature_names[position : position + width] == expected
                and all(name != done for done, _ in layout)
            ):
                layout.append((name, spec))
                position += width
                break
        else:
            raise ValueError(
                f"feature '{feature_names[position]}' matches no stored column: re-run ingest and preprocess"
            )
    return layout


def embedded_features(columns: dict, feature_names: list[str]) -> list[dict]:
    """The code features of ``data.categorical=embedding`` columns: ``feature`` index, ``column`` and ``input_dim`` (categories + 1)."""
    found, position = [], 0
    for name, spec in column_layout(columns, feature_names):
        if spec.get("encoding") == "embedding":
            found.append(
                {"feature": position, "column": name, "input_dim": len(spec["vocabulary"]) + 1}
            )
        position += feature_width(spec)
    return found
