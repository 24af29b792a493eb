"""kp-predict on each input kind (PNG/JPEG, .npy, CSV, folders) with a SavedModel and a .tflite file, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.config import run_stage
from pipeline.data.shards import load_split
from pipeline.errors import UserError
from pipeline.export.predict import Predictor, read_image, run_predict
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
