"""bench/train_overhead.py's cheap parts (the bench trains for minutes and is not run here): its
command line, the paths it compares and how it counts a run's fixed cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.config import REPO, load_script, script_help

BENCH = REPO / "bench" / "train_overhead.py"


def test_help_lists_the_options():
    output = script_help(BENCH)
    for option in ("--model", "--epochs", "--workers", "--rounds", "--ray", "--warm"):
        assert option in output


def test_each_path_is_the_same_run_on_its_launcher(tmp_path):
    bench = load_script(BENCH)
    args = bench.parse_args(["--model", "mlp", "--epochs", "3"])
    default = bench.compose_config(args, tmp_path)
    on_ray = bench.compose_config(args, tmp_path, 4, on_ray=True)
    warm = bench.compose_config(args, tmp_path, 2, address="127.0.0.1:6379")
    assert (default.cluster.launcher, on_ray.cluster.launcher) == ("auto", "ray")
    assert warm.cluster.address == "127.0.0.1:6379"
    for config in (default, on_ray, warm):
        assert (config.model.name, config.train.epochs) == ("mlp", 3)
        assert not config.train.early_stopping.enabled  # every path runs exactly --epochs epochs
    # every run writes its own outputs (a rerun of one config would resume the other's run)
    assert len({config.cluster.storage_dir for config in (default, on_ray, warm)}) == 3
    assert Path(default.paths.processed) == Path(on_ray.paths.processed)


def test_the_fixed_cost_is_the_wall_time_beyond_the_epochs():
    bench = load_script(BENCH)
    assert bench.fixed_cost({"wall": 12.5, "epoch_seconds": [3.0, 1.5, 1.0]}) == pytest.approx(7.0)
    with pytest.raises(SystemExit):
        bench.parse_args(["--epochs", "1"])  # steady state needs epochs 2..N
