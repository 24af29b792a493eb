"""On-the-fly augmentation with Keras preprocessing layers, applied in the training input pipeline.

Nothing augmented is written to disk: the layers run inside each worker's ``tf.data`` pipeline
(:func:`pipeline.training.inputs.make_dataset`), seeded so a run is reproducible. Flip, rotation, zoom,
translation and contrast need images; Gaussian noise also applies to tables. Rank 0 writes a
grid of augmented samples to TensorBoard at the start of training (:func:`write_augmentation_grid`),
taken round-robin over the classes of the first records (:func:`grid_sample_indices`), so a stream
that starts with one class still shows several.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.settings import AugmentSettings

logger = logging.getLogger(__name__)

GRID_TAG = "augmentation/samples"
GRID_SUBDIR = "augmentation"  # a TensorBoard run beside Keras's train/ and validation/
GRID_SCAN_RECORDS = 1024  # records read to find several classes for the grid...
GRID_SCAN_BYTES = 64 * 2**20  # ...or fewer, so large images stay within this much float32 memory


def _image_layers_enabled(settings: AugmentSettings) -> bool:
    return settings.flip != "none" or any(
        value > 0
        for value in (settings.rotation, settings.zoom, settings.translation, settings.contrast)
    )


def is_enabled(settings: AugmentSettings) -> bool:
    """Whether any augmentation is configured."""
    return _image_layers_enabled(settings) or settings.noise > 0


def build_augmenter(
    settings: AugmentSettings,
    seed: int,
    input_shape: list[int] | tuple[int, ...] | None = None,
    codes: list[int] | tuple[int, ...] = (),
):
    """A ``tf.keras.Sequential`` of random layers for batches (a callable alike), or ``None`` when nothing applies.

    Args:
        input_shape: the examples' shape; image layers are skipped (with a warning) for anything
            but ``(height, width, channels)``. ``None`` assumes images.
        codes: table features that are category codes (``data.categorical=embedding``): noise
            never touches them (a noisy code would be another category).
    """
    images = input_shape is None or len(input_shape) == 3
    if not images and _image_layers_enabled(settings):
        logger.warning(
            "augment: flip/rotation/zoom/translation/contrast need images; skipped for input shape %s",
            list(input_shape),
        )
    if not (settings.noise > 0 or images and _image_layers_enabled(settings)):
        return None
    import tensorflow as tf

    layers = tf.keras.layers
    steps = []
    if images:
        if settings.flip != "none":
            steps.append(layers.RandomFlip(settings.flip, seed=seed))
        if settings.rotation > 0:
            steps.append(
                layers.RandomRotation(settings.rotation, fill_mode="constant", seed=seed + 1)
            )
        if settings.zoom > 0:
            steps.append(layers.RandomZoom(settings.zoom, fill_mode="constant", seed=seed + 2))
        if settings.translation > 0:
            steps.append(
                layers.RandomTranslation(
                    settings.translation, settings.translation, fill_mode="constant", seed=seed + 3
                )
            )
        if settings.contrast > 0:
            steps.append(layers.RandomContrast(settings.contrast, seed=seed + 4))
    if (
        settings.noise > 0
    ):  # its op seed pairs with the global seed the worker sets (set_random_seed)
        steps.append(layers.GaussianNoise(settings.noise, seed=seed + 5))
    augmenter = tf.keras.Sequential(steps, name="augment")
    if images or not codes:
        return augmenter
    untouched = tf.constant([index in set(codes) for index in range(input_shape[-1])])
    return lambda batch, training=False: tf.where(
        untouched, batch, augmenter(batch, training=training)
    )


def grid_sample_indices(labels: np.ndarray, rows: int) -> np.ndarray:
    """Indices of up to ``rows`` samples, one class after another (round-robin), deterministic.

    Classes come in the order they first appear and each gives its earliest records, so a
    class-sorted stream still yields several classes. Regression targets (all distinct) simply
    give the first ``rows`` records.

    Example:
        >>> grid_sample_indices(np.array([0, 0, 0, 1, 1, 2]), 4)
        array([0, 3, 5, 1])
    """
    by_class: dict[bytes, list[int]] = {}
    for index, label in enumerate(np.asarray(labels)):
        by_class.setdefault(np.asarray(label).tobytes(), []).append(index)
    picked: list[int] = []
    for depth in range(rows):
        picked += [indices[depth] for indices in by_class.values() if depth < len(indices)]
        if len(picked) >= rows:
            break
    return np.array(picked[:rows], dtype=np.int64)


def augmentation_grid(images: np.ndarray, augmenter, copies: int) -> np.ndarray:
    """One image: a row per sample, the original then ``copies`` augmented versions, scaled to [0, 1]."""
    columns = [images] + [augmenter(images, training=True).numpy() for _ in range(copies)]
    grid = np.stack(columns, axis=1)  # (rows, columns, height, width, channels)
    rows, cols, height, width, channels = grid.shape
    grid = grid.transpose(0, 2, 1, 3, 4).reshape(rows * height, cols * width, channels)
    low, high = float(grid.min()), float(grid.max())
    return ((grid - low) / max(high - low, 1e-12)).astype(np.float32)


def write_augmentation_grid(
    settings: AugmentSettings,
    seed: int,
    processed_dir: Path,
    files: list[str],
    log_dir: Path,
    rows: int = 8,
    copies: int = 4,
) -> Path | None:
    """Write a grid of augmented training samples to TensorBoard (tag :data:`GRID_TAG`, step 0).

    Uses its own augmenter (same settings and seed), so the training pipeline's random stream is
    untouched. The samples come from several classes (:func:`grid_sample_indices` over the first
    :data:`GRID_SCAN_RECORDS` records of ``files``). Returns the event directory, or ``None`` when
    there is nothing to show (no image inputs or no augmentation).
    """
    import tensorflow as tf

    from pipeline.io import read_json
    from pipeline.training.inputs import make_dataset

    input_shape = read_json(Path(processed_dir) / "meta.json")["input_shape"]
    augmenter = build_augmenter(settings, seed, input_shape)
    if augmenter is None or len(input_shape) != 3:
        return None
    scan = max(rows, min(GRID_SCAN_RECORDS, GRID_SCAN_BYTES // (4 * int(np.prod(input_shape)))))
    images, labels = next(iter(make_dataset(processed_dir, files, scan, repeat=False)))
    picked = grid_sample_indices(labels.numpy(), rows)
    grid = augmentation_grid(images.numpy()[picked], augmenter, copies)
    directory = Path(log_dir) / GRID_SUBDIR
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default():
        tf.summary.image(
            GRID_TAG,
            grid[np.newaxis],
            step=0,
            description=f"{len(picked)} training samples, classes in turn (first column), "
            f"and {copies} augmented versions each",
        )
    writer.close()
    logger.info("Augmentation samples written to TensorBoard: %s (%s)", directory, GRID_TAG)
    return directory
