"""``tf.data`` input for one worker: its disjoint TFRecord shards, shuffled, batched, augmented.

Ray's workers run ``MultiWorkerMirroredStrategy`` with our own sharding (autosharding off), so the
global batch and the step count are ours to get right: every worker must run the same number of
steps per epoch, and no worker may get an empty shard (tensorflow#35878 hangs the collective).

:func:`plan_shards` deals the shard files round-robin and fixes ``steps_per_epoch``;
:func:`make_dataset` with ``steps`` cuts each worker's pass over its shards into exactly that many
batches (sizes differ by at most one, none above the per-replica batch), so one epoch reads every
example of the split exactly once, on exactly one worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError
from pipeline.io import read_json


@dataclass(frozen=True)
class ShardPlan:
    """Which shard files each worker reads and how many steps every worker runs per epoch."""

    files_per_worker: list[list[str]]
    examples_per_worker: list[int]
    per_replica_batch_size: int
    steps_per_epoch: int


def plan_shards(
    shards: list[dict], num_workers: int, global_batch_size: int, split: str = "train"
) -> ShardPlan:
    """Assign shards round-robin (worker ``i`` reads shards ``i, i+W, ...``) and derive the steps.

    ``steps_per_epoch`` is what the busiest worker needs at the per-replica batch size; the others
    spread their examples over as many (smaller) batches.

    Raises:
        UserError: fewer shards than workers, an indivisible global batch, an empty shard, or a
            worker with fewer examples than the steps every worker must run.
    """
    if len(shards) < num_workers:
        raise UserError(
            f"train: the {split} split has {len(shards)} shards for {num_workers} workers: set preprocess.num_shards >= cluster.num_workers"
        )
    if global_batch_size % num_workers:
        raise UserError(
            f"train: train.batch_size={global_batch_size} is not divisible by cluster.num_workers={num_workers}: pick a multiple"
        )
    empty = [shard["file"] for shard in shards if shard["num_examples"] == 0]
    if empty:
        raise UserError(
            f"train: {split} shard {empty[0]} is empty, so a worker could get no {split} examples: rerun preprocess with fewer preprocess.num_shards"
        )
    per_replica = global_batch_size // num_workers
    files = [[shard["file"] for shard in shards[rank::num_workers]] for rank in range(num_workers)]
    counts = [
        sum(shard["num_examples"] for shard in shards[rank::num_workers])
        for rank in range(num_workers)
    ]
    steps = math.ceil(max(counts) / per_replica)
    if min(counts) < steps:
        raise UserError(
            f"train: workers would read uneven {split} data ({counts} examples; every worker runs {steps} steps of up to "
            f"{per_replica}): set preprocess.num_shards to a multiple of cluster.num_workers={num_workers}"
        )
    return ShardPlan(files, counts, per_replica, steps)


def class_weight_table(meta: dict, mode: str) -> list[float] | None:
    """Per-class loss weights for ``train.class_weight=mode`` (``none`` -> ``None``) from ``meta.json``.

    Raises:
        UserError: ``balanced`` for a regression target (no classes to balance).
    """
    if mode == "balanced" and meta.get("task") == "regression":
        raise UserError(
            "train: train.class_weight=balanced needs classes but the data is a regression target (data.task=regression): "
            "set train.class_weight=none"
        )
    return list(meta["class_weights"]) if mode == "balanced" else None


def _exact_batches(dataset, num_examples: int, steps: int, batch_size: int):
    """Cut a pass of ``num_examples`` elements into exactly ``steps`` consecutive batches.

    Batch ``b`` holds the examples ``i`` with ``i * steps // num_examples == b`` (sizes differ by at
    most one, none above ``batch_size``). ``rebatch`` with a vector of sizes cycles through them, and
    they sum to one pass, so every pass starts a new cycle. It runs in C++ at about the speed of a
    plain ``batch`` (``group_by_window``, which builds a dataset per batch, capped the input at
    ~8k examples/s and cost a third of the training throughput).
    """
    import tensorflow as tf

    sizes = [
        ((index + 1) * num_examples + steps - 1) // steps
        - (index * num_examples + steps - 1) // steps
        for index in range(steps)
    ]
    assert max(sizes) <= batch_size and sum(sizes) == num_examples, (
        sizes,
        batch_size,
        num_examples,
    )
    return dataset.batch(max(sizes)).rebatch(tf.constant(sizes, tf.int64))


def make_dataset(
    processed_dir: Path,
    files: list[str],
    batch_size: int,
    *,
    shuffle_buffer: int = 0,
    seed: int = 0,
    augmenter=None,
    repeat: bool = True,
    steps: int | None = None,
    class_weights: list[float] | None = None,
    autotune: bool = True,
):
    """A batched, prefetched ``tf.data.Dataset`` of ``(x, y)`` (or ``(x, y, weight)``) over ``files``.

    Args:
        shuffle_buffer: 0 disables shuffling (validation, evaluation); otherwise the file order and
            the examples (within the buffer) are reshuffled every pass.
        augmenter: optional Keras model applied to each training batch (``training=True``).
        repeat: repeat forever so all workers can run the same fixed number of steps.
        steps: cut each pass into exactly this many batches (``ShardPlan.steps_per_epoch``), so an
            epoch is one pass; ``None`` batches by ``batch_size`` with a partial last batch.
        class_weights: per-class loss weights, yielded as per-example sample weights (what
            ``model.fit(class_weight=...)`` does, which tf-keras cannot do with a DatasetCreator).
        autotune: tf.data's autotuning model (buffer sizes and parallelism tuned while it runs).
            Off, ``AUTOTUNE`` parallelism is the core count and prefetching keeps its own buffer
            autotuner. Multi-worker training turns it off: under ``MultiWorkerMirroredStrategy``
            the iterator's destruction at the end of ``fit`` waited for the autotuning thread's
            next wake-up, up to 60 s (37 s measured after a 30-epoch 2-worker run).

    Example:
        >>> plan = plan_shards(meta["splits"]["train"], 2, 64)
        >>> dataset = make_dataset("data/processed", plan.files_per_worker[rank], 32, steps=plan.steps_per_epoch)
    """
    import tensorflow as tf

    from pipeline.data.shards import decode_examples

    processed_dir = Path(processed_dir)
    meta = read_json(processed_dir / "meta.json")
    sizes = {
        shard["file"]: shard["num_examples"]
        for shards in meta["splits"].values()
        for shard in shards
    }
    paths = [str(processed_dir / name) for name in files]
    if shuffle_buffer:
        names = tf.data.Dataset.from_tensor_slices(paths).shuffle(
            len(paths), seed=seed, reshuffle_each_iteration=True
        )
        records = names.interleave(tf.data.TFRecordDataset, cycle_length=len(paths))
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        records = tf.data.TFRecordDataset(paths)
    if steps is None:
        batches = records.batch(batch_size)
    else:
        batches = _exact_batches(records, sum(sizes[name] for name in files), steps, batch_size)
    task = meta.get("task", "classification")  # regression: float targets
    dataset = batches.map(
        lambda serialized: decode_examples(serialized, meta["input_shape"], task),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if augmenter is not None:
        dataset = dataset.map(
            lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    if class_weights is not None:
        table = tf.constant(class_weights, tf.float32)
        dataset = dataset.map(lambda x, y: (x, y, tf.gather(table, y)))
    if repeat:
        dataset = dataset.repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    options.autotune.enabled = autotune
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
