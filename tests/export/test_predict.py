"""kp-predict on each input kind (PNG/JPEG, .npy, CSV, folders walked recursively) with a SavedModel and a
.tflite file, --labels-from-folders scoring on class folders, and their one-line errors."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.config import run_stage
from pipeline.data.shards import load_split
from pipeline.errors import UserError
from pipeline.export import predict as predict_module
from pipeline.export.predict import (
    Predictor,
    format_score,
    read_image,
    run_predict,
    run_score,
    score_labels,
)
from pipeline.export.saved_model import raw_inputs
from stages.predict import main


@pytest.fixture(scope="module")
def digits_inputs(exported_mlp, tmp_path_factory):
    """Four raw test digits as a 24x24 RGB PNG, a JPEG, a .npy batch and a CSV with a header; their SavedModel classes."""
    import tensorflow as tf

    config, out, _ = exported_mlp
    meta = json.loads((Path(config.paths.processed) / "meta.json").read_text())
    x, _ = load_split(Path(config.paths.processed), "test")
    raw = raw_inputs(x[:4], meta["normalization"])
    signature = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    classes = signature(inputs=tf.constant(raw))["predicted_class"].numpy().astype(str).tolist()
    folder = tmp_path_factory.mktemp("inputs")
    pixels = np.round(raw[..., 0] / 16 * 255).astype(np.uint8)
    Image.fromarray(pixels[0]).resize((24, 24), Image.Resampling.NEAREST).convert("RGB").save(
        folder / "a.png"
    )
    Image.fromarray(pixels[1]).resize((16, 16), Image.Resampling.NEAREST).save(
        folder / "b.jpg", quality=100
    )
    np.save(folder / "batch.npy", raw)
    rows = "\n".join(",".join(f"{value:g}" for value in example.ravel()) for example in raw[:2])
    (folder / "rows.csv").write_text(",".join(f"pixel_{i}" for i in range(64)) + "\n" + rows + "\n")
    return out, folder, classes


def test_saved_model_on_every_input_kind_of_a_folder(digits_inputs, capsys):
    out, folder, classes = digits_inputs
    main([str(out / "saved_model"), str(folder), "--json", "-k", "2"])
    results = json.loads(capsys.readouterr().out)
    by_input = {Path(result["input"]).name: result["top"] for result in results}
    assert list(by_input) == [
        "a.png",
        "b.jpg",
        "batch.npy:1",
        "batch.npy:2",
        "batch.npy:3",
        "batch.npy:4",
        "rows.csv:1",
        "rows.csv:2",
    ]
    assert [by_input[f"batch.npy:{i}"][0]["class"] for i in range(1, 5)] == classes
    assert [by_input[f"rows.csv:{i}"][0]["class"] for i in (1, 2)] == classes[:2]
    assert (
        by_input["a.png"][0]["class"] == classes[0] and by_input["b.jpg"][0]["class"] == classes[1]
    )
    assert all(
        len(top) == 2 and top[0]["probability"] >= top[1]["probability"]
        for top in by_input.values()
    )


def test_tflite_agrees_and_prints_top_k_lines(digits_inputs, capsys):
    out, folder, classes = digits_inputs
    main([str(out / "model.tflite"), str(folder / "a.png"), str(folder / "batch.npy"), "-k", "3"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith(f"{folder / 'a.png'}: {classes[0]} (")
    assert [line.split(": ")[1].split(" ")[0] for line in lines[1:]] == classes
    assert all(line.count("(") == 3 for line in lines)


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda d: (d / "short.csv").write_text("1,2,3\n"),
            r"short.csv row 1 has 3 columns: the model takes 64 raw values per row",
        ),
        (
            lambda d: np.save(d / "odd.npy", np.zeros((5, 5))),
            r"odd.npy has shape \[5, 5\]: the model takes \[8, 8, 1\]",
        ),
        (lambda d: (d / "notes.txt").write_text("x"), r"notes.txt: unknown input format '.txt'"),
        (
            lambda d: (d / "broken.png").write_bytes(b"not a png"),
            r"cannot read the image .*broken.png .*pass a valid PNG or JPEG",
        ),
    ],
)
def test_bad_inputs_are_one_line(digits_inputs, tmp_path, capsys, make, message):
    out, _, _ = digits_inputs
    make(tmp_path)
    (bad,) = list(tmp_path.iterdir())
    with pytest.raises(SystemExit) as exited:
        main([str(out / "saved_model"), str(bad), "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and error.startswith("error: predict: ") and "\n" not in error
    assert __import__("re").search(message, error), error


def test_bad_models_are_one_line(tmp_path):
    corrupt = tmp_path / "model.tflite"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match=r"model.tflite is not a valid TFLite model .*re-export it"):
        run_predict(corrupt, [tmp_path], 3)
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(
        UserError,
        match=r"model.onnx: unknown model format '.onnx': pass a SavedModel directory or a .tflite file",
    ):
        run_predict(tmp_path / "model.onnx", [tmp_path], 3)
    with pytest.raises(UserError, match=r"has no saved_model.pb"):
        run_predict(tmp_path, [tmp_path], 3)


def test_an_image_for_a_table_model_cannot_be_resized(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x.png")
    table = Predictor(tmp_path, [8], ["a", "b"], 1.0, lambda x: x)
    with pytest.raises(
        UserError,
        match=r"x.png is an image but the model takes inputs of shape \[8\]: pass .npy arrays or CSV rows",
    ):
        read_image(tmp_path / "x.png", table)


def test_cli_runs_as_a_module(digits_inputs):
    out, folder, classes = digits_inputs
    result = run_stage(
        "predict",
        str(out / "tflite" / "int8.tflite"),
        str(folder / "batch.npy"),
        "--json",
        "-k",
        "1",
    )
    assert result.returncode == 0, result.stderr
    top = [item["top"][0]["class"] for item in json.loads(result.stdout)]
    assert np.mean([a == b for a, b in zip(top, classes, strict=False)]) >= 0.75
    failed = run_stage("predict", str(out / "nothing"), str(folder))
    assert failed.returncode == 2 and failed.stderr.strip().splitlines()[-1].startswith(
        "error: predict: model "
    )


def test_folders_are_walked_recursively_in_sorted_order(digits_inputs, tmp_path, capsys):
    out, _, _ = digits_inputs
    example = np.zeros((8, 8, 1), np.float32)
    for relative in ("z.npy", "b/deeper/y.npy", "a.npy", "b/x.npy", ".hidden/skip.npy"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / relative, example)
    (tmp_path / "b" / "notes.txt").write_text("not an input")
    main([str(out / "saved_model"), str(tmp_path), "--json", "--no-progress"])
    inputs = [Path(result["input"]) for result in json.loads(capsys.readouterr().out)]
    assert [path.relative_to(tmp_path).as_posix() for path in inputs] == [
        "a.npy",
        "b/deeper/y.npy",
        "b/x.npy",
        "z.npy",
    ]


@pytest.fixture(scope="module")
def labelled_digits(exported_mlp, tmp_path_factory):
    """20 raw test digits as .npy files under labelled/<class>/ (two in a nested folder, three filed
    under the wrong class so the confusion matrix has off-diagonal cells): ``(exports, folder, raw, labels)``."""
    config, out, _ = exported_mlp
    meta = json.loads((Path(config.paths.processed) / "meta.json").read_text())
    x, y = load_split(Path(config.paths.processed), "test")
    raw = raw_inputs(x[:20], meta["normalization"])
    labels = [str(meta["class_names"][int(label)]) for label in y[:20]]
    labels[:3] = labels[1:4]  # mislabelled on purpose
    folder = tmp_path_factory.mktemp("labelled")
    for index, (example, label) in enumerate(zip(raw, labels, strict=True)):
        nested = "batch/" if index in (5, 6) else ""
        path = folder / label / f"{nested}{index:02d}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, example)
    return out, folder, raw, labels


def direct_predictions(artifact: Path, raw: np.ndarray) -> np.ndarray:
    """Class indices straight from the artifact, without kp-predict."""
    if artifact.suffix == ".tflite":
        from pipeline.export.tflite import tflite_predictor

        return tflite_predictor(artifact)(raw).argmax(axis=1)
    import tensorflow as tf

    signature = tf.saved_model.load(str(artifact)).signatures["serving_default"]
    return signature(inputs=tf.constant(raw))["probabilities"].numpy().argmax(axis=1)


@pytest.mark.parametrize("artifact", ["saved_model", "model.tflite", "tflite/int8.tflite"])
def test_labels_from_folders_scores_any_artifact(labelled_digits, artifact):
    out, folder, raw, labels = labelled_digits
    score = run_score(out / artifact, [folder], progress=False)
    names = [str(index) for index in range(10)]
    predicted = [names[index] for index in direct_predictions(out / artifact, raw)]
    pairs = Counter(zip(labels, predicted, strict=True))
    assert score["model"] == str(out / artifact) and score["examples"] == 20
    assert score["accuracy"] == pytest.approx(np.mean(np.array(labels) == np.array(predicted)))
    assert score["accuracy"] < 1.0  # the mislabelled three
    assert score["per_class"] == {
        name: {
            "recall": pytest.approx(pairs[name, name] / labels.count(name)),
            "support": labels.count(name),
        }
        for name in names
        if name in labels
    }
    shown = score["confusion"]["labels"]
    assert shown == [name for name in names if name in labels or name in predicted]
    assert {
        (true, guess): count
        for true, row in zip(shown, score["confusion"]["matrix"], strict=True)
        for guess, count in zip(shown, row, strict=True)
        if count
    } == dict(pairs)


def test_labels_from_folders_cli_prints_a_table_and_json(labelled_digits, capsys):
    out, folder, _, _ = labelled_digits
    main([str(out / "saved_model"), str(folder), "--labels-from-folders", "--no-progress"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r".*saved_model: accuracy 0\.\d{4} on 20 examples", lines[0]), lines[0]
    assert lines[1] == "recall per class:" and re.fullmatch(
        r"  \d  [01]\.\d{4}  \(\d+ examples?\)", lines[2]
    )
    table = lines[lines.index("confusion (rows: true class, columns: predicted):") + 1 :]
    assert table[0].split() == ["true\\pred", *(row.split()[0] for row in table[1:])]
    assert sum(int(cell) for row in table[1:] for cell in row.split()[1:]) == 20
    main([str(out / "model.tflite"), str(folder), "--labels-from-folders", "--json"])
    score = json.loads(capsys.readouterr().out)
    assert set(score) == {"model", "examples", "accuracy", "per_class", "confusion"}
    assert score["examples"] == 20 and set(score["confusion"]) == {"labels", "matrix"}


def test_score_labels_and_a_table_for_many_classes():
    names = [f"class_{index:02d}" for index in range(30)]
    score = score_labels([0, 0, 1, 1, 2], [0, 5, 1, 1, 5], names)
    assert score["accuracy"] == pytest.approx(0.6) and score["examples"] == 5
    assert score["per_class"] == {
        "class_00": {"recall": 0.5, "support": 2},
        "class_01": {"recall": 1.0, "support": 2},
        "class_02": {"recall": 0.0, "support": 1},
    }
    assert score["confusion"] == {
        "labels": ["class_00", "class_01", "class_02", "class_05"],
        "matrix": [[1, 0, 0, 1], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]],
    }
    wide = score_labels(list(range(25)), [(index + 1) % 25 for index in range(25)], names)
    text = format_score({"model": "m", **wide}).splitlines()
    assert (
        "most frequent confusions (25 classes, too many for a table; --json has the matrix):"
        in text
    )
    assert "  class_00 -> class_01: 1" in text and len(text) == 1 + 1 + 25 + 1 + 20
    clashing = [
        f"a_long_class_name_{index}" for index in range(3)
    ]  # alike when cut to 12 characters
    table = format_score(
        {"model": "m", **score_labels([0, 1, 2], [0, 2, 2], clashing)}
    ).splitlines()
    assert table[-5:] == [
        "confusion (rows: true class, columns: predicted, numbered as the rows):",
        "true\\pred" + " " * 14 + "  [1]  [2]  [3]",
        "[1] a_long_class_name_0    1    0    0",
        "[2] a_long_class_name_1    0    0    1",
        "[3] a_long_class_name_2    0    0    1",
    ]


def make_unknown_class(folder: Path) -> None:
    (folder / "3").mkdir()
    np.save(folder / "3" / "a.npy", np.zeros((8, 8, 1), np.float32))
    (folder / "cat").mkdir()


def make_empty_class(folder: Path) -> None:
    (folder / "4" / "nested").mkdir(parents=True)
    (folder / "4" / "notes.txt").write_text("no examples")


@pytest.mark.parametrize(
    "make, message",
    [
        (
            make_unknown_class,
            r"the sub-folder .*/cat is not one of the model's classes: rename it to one of "
            r"0, 1, 2, 3, 4, 5, 6, 7, 8, 9 or move it out of ",
        ),
        (
            make_empty_class,
            r"the class folder .*/4 has no .png, .jpg, .jpeg, .npy, .csv files \(its sub-folders included\)",
        ),
        (lambda folder: None, r"the folder .* has no class sub-folders: .*pass its parent folder"),
        (
            lambda folder: (folder / "a.npy").write_bytes(b""),
            r"--labels-from-folders takes folders, but .*/a.npy is a file",
        ),
    ],
)
def test_labelled_folder_errors_are_one_line(exported_mlp, tmp_path, capsys, make, message):
    _, out, _ = exported_mlp
    make(tmp_path)
    target = tmp_path / "a.npy" if (tmp_path / "a.npy").is_file() else tmp_path
    with pytest.raises(SystemExit) as exited:
        main([str(out / "saved_model"), str(target), "--labels-from-folders"])
    error = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and error.startswith("error: predict: ") and "\n" not in error
    assert re.search(message, error), error


def test_an_empty_folder_to_predict_on_is_one_line(exported_mlp, tmp_path):
    _, out, _ = exported_mlp
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(
        UserError, match=r"no .png, .jpg, .jpeg, .npy, .csv files in the folder .*empty or its"
    ):
        run_predict(out / "saved_model", [tmp_path / "empty"], 3)


def test_labels_from_folders_needs_a_classifier(tmp_path, monkeypatch):
    regression = Predictor(tmp_path, [3], [], 1.0, lambda x: x[:, :1], task="regression")
    monkeypatch.setattr(predict_module, "load_predictor", lambda path: regression)
    with pytest.raises(UserError, match=r"is a regression model .*scores classifiers only"):
        run_score(tmp_path, [tmp_path])
