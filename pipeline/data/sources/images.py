"""``image_folder``: one sub-folder per class of PNG/JPEG files, streamed to ``x.npy``.

The folder is never held in memory: files are listed, then decoded, converted to
``data.channels`` and resized to ``data.image_size`` one at a time, and appended to ``x.npy``
with plain writes (a memmap would count every written page in the process's RSS). The ``.npy``
header is written with room to spare and rewritten at the end with the number of images kept,
so skipped records need no second pass.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np

from pipeline.data.records import BadRecords, RawData, require_path
from pipeline.errors import UserError
from pipeline.progress import track
from pipeline.settings import DataSettings

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
HEADER_BYTES = 128  # a multiple of 64, as numpy aligns array data
MODES = {1: "L", 3: "RGB"}


def npy_header(shape: tuple[int, ...], dtype=np.uint8) -> bytes:
    """A version 1.0 ``.npy`` header padded to exactly :data:`HEADER_BYTES`."""
    text = repr(
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": tuple(shape),
        }
    )
    text = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def list_images(root: Path, bad: BadRecords) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(file, class index)`` for every image under ``root/<class>/``, and the class names (sorted).

    A class folder without images is a bad record (skipped, it is not a class).
    """
    folders = sorted(
        entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    if not folders:
        raise UserError(
            f"data: {root} has no class sub-folders: put each class's images in {root}/<class name>/"
        )
    files, classes = [], []
    for name in folders:
        found = []
        for path in sorted((root / name).rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((path, len(classes)))
            else:
                bad.add(
                    str(path.relative_to(root)), f"not a PNG/JPEG file (suffix '{path.suffix}')"
                )
        if found:
            files.extend(found)
            classes.append(name)
        else:
            bad.add(f"{name}/", "empty class folder (no PNG/JPEG images)")
    return files, classes


def decode(path: Path, channels: int | None, size: tuple[int, int] | None) -> np.ndarray:
    """One image as ``uint8 (height, width, channels)``; ``ValueError`` says why it is unusable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if path.stat().st_size == 0:
        raise ValueError("empty file")
    try:
        with Image.open(path, formats=("PNG", "JPEG")) as image:
            if size is not None:
                image.draft(
                    image.mode, (size[1], size[0])
                )  # JPEG: decode at reduced scale when much larger
            image.load()
            if image.format == "JPEG":
                ImageOps.exif_transpose(
                    image, in_place=True
                )  # cameras store portrait photos sideways plus a tag
            if channels is not None:
                image = image.convert(MODES[channels])
            elif image.mode not in ("L", "RGB"):
                image = image.convert(
                    "RGB" if image.mode in ("RGBA", "P", "CMYK", "YCbCr") else "L"
                )
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(
            f"unreadable image ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
        ) from None
    return array[..., np.newaxis] if array.ndim == 2 else array


def _check_shape(array: np.ndarray, expected: tuple[int, ...]) -> None:
    if array.shape[-1] != expected[-1]:
        raise ValueError(
            f"has {array.shape[-1]} channels, expected {expected[-1]}: set data.channels to convert"
        )
    if array.shape != expected:
        raise ValueError(
            f"is {array.shape[0]}x{array.shape[1]}, expected {expected[0]}x{expected[1]}: set data.image_size to resize"
        )


def load_image_folder(settings: DataSettings, staging_dir: Path | None, reference=None) -> RawData:
    """Stream every image under ``data.path/<class>/`` into ``staging_dir/x.npy``.

    Returns:
        ``RawData`` whose ``x`` is a read-only memmap of the written file (``written=True``).
    """
    if staging_dir is None:
        raise ValueError("image_folder streams to disk: pass staging_dir")
    root = require_path(settings, "a folder with one sub-folder of images per class", folder=True)
    bad = BadRecords(settings.on_bad_record, "image_folder")
    files, classes = list_images(root, bad)
    if not files:
        raise UserError(
            f"data: no PNG/JPEG images under {root}/<class>/: add images or fix data.path"
        )
    size = tuple(settings.image_size) if settings.image_size else None
    expected, labels, low, high = None, [], 255, 0
    target = Path(staging_dir) / "x.npy"
    with open(target, "wb") as out:
        out.write(b"\0" * HEADER_BYTES)
        for path, label in track(files, "ingest: decoding images", unit="image"):
            try:
                array = decode(path, settings.channels, size)
                expected = expected or array.shape
                _check_shape(array, expected)
            except ValueError as reason:
                bad.add(str(path.relative_to(root)), str(reason))
                continue
            out.write(array.tobytes())
            labels.append(label)
            low, high = min(low, int(array.min())), max(high, int(array.max()))
        if not labels:
            raise UserError(
                f"data: none of the {len(files)} images under {root} is usable (first: {bad.records[0]['record']}: "
                f"{bad.records[0]['reason']}): fix the files"
            )
        out.seek(0)
        out.write(npy_header((len(labels), *expected)))
    logger.info(
        "Decoded %d images of %d classes from %s (%d skipped)",
        len(labels),
        len(classes),
        root,
        bad.count,
    )
    data = RawData(
        x=np.load(target, mmap_mode="r"),
        y=np.asarray(labels, dtype=np.int64),
        class_names=classes,
        source="image_folder",
        value_range=(float(low), float(high)),
        written=True,
    )
    return bad.attach(data)
