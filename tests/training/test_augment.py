"""Augmentation: seeded Keras layers applied on the fly in tf.data, and the TensorBoard sample grid."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from helpers.config import REPO, compose
from helpers.data import write_raw
from pipeline.data.preprocess import run_preprocess
from pipeline.data.shards import load_split
from pipeline.env import import_tensorflow
from pipeline.errors import UserError
from pipeline.training.augment import (
    GRID_SUBDIR,
    GRID_TAG,
    build_augmenter,
    grid_sample_indices,
    is_enabled,
    write_augmentation_grid,
)
from pipeline.training.inputs import make_dataset

tf = import_tensorflow()


def layer_names(augmenter) -> list[str]:
    return [type(layer).__name__ for layer in augmenter.layers]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Preprocessed 8x8x1 images (3 classes, brightness encodes the label), 2 train shards."""
    root = tmp_path_factory.mktemp("augment")
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = (rng.integers(0, 60, size=(60, 8, 8, 1)) + 60 * y[:, None, None, None]).astype(np.uint8)
    settings = dataclasses.replace(compose().preprocess, num_shards=2)
    meta = run_preprocess(settings, 0, write_raw(root / "raw", x, y), root / "processed")
    return root / "processed", meta


def test_presets_build_the_configured_layers():
    assert build_augmenter(compose().augment, 0) is None and not is_enabled(compose().augment)
    assert layer_names(build_augmenter(compose("augment=light").augment, 0)) == [
        "RandomRotation",
        "RandomZoom",
        "RandomTranslation",
    ]
    strong = compose("augment=strong").augment
    assert layer_names(build_augmenter(strong, 0, [8, 8, 1])) == [
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomTranslation",
        "RandomContrast",
        "GaussianNoise",
    ]
    assert layer_names(build_augmenter(strong, 0, [8])) == ["GaussianNoise"]  # tables: noise only
    assert build_augmenter(compose("augment=light").augment, 0, [8]) is None


def test_noise_never_touches_category_codes():
    """With data.categorical=embedding a code feature is an index: noise on it would name another category."""
    batch = np.tile(np.array([[0.5, 3.0, -1.0, 1.0]], np.float32), (64, 1))
    noisy = build_augmenter(compose("augment.noise=0.3").augment, 0, [4], codes=[1, 3])(
        batch, training=True
    ).numpy()
    assert (noisy[:, [1, 3]] == batch[:, [1, 3]]).all() and not np.allclose(
        noisy[:, [0, 2]], batch[:, [0, 2]]
    )
    assert np.array_equal(
        build_augmenter(compose("augment.noise=0.3").augment, 0, [4], codes=[1])(
            batch, training=False
        ),
        batch,
    )


@pytest.mark.parametrize(
    "override", ["augment.noise=1.5", "augment.contrast=-0.1", "augment.rotation=2"]
)
def test_out_of_range_strengths_are_one_line(override):
    key = override.split("=")[0]
    with pytest.raises(UserError, match=rf"{key}=.* is invalid: expected a number in \[0, 1\)"):
        compose(override)


def test_augmentation_is_seeded_and_changes_images():
    settings = compose("augment=strong").augment
    batch = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)

    def augment(seed):
        tf.keras.utils.set_random_seed(
            0
        )  # GaussianNoise draws from the global seed (the worker sets it)
        return build_augmenter(settings, seed)(batch, training=True).numpy()

    first, again, other = augment(3), augment(3), augment(4)
    assert first.shape == batch.shape and not np.allclose(first, batch)
    assert np.allclose(first, again) and not np.allclose(first, other)


def test_augmentation_runs_in_the_input_pipeline_and_never_touches_the_shards(images):
    directory, meta = images
    before = {path.name: path.read_bytes() for path in directory.iterdir()}
    files = [shard["file"] for shard in meta["splits"]["train"]]
    augmenter = build_augmenter(compose("augment=light").augment, 0, meta["input_shape"])
    plain = np.concatenate([x.numpy() for x, _ in make_dataset(directory, files, 8, repeat=False)])
    augmented = np.concatenate(
        [x.numpy() for x, _ in make_dataset(directory, files, 8, repeat=False, augmenter=augmenter)]
    )
    assert augmented.shape == plain.shape and not np.allclose(augmented, plain)
    assert np.allclose(plain, load_split(directory, "", files)[0])
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before


def read_images(event_dir) -> dict:
    """``{tag: (width, height, step)}`` of the image summaries TensorBoard finds in ``event_dir``."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_dir))
    accumulator.Reload()
    found = {}
    for tag in accumulator.Tags()["tensors"]:
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "images":
            event = accumulator.Tensors(tag)[0]
            width, height, png = tf.make_ndarray(event.tensor_proto)
            assert png.startswith(b"\x89PNG")
            found[tag] = (int(width), int(height), event.step)
    return found


def test_grid_of_augmented_samples_is_a_tensorboard_image(images, tmp_path):
    directory, meta = images
    files = [meta["splits"]["train"][0]["file"]]
    event_dir = write_augmentation_grid(
        compose("augment=light").augment, 0, directory, files, tmp_path, rows=2, copies=3
    )
    assert event_dir == tmp_path / GRID_SUBDIR
    assert read_images(event_dir) == {
        GRID_TAG: ((3 + 1) * 8, 2 * 8, 0)
    }  # original + 3 copies wide, 2 samples high
    assert (
        write_augmentation_grid(compose().augment, 0, directory, files, tmp_path / "none") is None
    )


def test_grid_samples_cover_several_classes_of_a_class_sorted_stream():
    labels = np.repeat([3, 1, 2], 20)  # sorted by class, as a source without a shuffle gives them
    picked = grid_sample_indices(labels, 8)
    assert picked.tolist() == [0, 20, 40, 1, 21, 41, 2, 22]  # round-robin: earliest of each class
    assert set(labels[picked]) == {1, 2, 3}
    assert np.array_equal(grid_sample_indices(labels, 8), picked), "deterministic"
    assert grid_sample_indices(labels[:20], 8).tolist() == list(range(8)), "one class: its first 8"
    assert grid_sample_indices(np.array([0.5, 1.5, 2.5]), 8).tolist() == [0, 1, 2], "regression"
    assert grid_sample_indices(np.array([[0], [0], [1]]), 2).tolist() == [0, 2]


def test_the_grid_shows_several_classes_when_the_stream_starts_with_one(
    images, tmp_path, monkeypatch
):
    """A stream of 30 records of class 0 then 30 of class 1 then class 2 (each image its label)."""
    import pipeline.training.augment as augment
    import pipeline.training.inputs as inputs

    directory, _ = images
    labels = np.repeat(np.arange(3), 30)
    stream = np.broadcast_to(labels[:, None, None, None], (90, 8, 8, 1)).astype(np.float32)
    monkeypatch.setattr(
        inputs,
        "make_dataset",
        lambda _dir, _files, batch_size, **_: tf.data.Dataset.from_tensor_slices(
            (stream, labels)
        ).batch(batch_size),
    )
    shown = []
    monkeypatch.setattr(
        augment, "augmentation_grid", lambda rows, *_: shown.append(rows) or rows[0]
    )
    write_augmentation_grid(compose("augment=light").augment, 0, directory, [], tmp_path, rows=6)
    assert shown[0][:, 0, 0, 0].tolist() == [0, 1, 2, 0, 1, 2]


@pytest.mark.slow
def test_worker_logs_the_grid_and_trains_with_balanced_class_weights(images, tmp_path):
    """The real worker function (MWMS, one process, no Ray) in a fresh interpreter."""
    from pipeline.training.worker import TrainJob, job_to_dict

    directory, meta = images
    config = compose(
        "model=mlp",
        "augment=light",
        "train.class_weight=balanced",
        "train.epochs=2",
        "train.batch_size=8",
    )
    job = TrainJob(
        processed_dir=str(directory),
        tensorboard_dir=str(tmp_path / "tb"),
        seed=0,
        model=config.model,
        train=config.train,
        augment=config.augment,
        mixed_precision=False,
        xla=False,
    )
    (tmp_path / "job.json").write_text(json.dumps(job_to_dict(job)))
    script = (
        "import json, sys, pipeline, pipeline.training.inputs as inputs\n"
        "from pipeline.training.worker import fit_model, job_from_dict\n"
        "weights, make_dataset = [], inputs.make_dataset\n"
        "def spy(*args, **kwargs):\n"
        "    weights.append(kwargs.get('class_weights'))\n"
        "    return make_dataset(*args, **kwargs)\n"
        "inputs.make_dataset = spy\n"
        "model, history = fit_model(job_from_dict(json.load(open(sys.argv[1]))), 0, 1)\n"
        "print(json.dumps({'history': history, 'class_weights': weights}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "job.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["history"]["epochs"] == [1, 2] and all(np.isfinite(output["history"]["loss"]))
    assert meta["class_weights"] in output["class_weights"]  # the train input got them
    assert None in output["class_weights"]  # validation did not
    assert GRID_TAG in read_images(tmp_path / "tb" / GRID_SUBDIR)
