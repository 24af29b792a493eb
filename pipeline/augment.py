"""On-the-fly augmentation with Keras preprocessing layers, applied in the training input pipeline.

Nothing augmented is written to disk: the layers run inside ``tf.data`` on each worker, seeded so
a run is reproducible.
"""

from __future__ import annotations

from pipeline.settings import AugmentSettings


def is_enabled(settings: AugmentSettings) -> bool:
    """Whether any augmentation is configured."""
    return settings.flip != "none" or settings.rotation > 0 or settings.zoom > 0 or settings.translation > 0


def build_augmenter(settings: AugmentSettings, seed: int):
    """A ``tf.keras.Sequential`` of random layers for image batches, or ``None`` when disabled."""
    if not is_enabled(settings):
        return None
    import tensorflow as tf

    layers = tf.keras.layers
    steps = []
    if settings.flip != "none":
        steps.append(layers.RandomFlip(settings.flip, seed=seed))
    if settings.rotation > 0:
        steps.append(layers.RandomRotation(settings.rotation, fill_mode="constant", seed=seed + 1))
    if settings.zoom > 0:
        steps.append(layers.RandomZoom(settings.zoom, fill_mode="constant", seed=seed + 2))
    if settings.translation > 0:
        steps.append(layers.RandomTranslation(settings.translation, settings.translation, fill_mode="constant", seed=seed + 3))
    return tf.keras.Sequential(steps, name="augment")
