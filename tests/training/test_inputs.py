"""Each worker's tf.data input: disjoint shards, equal steps, one full pass per epoch, class weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import pipeline.data.preprocess as preprocess
from helpers.config import compose
from helpers.data import class_sorted_source, id_table, write_raw
from pipeline.data.preprocess import run_preprocess
from pipeline.data.shards import load_split
from pipeline.env import import_tensorflow
from pipeline.errors import UserError
from pipeline.io import read_json
from pipeline.training.inputs import class_weight_table, make_dataset, plan_shards

tf = import_tensorflow()


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """151 id-tagged examples preprocessed into 6 train shards (sizes 17/18: uneven per worker)."""
    root = tmp_path_factory.mktemp("inputs")
    x, y = id_table(151, 3)
    settings = dataclasses.replace(compose().preprocess, normalize="none", num_shards=6)
    meta = run_preprocess(settings, 0, write_raw(root / "raw", x, y), root / "out")
    return root / "out", meta


def read_epochs(directory, plan, epochs, **options):
    """What each simulated worker reads in ``epochs`` epochs of ``plan.steps_per_epoch`` steps."""
    per_worker = []
    for rank, files in enumerate(plan.files_per_worker):
        dataset = make_dataset(
            directory,
            files,
            plan.per_replica_batch_size,
            seed=rank,
            steps=plan.steps_per_epoch,
            **options,
        )
        batches = list(dataset.take(epochs * plan.steps_per_epoch))
        assert all(0 < len(batch[1]) <= plan.per_replica_batch_size for batch in batches)
        per_worker.append([batch[0].numpy()[:, 0].astype(int).tolist() for batch in batches])
    return per_worker


@pytest.mark.parametrize("num_workers", [2, 3])
def test_one_epoch_of_all_workers_is_the_full_train_split_without_duplicates(
    processed, num_workers
):
    directory, meta = processed
    plan = plan_shards(meta["splits"]["train"], num_workers, global_batch_size=8 * num_workers)
    assert len(meta["splits"]["train"]) >= num_workers
    files = sum(plan.files_per_worker, [])
    assert sorted(files) == sorted(shard["file"] for shard in meta["splits"]["train"]) and len(
        set(files)
    ) == len(files)
    train_ids = sorted(load_split(directory, "train")[0][:, 0].astype(int).tolist())
    per_worker = read_epochs(directory, plan, epochs=2, shuffle_buffer=50)
    for epoch in range(2):
        seen = [
            ids
            for batches in per_worker
            for ids in batches[epoch * plan.steps_per_epoch : (epoch + 1) * plan.steps_per_epoch]
        ]
        seen = sum(seen, [])
        assert sorted(seen) == train_ids, f"epoch {epoch + 1} with {num_workers} workers"
    first_epoch = [sum(batches[: plan.steps_per_epoch], []) for batches in per_worker]
    second_epoch = [sum(batches[plan.steps_per_epoch :], []) for batches in per_worker]
    assert first_epoch != second_epoch, "reshuffled every epoch"


def test_validation_reads_its_split_once_without_shuffling(processed):
    directory, meta = processed
    plan = plan_shards(meta["splits"]["val"], 2, 4, split="val")
    per_worker = read_epochs(directory, plan, epochs=1)
    assert sorted(sum(sum(per_worker, []), [])) == sorted(
        load_split(directory, "val")[0][:, 0].astype(int).tolist()
    )
    assert per_worker == read_epochs(directory, plan, epochs=1)


def test_without_autotuning_workers_read_exactly_what_they_read_with_it(processed):
    """Multi-worker runs turn tf.data's autotuning off (its thread held up the end of ``fit`` under
    MultiWorkerMirroredStrategy): the same examples in the same order, epoch after epoch."""
    directory, meta = processed
    plan = plan_shards(meta["splits"]["train"], 2, global_batch_size=16)
    files = plan.files_per_worker[0]
    assert make_dataset(directory, files, 8, autotune=False).options().autotune.enabled is False
    assert make_dataset(directory, files, 8).options().autotune.enabled is True
    tuned = read_epochs(directory, plan, epochs=2, shuffle_buffer=50)
    assert read_epochs(directory, plan, epochs=2, shuffle_buffer=50, autotune=False) == tuned


def test_shard_plan_gives_workers_disjoint_files_and_equal_steps():
    shards = [{"file": f"train-{i:05d}", "num_examples": n} for i, n in enumerate([10, 10, 9, 9])]
    plan = plan_shards(shards, num_workers=2, global_batch_size=8)
    assert plan.files_per_worker == [["train-00000", "train-00002"], ["train-00001", "train-00003"]]
    assert (
        plan.examples_per_worker == [19, 19]
        and plan.per_replica_batch_size == 4
        and plan.steps_per_epoch == 5
    )


@pytest.mark.parametrize(
    "sizes,workers,batch,expected",
    [
        ([10, 10, 9, 9], 3, 8, "train.batch_size=8 is not divisible by cluster.num_workers=3"),
        (
            [10, 10, 9, 9],
            5,
            10,
            "has 4 shards for 5 workers: set preprocess.num_shards >= cluster.num_workers",
        ),
        ([3, 0], 2, 2, "train shard s1 is empty, so a worker could get no train examples"),
        (
            [40, 3, 40],
            2,
            4,
            "workers would read uneven train data ([80, 3] examples; every worker runs 40 steps of up to 2)",
        ),
    ],
)
def test_bad_shard_plans_are_one_clear_line(sizes, workers, batch, expected):
    shards = [{"file": f"s{i}", "num_examples": n} for i, n in enumerate(sizes)]
    with pytest.raises(UserError) as caught:
        plan_shards(shards, workers, batch)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_train_stage_rejects_an_uneven_plan_before_starting_workers(processed, tmp_path):
    from pipeline.settings import TrainRequest
    from pipeline.training.train import check_train_inputs

    directory, _ = processed
    config = compose(
        "cluster.num_workers=4", "train.batch_size=4"
    )  # 6 shards: 2, 2, 1, 1 per worker
    request = TrainRequest(
        seed=0,
        model=config.model,
        train=config.train,
        augment=config.augment,
        cluster=config.cluster,
        data_name="t",
    )
    with pytest.raises(UserError, match="uneven train data"):
        check_train_inputs(request, directory)


def test_class_weights_become_per_example_sample_weights(processed):
    directory, meta = processed
    assert class_weight_table(meta, "none") is None
    table = class_weight_table(meta, "balanced")
    assert table == read_json(directory / "meta.json")["class_weights"] and len(table) == 3
    x, y, weights = next(
        iter(
            make_dataset(
                directory, [meta["splits"]["train"][0]["file"]], 16, class_weights=[1.0, 2.0, 5.0]
            )
        )
    )
    assert np.allclose(weights.numpy(), np.array([1.0, 2.0, 5.0])[y.numpy()])


def test_balanced_weights_lift_the_minority_class_on_imbalanced_data(tmp_path):
    rng = np.random.default_rng(0)
    y = (np.arange(400) % 10 == 0).astype(np.int64)  # 10% positives
    x = np.column_stack(
        [y * 1.0 + rng.normal(0, 1.0, 400), rng.normal(0, 1.0, 400)]
    )  # weakly informative
    settings = dataclasses.replace(compose().preprocess, normalize="standardize", num_shards=1)
    meta = run_preprocess(settings, 0, write_raw(tmp_path / "raw", x, y), tmp_path / "out")
    assert meta["class_weights"][1] / meta["class_weights"][0] == pytest.approx(9.0, rel=0.05)
    files = [shard["file"] for shard in meta["splits"]["train"]]
    x_train, y_train = load_split(tmp_path / "out", "train")

    def minority_recall(class_weights):
        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential(
            [tf.keras.layers.Dense(1, activation="sigmoid", input_shape=(2,))]
        )
        model.compile(tf.keras.optimizers.Adam(0.1), "binary_crossentropy")
        model.fit(
            make_dataset(tmp_path / "out", files, 64, repeat=False, class_weights=class_weights),
            epochs=12,
            verbose=0,
        )
        predicted = model.predict(x_train, verbose=0)[:, 0] > 0.5
        return predicted[y_train == 1].mean()

    plain, balanced = minority_recall(None), minority_recall(class_weight_table(meta, "balanced"))
    assert plain < 0.2 and balanced > 0.5


def test_unknown_class_weight_mode_is_one_line():
    with pytest.raises(
        UserError, match=r"train\.class_weight='auto' is invalid: expected one of none, balanced"
    ):
        compose("train.class_weight=auto")


@pytest.fixture(scope="module")
def class_sorted(tmp_path_factory):
    """A class-sorted source (40,000 examples, 10 classes) whose train split outgrows the default
    shuffle buffer even per worker of two,
    preprocessed with the defaults in 500-row read pieces (as a large image folder is read)."""
    root = tmp_path_factory.mktemp("sorted")
    raw = class_sorted_source(root / "raw", per_class=4000)
    config = compose()
    assert config.train.shuffle_buffer < 0.7 * 40_000 / 2, (
        "each worker's train data must outgrow the default shuffle buffer"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(preprocess, "CHUNK_BYTES", 500 * 8 * 8)
        meta = run_preprocess(config.preprocess, config.seed, raw, root / "out")
    return root / "out", meta, config


@pytest.mark.parametrize("num_workers", [1, 2])
def test_first_epoch_batches_hold_the_classes_at_their_shares(class_sorted, num_workers):
    """Chi-square over every batch of the first epoch (each worker's input pipeline, default
    shuffle buffer and batch): the per-batch class counts are what uniform mixing gives."""
    from scipy.stats import chi2

    directory, meta, config = class_sorted
    shares = np.asarray(meta["class_counts"]) / sum(meta["class_counts"])
    plan = plan_shards(meta["splits"]["train"], num_workers, config.train.batch_size)
    statistic, dof = 0.0, 0
    for rank, files in enumerate(plan.files_per_worker):
        dataset = make_dataset(
            directory,
            files,
            plan.per_replica_batch_size,
            shuffle_buffer=config.train.shuffle_buffer,
            seed=config.seed + rank,
            steps=plan.steps_per_epoch,
        )
        for _, labels in dataset.take(plan.steps_per_epoch):
            counts = np.bincount(labels.numpy(), minlength=len(shares))
            expected = counts.sum() * shares
            statistic += float(((counts - expected) ** 2 / expected).sum())
            dof += len(shares) - 1
    p_value = chi2.sf(statistic, dof)
    assert p_value > 1e-3, (
        f"per-batch class counts are not uniform: chi2 {statistic:.0f} on {dof} dof (p={p_value:.2g})"
    )


@pytest.mark.slow
def test_default_shuffle_trains_as_well_as_a_full_shuffle_on_a_class_sorted_source(class_sorted):
    """The defaults (shuffle buffer 10,000 over a 28,000-example class-sorted train split) come within
    1 point of test accuracy of a full shuffle, through the workers' own fit path."""
    from pipeline.training.worker import TrainJob, fit_model

    directory, meta, config = class_sorted
    x_test, y_test = load_split(directory, "test")
    accuracies = {}
    for name, buffer in (
        ("default", config.train.shuffle_buffer),
        ("full", sum(meta["class_counts"])),
    ):
        train = dataclasses.replace(
            config.train,
            epochs=4,
            shuffle_buffer=buffer,
            early_stopping=dataclasses.replace(config.train.early_stopping, enabled=False),
        )
        job = TrainJob(
            str(directory),
            str(directory.parent / f"tb-{name}"),
            config.seed,
            compose("model=mlp").model,
            train,
            config.augment,
            mixed_precision=False,
            xla=False,
        )
        model, _ = fit_model(job, rank=0, world_size=1)
        accuracies[name] = float((model.predict(x_test, verbose=0).argmax(axis=1) == y_test).mean())
    print("accuracies", accuracies)
    assert accuracies["default"] >= accuracies["full"] - 0.01, accuracies
