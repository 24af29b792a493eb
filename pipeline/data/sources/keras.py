"""The classic Keras datasets: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100.

Each reads ``data.path`` when set -- Keras's ``.npz`` layout, the original IDX files (MNIST,
Fashion-MNIST, gzipped or not) or CIFAR's python batches (the ``.tar.gz`` or its extracted
folder) -- and otherwise Keras's download cache (``data.cache_dir``), downloading only when the
file is absent. Offline, the error names the exact file to place and where.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import tarfile
from pathlib import Path

import numpy as np

from pipeline.data.records import RawData, require_path
from pipeline.errors import UserError
from pipeline.settings import DataSettings

logger = logging.getLogger(__name__)

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR = {  # name -> (archive, folder inside it, train files, test file, label key, meta file, class-name key)
    "cifar10": (
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        b"labels",
        "batches.meta",
        b"label_names",
    ),
    "cifar100": (
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ["train"],
        "test",
        b"fine_labels",
        "meta",
        b"fine_label_names",
    ),
    "cifar100-coarse": (
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ["train"],
        "test",
        b"coarse_labels",
        "meta",
        b"coarse_label_names",
    ),
}


def keras_download(
    filename: str, origin: str, settings: DataSettings, subdir: str = "datasets"
) -> Path:
    """A file from Keras's dataset cache (``data.cache_dir``, default ``~/.keras``), downloaded if absent.

    Raises:
        UserError: offline or unreachable, naming the exact file to place where.
    """
    cache_dir = (
        Path(settings.cache_dir).expanduser() if settings.cache_dir else Path.home() / ".keras"
    )
    target = cache_dir / subdir / filename
    if target.is_file():
        return target
    try:
        return fetch(filename, origin, cache_dir, subdir)
    except Exception as error:  # get_file raises bare Exception subclasses for network failures
        raise UserError(
            f"data: could not download {origin} ({type(error).__name__}): place {filename} at {target} "
            f"or set data.path"
        ) from None


def fetch(filename: str, origin: str, cache_dir: Path, subdir: str) -> Path:
    """Download through Keras's ``get_file`` (its cache layout, resumable, checksummed by Keras)."""
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    return Path(
        tf.keras.utils.get_file(
            filename, origin=origin, cache_dir=str(cache_dir), cache_subdir=subdir
        )
    )


def read_keras_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read Keras's ``.npz`` layout (x_train, y_train, x_test, y_test) into one pool, and its test mask."""
    layout = "arrays x_train, y_train, x_test, y_test"
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise UserError(
                    f"data: {path} lacks arrays {sorted(missing)}: expected Keras's .npz layout ({layout})"
                )
            x = np.concatenate([archive["x_train"], archive["x_test"]])
            y = np.concatenate([archive["y_train"], archive["y_test"]]).reshape(-1)
            is_test = split_mask(len(archive["y_train"]), len(archive["y_test"]))
    except (OSError, ValueError) as error:
        raise UserError(
            f"data: cannot read {path} as .npz ({str(error).splitlines()[0]}): provide Keras's .npz ({layout})"
        ) from None
    return x, y, is_test


def split_mask(num_train: int, num_test: int) -> np.ndarray:
    """``split.npy``'s content for a train part followed by a test part: 0 then 1."""
    return np.concatenate([np.zeros(num_train, np.int8), np.ones(num_test, np.int8)])


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (the original MNIST format: big-endian header, uint8 payload), gzipped or not."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise UserError(
                f"data: {path} is a damaged gzip file ({error}): download it again"
            ) from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise UserError(
            f"data: {path} is not an IDX file of unsigned bytes: expected the original MNIST-format file"
        )
    dims = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    payload = raw[4 + 4 * dims :]
    if len(payload) != int(np.prod(shape)):
        raise UserError(
            f"data: {path} is truncated ({len(payload)} of {int(np.prod(shape))} bytes for shape {shape}): download it again"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


def read_idx_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The train and/or t10k IDX pairs found in ``folder`` (any prefix, ``.gz`` or not), pooled, and the t10k mask."""
    xs, ys, masks = [], [], []
    for split in ("train", "t10k"):
        images = sorted(folder.glob(f"*{split}-images*idx3-ubyte*"))
        labels = sorted(folder.glob(f"*{split}-labels*idx1-ubyte*"))
        if images and not labels:
            raise UserError(
                f"data: {folder} has {images[0].name} but no {split}-labels-idx1-ubyte[.gz]: place it next to the images"
            )
        if labels and not images:
            raise UserError(
                f"data: {folder} has {labels[0].name} but no {split}-images-idx3-ubyte[.gz]: place it next to the labels"
            )
        if images:
            x, y = read_idx(images[0]), read_idx(labels[0])
            if len(x) != len(y):
                raise UserError(
                    f"data: {images[0].name} has {len(x)} images but {labels[0].name} {len(y)} labels: use a matching pair"
                )
            xs.append(x), ys.append(y), masks.append(np.full(len(y), split == "t10k", np.int8))
    if not xs:
        raise UserError(
            f"data: no IDX files in {folder}: place {', '.join(IDX_FILES)} (gzipped or not) there"
        )
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(masks)


def _mnist_like(
    settings: DataSettings, npz_name: str, subdir: str, files: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if settings.path:
        path = require_path(
            settings,
            f"Keras's {npz_name}",
            also=f" (or point it at a folder of the IDX files {files})",
        )
        if (
            path.is_file() and "idx" in path.name
        ):  # one of the IDX files: read the set in its folder
            path = path.parent
        x, y, is_test = read_idx_folder(path) if path.is_dir() else read_keras_npz(path)
    elif npz_name == "mnist.npz":
        x, y, is_test = read_keras_npz(keras_download(npz_name, KERAS_ORIGIN + npz_name, settings))
    else:
        folder = [
            keras_download(name, KERAS_ORIGIN + name, settings, f"datasets/{subdir}")
            for name in IDX_FILES
        ][0].parent
        x, y, is_test = read_idx_folder(folder)
    return (x[..., np.newaxis] if x.ndim == 3 else x), y.astype(np.int64), is_test


def load_mnist(settings: DataSettings, staging_dir=None, reference=None) -> RawData:
    """MNIST: ``data.path`` is Keras's ``mnist.npz`` or a folder of IDX files; else Keras's cache/download."""
    x, y, is_test = _mnist_like(settings, "mnist.npz", "", "train-images-idx3-ubyte.gz ...")
    return RawData(
        x=x, y=y, class_names=[str(c) for c in range(10)], source="mnist", is_test=is_test
    )


def load_fashion_mnist(settings: DataSettings, staging_dir=None, reference=None) -> RawData:
    """Fashion-MNIST: ``data.path`` is a folder of IDX files (or an ``.npz``); else Keras's cache/download."""
    x, y, is_test = _mnist_like(
        settings, "fashion_mnist.npz", "fashion-mnist", "train-images-idx3-ubyte.gz ..."
    )
    return RawData(
        x=x, y=y, class_names=list(FASHION_CLASSES), source="fashion_mnist", is_test=is_test
    )


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's batches are pickled dicts of numpy arrays: refuse anything else (no arbitrary code)."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar_members(path: Path, wanted: list[str]) -> dict[str, bytes]:
    """The named batch files' bytes from CIFAR's ``.tar.gz`` or its extracted folder (or its parent)."""
    found = {}
    if path.is_dir():
        for name in wanted:
            hits = [path / name] if (path / name).is_file() else sorted(path.glob(f"*/{name}"))
            if hits and hits[0].is_file():
                found[name] = hits[0].read_bytes()
        return found
    try:
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.isfile() and Path(member.name).name in wanted:
                    found[Path(member.name).name] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise UserError(
            f"data: cannot read {path} as a .tar.gz ({error}): provide CIFAR's python archive, its extracted folder or an .npz"
        ) from None
    return found


def _unpickle(name: str, raw: bytes, source: Path) -> dict:
    try:
        return _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:  # any unpickling failure means a damaged or foreign file
        raise UserError(
            f"data: {source}: {name} is not a CIFAR python batch ({type(error).__name__}: {error}): download it again"
        ) from None


def _load_cifar(
    settings: DataSettings, name: str, default_classes: list[str], variant: str | None = None
) -> RawData:
    archive_name, folder, train_files, test_file, label_key, meta_file, names_key = CIFAR[
        variant or name
    ]
    if settings.path:
        path = require_path(
            settings,
            archive_name,
            also=f" (or its extracted {folder}/ folder, or an .npz with x_train, y_train, x_test, y_test)",
        )
    else:
        path = keras_download(
            archive_name, f"https://www.cs.toronto.edu/~kriz/{archive_name}", settings
        )
    if path.is_file() and path.suffix == ".npz":
        x, y, is_test = read_keras_npz(path)
        return RawData(
            x=x,
            y=y.astype(np.int64),
            class_names=list(default_classes),
            source=name,
            is_test=is_test,
        )
    members = _cifar_members(path, [*train_files, test_file, meta_file])
    batches = [file for file in [*train_files, test_file] if file in members]
    if not batches:
        raise UserError(
            f"data: {path} holds none of CIFAR's batch files ({', '.join([*train_files, test_file])}): "
            f"point data.path at {archive_name} or its extracted {folder}/ folder"
        )
    xs, ys, masks = [], [], []
    for file in batches:
        batch = _unpickle(file, members[file], path)
        if b"data" not in batch or label_key not in batch:
            raise UserError(
                f"data: {path}: {file} lacks 'data' or '{label_key.decode()}': expected a {name} python batch"
            )
        xs.append(
            np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        )
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
        masks.append(np.full(len(ys[-1]), file == test_file, np.int8))
    classes = list(default_classes)
    if meta_file in members:
        classes = [
            item.decode()
            for item in _unpickle(meta_file, members[meta_file], path).get(names_key, [])
        ] or classes
    logger.info("Read %s batches %s from %s", name, ", ".join(batches), path)
    return RawData(
        x=np.ascontiguousarray(np.concatenate(xs)),
        y=np.concatenate(ys),
        class_names=classes,
        source=name,
        is_test=np.concatenate(masks),
    )


def load_cifar10(settings: DataSettings, staging_dir=None, reference=None) -> RawData:
    """CIFAR-10: 32x32 RGB, ten classes (names from ``batches.meta``)."""
    return _load_cifar(settings, "cifar10", CIFAR10_CLASSES)


def load_cifar100(settings: DataSettings, staging_dir=None, reference=None) -> RawData:
    """CIFAR-100: 32x32 RGB, the 100 fine classes or (``data.label_mode=coarse``) the 20 superclasses
    (names from ``meta``). A Keras-style ``.npz`` holds one labelling: the one it was saved with."""
    if settings.label_mode == "coarse":
        return _load_cifar(
            settings, "cifar100", [str(index) for index in range(20)], variant="cifar100-coarse"
        )
    return _load_cifar(settings, "cifar100", [str(index) for index in range(100)])
