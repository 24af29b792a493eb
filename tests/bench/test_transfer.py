"""bench/transfer.py's cheap parts (the bench itself trains for minutes and is not run here): its
command line, its subsets, the data it needs, its config and its table."""

from __future__ import annotations

import numpy as np

from helpers.config import REPO, load_script, script_help

BENCH = REPO / "bench" / "transfer.py"


def load_bench():
    return load_script(BENCH)


def test_help_lists_the_options():
    output = script_help(BENCH)
    for option in ("--quick", "--target", "--epochs", "--pretrain-examples", "--source-dir"):
        assert option in output


def test_quick_shrinks_the_run():
    bench = load_bench()
    args = bench.parse_args(["--quick"])
    assert (args.pretrain_examples, args.epochs) == (
        bench.QUICK["pretrain_examples"],
        bench.QUICK["epochs"],
    )
    assert bench.parse_args([]).pretrain_examples > args.pretrain_examples


def test_subsets_are_balanced_seeded_and_without_repeats():
    bench = load_bench()
    labels = np.array([0] * 50 + [1] * 30 + [2] * 5)
    picked = bench.balanced_subset(labels, 30, seed=1)
    assert len(picked) == len(set(picked.tolist())) == 30
    assert sorted(np.bincount(labels[picked]).tolist()) == [5, 12, 13]  # class 2 has only 5
    assert np.array_equal(picked, bench.balanced_subset(labels, 30, seed=1))
    assert len(bench.balanced_subset(labels, 500, seed=1)) == len(labels)


def test_absent_data_is_a_reason_to_skip(tmp_path):
    bench = load_bench()
    args = bench.parse_args(["--source-dir", str(tmp_path)])
    assert "no Fashion-MNIST IDX files in" in bench.missing_data(args)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    args = bench.parse_args(["--source-dir", str(tmp_path), "--mnist-dir", str(tmp_path)])
    assert "no MNIST t10k IDX files" in bench.missing_data(args)
    args.target = "digits"
    assert bench.missing_data(args) is None


def test_each_run_is_the_backbone_config_with_its_weights(tmp_path):
    bench = load_bench()
    args = bench.parse_args(["--quick"])
    config = bench.compose(
        args, tmp_path, ["data=digits"], "model.weights=/w/backbone.h5", "model.freeze=false"
    )
    assert config.model.name == "backbone" and config.model.input_size == [32, 32]
    assert config.model.weights == "/w/backbone.h5" and not config.model.freeze
    assert not config.train.early_stopping.enabled
    assert config.paths.processed == f"{tmp_path}/processed"


def test_split_sizes_add_up_the_shards():
    meta = {"splits": {"train": [{"num_examples": 3}, {"num_examples": 4}], "test": []}}
    assert load_bench().split_sizes(meta) == {"train": 7, "test": 0}


def test_the_table_compares_with_the_first_row():
    lines = load_bench().format_rows([("from scratch", 0.5, 10.0), ("pretrained", 0.75, 12.0)])
    assert lines[2].split()[-3:] == ["0.7500", "+0.2500", "12.0"]
