"""``tf.data`` input for one worker: its disjoint shards, shuffled, augmented, batched, prefetched.

Ray's workers run ``MultiWorkerMirroredStrategy`` with our own sharding (autosharding off), so the
global batch and the step count are ours to get right: every worker must run the same number of
steps per epoch, and no worker may get an empty shard (tensorflow#35878 hangs the collective).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserError


@dataclass(frozen=True)
class ShardPlan:
    """Which shard files each worker reads and how many steps every worker runs per epoch."""

    files_per_worker: list[list[str]]
    examples_per_worker: list[int]
    per_replica_batch_size: int
    steps_per_epoch: int


def plan_shards(shards: list[dict], num_workers: int, global_batch_size: int, split: str = "train") -> ShardPlan:
    """Assign shards round-robin (worker ``i`` reads shards ``i, i+W, ...``) and derive the steps.

    Raises:
        UserError: fewer shards than workers, an indivisible global batch, or an empty worker.
    """
    if len(shards) < num_workers:
        raise UserError(f"train: the {split} split has {len(shards)} shards for {num_workers} workers: set preprocess.num_shards >= cluster.num_workers")
    if global_batch_size % num_workers:
        raise UserError(f"train: train.batch_size={global_batch_size} is not divisible by cluster.num_workers={num_workers}: pick a multiple")
    per_replica = global_batch_size // num_workers
    files = [[shard["file"] for shard in shards[rank::num_workers]] for rank in range(num_workers)]
    counts = [sum(shard["num_examples"] for shard in shards[rank::num_workers]) for rank in range(num_workers)]
    if min(counts) == 0:
        raise UserError(f"train: a worker would get no {split} examples (shard sizes {[s['num_examples'] for s in shards]}): use fewer workers or more data")
    steps = min(math.ceil(count / per_replica) for count in counts)
    return ShardPlan(files, counts, per_replica, steps)


def make_dataset(processed_dir: Path, files: list[str], batch_size: int, *, shuffle_buffer: int = 0,
                 seed: int = 0, augmenter=None, repeat: bool = True):
    """A batched, prefetched ``tf.data.Dataset`` over ``files`` of ``processed_dir``.

    Args:
        shuffle_buffer: 0 disables shuffling (validation, evaluation).
        augmenter: optional Keras model applied to each training batch.
        repeat: repeat forever so all workers can run the same fixed number of steps.
    """
    import tensorflow as tf

    from pipeline.preprocess import load_split

    x, y = load_split(processed_dir, "", files)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_buffer:
        dataset = dataset.shuffle(min(shuffle_buffer, len(x)), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augmenter is not None:
        dataset = dataset.map(lambda images, labels: (augmenter(images, training=True), labels), num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        dataset = dataset.repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
