"""Schema: inferred and stored at every ingest; new data validated against a stored one, anomalies
listed in the manifest, data.on_anomaly=fail|warn."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.config import data_settings, run_stage, tmp_paths
from helpers.data import write_npz
from pipeline.data.ingest import run_ingest
from pipeline.errors import UserError
from pipeline.io import read_json

TRAIN = "age,colour,label\n30,red,yes\n40,blue,no\n50,red,yes\n60,blue,no\n"


def ingest_csv(tmp_path, text, out, **overrides):
    path = tmp_path / f"{out}.csv"
    path.write_text(text)
    return run_ingest(data_settings("csv", path=path, **overrides), tmp_path / out)


def test_schema_is_inferred_and_written(tmp_path):
    manifest = ingest_csv(tmp_path, TRAIN, "first")
    schema = read_json(tmp_path / "first" / "schema.json")
    assert schema == manifest["schema"] and manifest["anomalies"] == []
    assert schema["label"] == {"class_names": ["no", "yes"], "class_counts": {"no": 2, "yes": 2}}
    assert schema["features"][0] == {"name": "age", "dtype": "float32", "min": 30.0, "max": 60.0}
    assert schema["columns"]["colour"] == {
        "kind": "categorical",
        "vocabulary": ["blue", "red"],
        "encoding": "onehot",
    }


def test_matching_data_has_no_anomalies(tmp_path):
    ingest_csv(tmp_path, TRAIN, "first")
    manifest = ingest_csv(
        tmp_path,
        "age,colour,label\n35,blue,no\n45,red,yes\n",
        "second",
        schema=str(tmp_path / "first"),
    )
    assert manifest["anomalies"] == [] and manifest["validated_against"] == str(tmp_path / "first")


def test_anomalies_fail_in_one_line_and_write_nothing(tmp_path):
    ingest_csv(tmp_path, TRAIN, "first")
    with pytest.raises(
        UserError,
        match=r"2 anomalies against the schema .*first: age: values span \[20, 90\], outside the "
        r"schema's range \[30, 60\].*data.on_anomaly=warn",
    ) as caught:
        ingest_csv(
            tmp_path,
            "age,colour,label\n20,green,no\n90,red,yes\n",
            "second",
            schema=str(tmp_path / "first/schema.json"),
        )
    assert "\n" not in str(caught.value) and not (tmp_path / "second").exists()


def test_warn_lists_anomalies_and_encodes_like_the_schema(tmp_path):
    ingest_csv(tmp_path, TRAIN, "first")
    new = "colour,extra,age,label\ngreen,1,20,no\nred,2,45,yes\n"  # columns reordered, one unexpected, a new category
    manifest = ingest_csv(
        tmp_path, new, "second", schema=str(tmp_path / "first" / "manifest.json"), on_anomaly="warn"
    )
    found = {(item["feature"], item["anomaly"].split(":")[0]) for item in manifest["anomalies"]}
    assert ("extra", "unexpected column") in found and (
        "colour",
        "values not in the schema's vocabulary",
    ) in found
    assert ("age", "values span [20, 45], outside the schema's range [30, 60]") in found
    assert manifest["feature_names"] == [
        "age",
        "colour=blue",
        "colour=red",
    ]  # the stored order and vocabulary
    assert np.load(tmp_path / "second" / "x.npy").tolist() == [[20, 0, 0], [45, 0, 1]]


def test_labels_outside_the_stored_set_are_bad_records(tmp_path):
    ingest_csv(tmp_path, TRAIN, "first")
    text = "age,colour,label\n35,blue,no\n45,red,yes\n55,red,maybe\n"
    manifest = ingest_csv(
        tmp_path, text, "second", schema=str(tmp_path / "first"), on_bad_record="skip"
    )
    assert manifest["bad_records"]["records"] == [
        {"record": "second.csv line 4", "reason": "label 'maybe' outside the label set (no, yes)"}
    ]
    with pytest.raises(UserError, match="second.csv line 4: label 'maybe' outside the label set"):
        ingest_csv(tmp_path, text, "second", schema=str(tmp_path / "first"))


def test_image_shape_and_class_changes_are_anomalies(tmp_path, tiny_images):
    x, y = tiny_images
    run_ingest(data_settings("npz", path=write_npz(tmp_path / "a.npz", x, y)), tmp_path / "first")
    bigger = np.zeros((6, 10, 10, 1), dtype=np.uint8)
    path = write_npz(
        tmp_path / "b.npz", bigger, np.array([0, 1, 0, 1, 0, 1]), class_names=np.array(["0", "1"])
    )
    manifest = run_ingest(
        data_settings("npz", path=path, schema=str(tmp_path / "first"), on_anomaly="warn"),
        tmp_path / "second",
    )
    text = json.dumps(manifest["anomalies"])
    assert "feature shape [10, 10, 1] differs from the schema's [8, 8, 1]" in text
    assert "class names ['0', '1'] differ from the schema's ['0', '1', '2']" in text


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ('{"a": 1}', "is not a schema written by ingest"),
    ],
)
def test_unusable_stored_schema_is_one_line(tmp_path, content, message):
    schema = tmp_path / "schema.json"
    if content is not None:
        schema.write_text(content)
    with pytest.raises(UserError, match=message):
        run_ingest(data_settings("digits", schema=str(schema)), tmp_path / "raw")


def test_stage_fails_on_an_anomaly_in_one_line(tmp_path):
    from helpers.config import assert_one_line_error

    ingest_csv(tmp_path, TRAIN, "first")
    (tmp_path / "new.csv").write_text("age,colour,label\n99,red,no\n30,blue,yes\n")
    result = run_stage(
        "ingest",
        "data=csv",
        f"data.path={tmp_path / 'new.csv'}",
        f"data.schema={tmp_path / 'first'}",
        *tmp_paths(tmp_path / "out"),
    )
    assert_one_line_error(
        result,
        "1 anomalies against the schema",
        "age: values span [30, 99]",
        "data.on_anomaly=warn",
    )
