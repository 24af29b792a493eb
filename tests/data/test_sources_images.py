"""image_folder: class sub-folders of PNG/JPEG, grey or RGB, streamed to x.npy; corrupt files
counted and named (skip) or refused in one line (fail)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers.config import data_settings, run_stage, tmp_paths
from pipeline.data.ingest import run_ingest
from pipeline.errors import UserError
from pipeline.io import read_json


def save(path, size=(12, 10), mode="RGB", value=128, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1, "RGBA": 4, "LA": 2}[mode]
    array = np.full((size[1], size[0], channels), value, dtype=np.uint8).squeeze()
    Image.fromarray(array, mode).save(path, format=fmt)
    return path


def make_folder(root, per_class=3):
    for index in range(per_class):
        save(root / "cat" / f"{index}.png", value=10 + index)
        save(root / "dog" / f"{index}.jpg", mode="L", size=(30, 20), value=200, fmt="JPEG")
    return root


def folder_settings(root, **overrides):
    return data_settings("image_folder", path=root, **overrides)


def test_grey_and_rgb_of_any_size_become_one_shape(tmp_path):
    root = make_folder(tmp_path / "images")
    manifest = run_ingest(folder_settings(root, image_size=[8, 6], channels=3), tmp_path / "raw")
    x = np.load(tmp_path / "raw" / "x.npy", mmap_mode="r")
    assert x.shape == (6, 8, 6, 3) and x.dtype == np.uint8
    assert manifest["class_names"] == ["cat", "dog"] and manifest["class_counts"] == {
        "cat": 3,
        "dog": 3,
    }
    assert np.load(tmp_path / "raw" / "y.npy").tolist() == [0, 0, 0, 1, 1, 1]
    assert (
        x[0].max() == 10 and abs(int(x[3].mean()) - 200) <= 2
    )  # grey JPEG copied to the three channels
    assert manifest["bad_records"]["count"] == 0 and manifest["schema"]["features"][0]["shape"] == [
        8,
        6,
        3,
    ]
    assert (tmp_path / "raw" / "schema.json").is_file()


def test_jpeg_orientation_tag_is_applied(tmp_path):
    root = tmp_path / "images"
    for label in ("a", "b"):
        save(root / label / "plain.png", size=(6, 4))
        (root / label).mkdir(exist_ok=True)
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
        Image.fromarray(np.zeros((6, 4, 3), dtype=np.uint8)).save(
            root / label / "camera.jpg", exif=exif
        )
    manifest = run_ingest(folder_settings(root, image_size=None), tmp_path / "raw")
    assert (
        manifest["feature_shape"] == [4, 6, 3] and manifest["num_examples"] == 4
    )  # the 4x6 JPEG displays as 6 wide


def test_channels_1_converts_rgb_to_grey(tmp_path):
    root = make_folder(tmp_path / "images", per_class=2)
    save(root / "cat" / "alpha.png", mode="RGBA")
    manifest = run_ingest(folder_settings(root, image_size=[5, 5], channels=1), tmp_path / "raw")
    assert manifest["feature_shape"] == [5, 5, 1] and manifest["num_examples"] == 5


def corrupt_folder(root):
    make_folder(root, per_class=2)
    good = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "cat" / "empty.png").write_bytes(b"")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "garbage.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    (root / "bird").mkdir()
    return root


def test_corrupt_files_are_skipped_and_named(tmp_path):
    root = corrupt_folder(tmp_path / "images")
    manifest = run_ingest(folder_settings(root, on_bad_record="skip"), tmp_path / "raw")
    records = {item["record"]: item["reason"] for item in manifest["bad_records"]["records"]}
    assert manifest["bad_records"]["count"] == 5 and manifest["num_examples"] == 4
    assert (
        "unreadable image" in records["cat/truncated.png"]
        and records["cat/empty.png"] == "empty file"
    )
    assert (
        "not a PNG/JPEG" in records["dog/notes.txt"] and "unreadable" in records["dog/garbage.jpg"]
    )
    assert records["bird/"].startswith("empty class folder") and manifest["class_names"] == [
        "cat",
        "dog",
    ]
    assert np.load(tmp_path / "raw" / "x.npy", mmap_mode="r").shape == (4, 32, 32, 3)
    assert read_json(tmp_path / "raw" / "manifest.json")["bad_records"]["policy"] == "skip"


def test_fail_policy_names_the_first_bad_file_and_writes_nothing(tmp_path):
    root = corrupt_folder(tmp_path / "images")
    with pytest.raises(UserError, match="bird/: empty class folder .*set data.on_bad_record=skip"):
        run_ingest(folder_settings(root), tmp_path / "raw")
    (root / "bird").rmdir()
    with pytest.raises(UserError, match="dog/notes.txt: not a PNG/JPEG file"):
        run_ingest(folder_settings(root), tmp_path / "raw")
    (root / "dog" / "notes.txt").unlink()
    with pytest.raises(UserError, match="cat/empty.png: empty file"):
        run_ingest(folder_settings(root), tmp_path / "raw")
    assert not (tmp_path / "raw").exists() and not list(tmp_path.glob(".raw*"))


def test_without_resizing_mixed_sizes_and_channels_are_bad_records(tmp_path):
    root = tmp_path / "images"
    for index in range(3):
        save(root / "a" / f"{index}.png", size=(6, 6))
        save(root / "b" / f"{index}.png", size=(6, 6))
    save(root / "a" / "big.png", size=(9, 6))
    save(root / "b" / "grey.png", size=(6, 6), mode="L")
    manifest = run_ingest(
        folder_settings(root, image_size=None, channels=None, on_bad_record="skip"),
        tmp_path / "raw",
    )
    records = {item["record"]: item["reason"] for item in manifest["bad_records"]["records"]}
    assert "expected 6x6: set data.image_size" in records["a/big.png"]
    assert "has 1 channels, expected 3: set data.channels" in records["b/grey.png"]
    assert manifest["feature_shape"] == [6, 6, 3] and manifest["num_examples"] == 6


@pytest.mark.parametrize(
    "layout,message",
    [
        ({}, "has no class sub-folders"),
        ({"a/readme.txt": b"x"}, "no usable examples remain|no PNG/JPEG images"),
        ({"a/x.png": b"", "b/y.png": b"junk"}, "none of the 2 images"),
    ],
)
def test_nothing_usable_is_one_line(tmp_path, layout, message):
    root = tmp_path / "images"
    root.mkdir()
    for name, payload in layout.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(payload)
    with pytest.raises(UserError, match=message) as caught:
        run_ingest(folder_settings(root, on_bad_record="skip"), tmp_path / "raw")
    assert "\n" not in str(caught.value) and not (tmp_path / "raw").exists()


def test_path_must_be_an_existing_folder(tmp_path):
    with pytest.raises(
        UserError,
        match="does not exist: place a folder with one sub-folder of images per class there",
    ):
        run_ingest(folder_settings(tmp_path / "nope"), tmp_path / "raw")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(UserError, match="is a file: point it at a folder"):
        run_ingest(folder_settings(tmp_path / "file.png"), tmp_path / "raw")
    with pytest.raises(UserError, match="data=image_folder needs data.path="):
        run_ingest(folder_settings(None), tmp_path / "raw")


def test_single_class_folder_is_refused(tmp_path):
    save(tmp_path / "images" / "only" / "a.png")
    save(tmp_path / "images" / "only" / "b.png")
    with pytest.raises(UserError, match="every example has label 'only'"):
        run_ingest(folder_settings(tmp_path / "images"), tmp_path / "raw")


def test_stage_reports_a_bad_image_in_one_line(tmp_path):
    from helpers.config import assert_one_line_error

    root = corrupt_folder(tmp_path / "images")
    (root / "bird").rmdir()
    (root / "dog" / "notes.txt").unlink()
    result = run_stage(
        "ingest", "data=image_folder", f"data.path={root}", *tmp_paths(tmp_path / "out")
    )
    assert_one_line_error(result, "cat/empty.png: empty file", "data.on_bad_record=skip")
    assert not (tmp_path / "out" / "raw").exists() and not list((tmp_path / "out").glob(".raw*"))


def test_ingest_streams_instead_of_holding_the_folder(tmp_path):
    """Python/numpy allocations while ingesting stay far below the images' total size (tracemalloc sees numpy's)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    for index in range(400):
        folder = tmp_path / "images" / ("a" if index % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), "RGB").save(
            folder / f"{index}.png", compress_level=0
        )
    total = (
        400 * 96 * 96 * 3
    )  # 11 MB; ingest's fixed overhead is ~2 MB (the checksum's 1 MB read blocks)
    run_ingest(
        folder_settings(tmp_path / "images", image_size=[8, 8]), tmp_path / "warm"
    )  # imports happen outside the trace
    tracemalloc.start()
    try:
        run_ingest(folder_settings(tmp_path / "images", image_size=[96, 96]), tmp_path / "raw")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "raw" / "x.npy").stat().st_size > total
    assert peak < total / 4, (
        f"peak {peak / 2**20:.1f} MB of traced allocations for {total / 2**20:.1f} MB of images"
    )
