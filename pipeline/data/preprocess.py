"""Preprocess stage: seeded stratified split, train-only normalisation, streamed TFRecord shards.

Input (``paths.raw``, written by ingest): ``x.npy`` (opened memory-mapped and read in chunks whose
float64 copy is :data:`CHUNK_BYTES`, never whole), ``y.npy`` (int64 labels), ``manifest.json``, and
optionally ``split.npy`` (one integer per example: 0 = train pool, 1 = the source's own test
split), used when ``preprocess.test_split=source``.

Output contract (``paths.processed``):
- ``{split}-{index:05d}-of-{count:05d}.tfrecord`` shards of ``tf.train.Example`` records, one per
  example: ``x`` (bytes: the *normalised* features as little-endian float32, C order, shape
  ``meta.input_shape``) and ``y`` (int64 label). ``train`` and ``val`` have ``num_shards`` shards
  each, ``test`` one. Each split is written in one seeded global permutation dealt round-robin to
  its shards (:func:`write_shards`), so every shard and every window of one is a uniform mix of
  the classes whatever the source's order; shard sizes differ by at most one; no shard is empty.
- ``meta.json``: ``format`` ("tfrecord"), ``source``, ``class_names``, ``input_shape``,
  ``normalization`` (method, offset, scale: fitted on the train split only; per feature for
  tables, one scalar for images), ``seed``, ``test_split``, ``splits`` (per split: shard ``file``
  names and ``num_examples``), ``class_counts`` (train) and ``class_weights`` (balanced, per class
  index: ``n / (classes * count)``; used when ``train.class_weight=balanced``); for a CSV source
  also ``columns`` (kind, vocabulary, fill value per raw column), ``feature_names`` (ingest's) and
  ``imputation`` (``data.missing``'s fills fitted on the train split: per feature and per column;
  ``null`` under ``drop``) and ``embeddings`` (``data.categorical=embedding``: each code feature's
  index, column and ``input_dim``; codes are never normalised). Missing cells (NaN in ``x.npy``) are filled before normalising.

Normalisation is applied here, so training, evaluation and export read the same numbers.
Augmentation is not: it runs on the fly in each worker's ``tf.data`` pipeline (pipeline.training.augment).

A regression target (ingest's ``task: regression``, float32 ``y.npy``): ``y`` is a float
(``float_list``), ``meta.json`` has ``task: regression``, no classes (empty ``class_counts`` and
``class_weights``) and ``target``: the train split's mean, std, min and max, which the model
rescales its linear output by (:mod:`pipeline.training.models`). Its splits are stratified on the target's
quantile bins (:func:`strata`) rather than drawn by a plain shuffle: with a few hundred rows a
plain shuffle can leave the test split without the target's tails; binning costs nothing and is
just as seeded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.data.columns import embedded_features
from pipeline.data.imputation import FILL_STRATEGIES, apply_fills, fit_fills
from pipeline.data.records import SOURCE_SPLIT_FILE
from pipeline.data.shards import FORMAT, TFRecordWriter, serialize_example
from pipeline.errors import UserError
from pipeline.io import atomic_dir, read_json, write_json
from pipeline.progress import Progress
from pipeline.settings import PreprocessSettings

logger = logging.getLogger(__name__)

CHUNK_BYTES = (
    32 << 20
)  # float64 working copy per chunk (~4x that with temporaries), whatever x.npy's dtype
TARGET_BINS = 10  # quantile bins a regression target is stratified on


def strata(y: np.ndarray) -> np.ndarray:
    """What a split stratifies on: the class indices, or a float target's quantile bin (up to
    :data:`TARGET_BINS` bins of equal size, at least 10 examples each), so every split spans the target's range."""
    if np.issubdtype(y.dtype, np.integer):
        return y
    bins = int(min(TARGET_BINS, len(y) // 10))
    if bins < 2:
        return np.zeros(len(y), dtype=np.int64)
    edges = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, y, side="right")


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng) -> np.ndarray:
    """How many of ``n_draws`` go to each class: the proportional share floored, the rest to the
    largest remainders, ties broken by ``rng`` (scikit-learn's ``_approximate_mode``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def stratified_split(
    indices: np.ndarray, strata_of: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` of ``indices``: scikit-learn's ``train_test_split(indices,
    test_size=test_fraction, stratify=strata_of, random_state=seed)``, draw for draw (its
    ``StratifiedShuffleSplit``; ``tests/data/test_preprocess.py`` compares them), in numpy:
    importing ``sklearn.model_selection`` cost the stage ~1.9 of its ~2.6 s of CPU.

    Raises:
        ValueError: the split cannot be stratified, with scikit-learn's reason.
    """
    n_samples = len(indices)
    n_test = int(np.ceil(test_fraction * n_samples))
    n_train = n_samples - n_test
    if n_train <= 0:
        raise ValueError(
            f"with {n_samples} examples and test_size={test_fraction} the train side is empty"
        )
    classes, class_of, class_counts = np.unique(strata_of, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        raise ValueError(
            "The least populated classes in y have only 1 member, which is too few: "
            f"{classes[class_counts < 2].tolist()}"
        )
    for side, size in (("train", n_train), ("test", n_test)):
        if size < len(classes):
            raise ValueError(
                f"The {side}_size = {size} should be greater or equal to the number of "
                f"classes = {len(classes)}"
            )
    members = np.split(np.argsort(class_of, kind="stable"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _approximate_mode(class_counts, n_train, rng)
    test_counts = _approximate_mode(class_counts - train_counts, n_test, rng)
    train, test = [], []
    for index, count in enumerate(class_counts):
        shuffled = members[index].take(rng.permutation(count), mode="clip")
        train.extend(shuffled[: train_counts[index]])
        test.extend(shuffled[train_counts[index] : train_counts[index] + test_counts[index]])
    indices = np.asarray(indices)
    return indices[rng.permutation(train)], indices[rng.permutation(test)]


def split_indices(
    y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices, identical for the same labels and seed (float targets: by quantile bin)."""
    indices, y = np.arange(len(y)), strata(y)
    try:
        rest, test = stratified_split(indices, y, test_fraction, seed)
        val_share = val_fraction / (1.0 - test_fraction)
        train, val = stratified_split(rest, y[rest], val_share, seed)
    except ValueError as error:
        raise UserError(
            f"preprocess: cannot split {len(y)} examples stratified ({error}): use more data or smaller val/test fractions"
        ) from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def source_split_indices(
    y: np.ndarray, is_test: np.ndarray, val_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """The source's own test split kept apart; val is a stratified ``val_fraction`` of the train pool."""
    pool, test = np.flatnonzero(is_test == 0), np.flatnonzero(is_test == 1)
    y = strata(y)
    try:
        train, val = stratified_split(pool, y[pool], val_fraction, seed)
    except ValueError as error:
        raise UserError(
            f"preprocess: cannot split the {len(pool)}-example train pool stratified ({error}): use more data or a smaller preprocess.val_fraction"
        ) from None
    return {"train": np.sort(train), "val": np.sort(val), "test": test}


def read_source_split(input_dir: Path, num_examples: int) -> np.ndarray:
    """``split.npy`` checked: one 0 (train pool) or 1 (test) per example, both present.

    Raises:
        UserError: the file is missing, has the wrong length or values, or leaves a side empty.
    """
    path = Path(input_dir) / SOURCE_SPLIT_FILE
    if not path.is_file():
        raise UserError(
            f"preprocess: preprocess.test_split=source but {path} is missing: this source has no own test split; use preprocess.test_split=auto"
        )
    is_test = np.load(path)
    if is_test.shape != (num_examples,) or not np.isin(is_test, (0, 1)).all():
        raise UserError(
            f"preprocess: {path} has shape {is_test.shape} and values {np.unique(is_test)[:5].tolist()}: "
            f"expected one 0 (train pool) or 1 (test) per example ({num_examples}); rerun ingest"
        )
    num_test = int(is_test.sum())
    if num_test in (0, num_examples):
        raise UserError(
            f"preprocess: {path} marks {num_test} of {num_examples} examples as test: need both test and train-pool examples; "
            "use preprocess.test_split=auto"
        )
    return is_test


def choose_splits(
    settings: PreprocessSettings, seed: int, input_dir: Path, y: np.ndarray
) -> dict[str, np.ndarray]:
    """Split indices as ``preprocess.test_split`` asks."""
    if settings.test_split == "source":
        return source_split_indices(
            y, read_source_split(input_dir, len(y)), settings.val_fraction, seed
        )
    if (Path(input_dir) / SOURCE_SPLIT_FILE).is_file():
        logger.info(
            "The source has its own test split; splitting all examples (set preprocess.test_split=source to keep it apart)"
        )
    return split_indices(y, settings.val_fraction, settings.test_fraction, seed)


def iter_chunks(
    x: np.ndarray, indices: np.ndarray | None = None, fill: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(indices, rows)`` of ``x`` in pieces of :data:`CHUNK_BYTES`, in the order ``indices`` gives, NaN replaced by ``fill``.

    A memmap is read lazily, one piece at a time; each piece is read in ascending row order (so an
    unordered ``indices``, e.g. a permutation, still reads the file front to back within a piece)
    and handed back in the order asked for.
    """
    indices = np.arange(len(x)) if indices is None else np.asarray(indices)
    row_bytes = max(1, int(np.prod(x.shape[1:], dtype=np.int64)) * 8)
    step = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, len(indices), step):
        part = indices[start : start + step]
        ascending = np.argsort(part, kind="stable")
        rows = np.empty((len(part), *x.shape[1:]), dtype=x.dtype)
        rows[ascending] = x[part[ascending]]
        yield part, apply_fills(rows, fill)


def fit_normalizer(
    x: np.ndarray, method: str, indices: np.ndarray | None = None, fill: np.ndarray | None = None
) -> dict:
    """Statistics of ``x[indices]`` (the train split, gaps filled by ``fill``), streamed chunk by chunk.

    Per feature for tables (``x.ndim == 2``), one scalar for images. Standard deviations use
    Chan's pairwise update, so chunking does not cost precision.
    """
    if method == "none":
        return {"method": "none", "offset": 0.0, "scale": 1.0}
    axis = 0 if x.ndim == 2 else None
    count, mean, m2, low, high = 0, 0.0, 0.0, np.inf, -np.inf
    for _, rows in iter_chunks(x, indices, fill):
        chunk = rows.astype(np.float64)
        low, high = np.minimum(low, chunk.min(axis=axis)), np.maximum(high, chunk.max(axis=axis))
        size = chunk.shape[0] if axis == 0 else chunk.size
        chunk_mean = chunk.mean(axis=axis)
        chunk_m2 = ((chunk - chunk_mean) ** 2).sum(axis=axis)
        delta, total = chunk_mean - mean, count + size
        mean = mean + delta * size / total
        m2 = m2 + chunk_m2 + delta**2 * count * size / total
        count = total
    if method == "minmax":
        offset, scale = low, np.maximum(high - low, 1e-12)
    else:
        offset, scale = mean, np.maximum(np.sqrt(m2 / count), 1e-12)
    return {
        "method": method,
        "offset": np.asarray(offset).tolist(),
        "scale": np.asarray(scale).tolist(),
    }


def apply_normalizer(x: np.ndarray, stats: dict) -> np.ndarray:
    """``(x - offset) / scale`` as float32."""
    offset = np.asarray(stats["offset"], dtype=np.float64)
    scale = np.asarray(stats["scale"], dtype=np.float64)
    return ((x.astype(np.float64) - offset) / scale).astype(np.float32)


def fit_imputation(
    x: np.ndarray, train: np.ndarray, manifest: dict, columns: dict | None
) -> tuple[np.ndarray | None, dict | None]:
    """Fill values for a CSV's missing cells, fitted on the train rows (``(None, None)`` when ingest kept no gaps)."""
    strategy = manifest.get("missing_values", {}).get("strategy")
    if not columns or strategy not in FILL_STRATEGIES:
        return None, None
    fill, per_column = fit_fills(np.asarray(x[train]), columns, manifest["feature_names"], strategy)
    logger.info("Missing values filled with %s values of the train split: %s", strategy, per_column)
    return fill, {
        "strategy": strategy,
        "fitted_on": "train",
        "fill": fill.tolist(),
        "columns": per_column,
    }


def balanced_class_weights(y_train: np.ndarray, num_classes: int) -> list[float]:
    """scikit-learn's ``balanced`` weights ``n / (k * count)`` over the k classes present; 1.0 for absent ones."""
    counts = np.bincount(y_train, minlength=num_classes)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = len(y_train) / (present.sum() * counts[present])
    return weights.tolist()


def label_meta(y_train: np.ndarray, manifest: dict) -> dict:
    """``meta.json``'s label part: the ``task``, train class counts and balanced weights, or (regression)
    the train split's ``target`` statistics the model rescales its output by."""
    task = manifest.get("task", "classification")
    if task == "regression":
        y = np.asarray(y_train, dtype=np.float64)
        return {
            "task": task,
            "class_counts": [],
            "class_weights": [],
            "target": {
                "mean": float(y.mean()),
                "std": float(max(y.std(), 1e-12)),
                "min": float(y.min()),
                "max": float(y.max()),
            },
        }
    num_classes = len(manifest["class_names"])
    return {
        "task": task,
        "class_counts": np.bincount(y_train, minlength=num_classes).tolist(),
        "class_weights": balanced_class_weights(y_train, num_classes),
    }


def write_shards(
    directory: Path,
    split: str,
    x: np.ndarray,
    y: np.ndarray,
    indices: np.ndarray,
    stats: dict,
    num_shards: int,
    seed: int,
    fill: np.ndarray | None = None,
) -> list[dict]:
    """Fill gaps, normalise ``x[indices]`` and write it as ``num_shards`` TFRecord files; return their names and sizes.

    The split is written in one seeded *global* permutation, dealt round-robin: position ``p`` of
    the permutation goes to shard ``p % num_shards``. So every shard, and every window of one, is a
    uniform sample of the split whatever order the source had (image folders are sorted by class),
    and shard sizes differ by at most one. It streams: :func:`iter_chunks` reads the permuted
    indices a bounded piece at a time from the memory-mapped ``x.npy``.
    """
    names = [f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord" for index in range(num_shards)]
    order = np.random.default_rng(seed).permutation(np.asarray(indices))
    writers = [TFRecordWriter(Path(directory) / name) for name in names]
    progress = Progress(len(order), f"preprocess: writing the {split} split", unit="example")
    try:
        position = 0
        for part, rows in iter_chunks(x, order, fill):
            normalized = apply_normalizer(rows, stats)
            for offset, index in enumerate(part):
                writers[(position + offset) % num_shards].write(
                    serialize_example(normalized[offset], y[index])
                )
            position += len(part)
            progress.update(len(part))
    finally:
        progress.close()
        for writer in writers:
            writer.close()
    counts = np.bincount(np.arange(len(order)) % num_shards, minlength=num_shards)
    return [
        {"file": name, "num_examples": int(count)}
        for name, count in zip(names, counts, strict=False)
    ]


def run_preprocess(
    settings: PreprocessSettings, seed: int, input_dir: Path, output_dir: Path
) -> dict:
    """Split, normalise and shard the ingested data, streaming from the memory-mapped ``x.npy``.

    Returns:
        The ``meta.json`` content written.

    Example:
        >>> run_preprocess(config.preprocess, config.seed, Path("data/raw"), Path("data/processed"))
    """
    input_dir = Path(input_dir)
    if not (input_dir / "manifest.json").is_file():
        raise UserError(
            f"preprocess: no ingested data at {input_dir} (manifest.json missing): run the ingest stage first (dvc repro ingest)"
        )
    manifest = read_json(input_dir / "manifest.json")
    x, y = np.load(input_dir / "x.npy", mmap_mode="r"), np.load(input_dir / "y.npy")
    splits = choose_splits(settings, seed, input_dir, y)
    too_small = [name for name in ("train", "val") if len(splits[name]) < settings.num_shards]
    if too_small:
        raise UserError(
            f"preprocess: the {too_small[0]} split has {len(splits[too_small[0]])} examples for {settings.num_shards} shards: lower preprocess.num_shards"
        )
    columns = manifest.get("schema", {}).get("columns")
    fill, imputation = fit_imputation(x, splits["train"], manifest, columns)
    stats = fit_normalizer(x, settings.normalize, splits["train"], fill)
    embeddings = embedded_features(columns, manifest["feature_names"]) if columns else []
    if (
        embeddings and settings.normalize != "none"
    ):  # category codes are indices, not quantities: never rescaled
        for spec in embeddings:
            stats["offset"][spec["feature"]], stats["scale"][spec["feature"]] = 0.0, 1.0
    meta = {
        "format": FORMAT,
        "source": manifest["source"],
        "class_names": manifest["class_names"],
        "input_shape": list(x.shape[1:]),
        "normalization": stats,
        "seed": seed,
        "test_split": settings.test_split,
        **label_meta(y[splits["train"]], manifest),
        "splits": {},
    }
    if columns:  # a CSV source: how its raw columns became features (and their fills), for the SavedModel's serving_raw_rows
        meta.update(
            columns={
                name: {**spec, "fill": imputation["columns"].get(name) if imputation else None}
                for name, spec in columns.items()
            },
            feature_names=manifest["feature_names"],
            imputation=imputation,
            embeddings=embeddings,
        )
    with atomic_dir(Path(output_dir)) as tmp:
        for number, (name, indices) in enumerate(splits.items()):
            shards = 1 if name == "test" else settings.num_shards
            meta["splits"][name] = write_shards(
                tmp, name, x, y, indices, stats, shards, seed + 10 * number, fill
            )
        write_json(tmp / "meta.json", meta)
    logger.info(
        "Split %d examples: train %d, val %d, test %d (test_split=%s, normalize=%s, %d shards)",
        len(y),
        len(splits["train"]),
        len(splits["val"]),
        len(splits["test"]),
        settings.test_split,
        settings.normalize,
        settings.num_shards,
    )
    return meta
