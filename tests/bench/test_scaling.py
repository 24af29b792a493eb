"""bench/scaling.py's cheap parts (the bench trains for minutes and is not run here): every worker
count runs the same Ray Train path, on the CPU or with the gpu preset."""

from __future__ import annotations

import pytest

from helpers.config import REPO, load_script, script_help

BENCH = REPO / "bench" / "scaling.py"


def test_help_lists_the_options():
    output = script_help(BENCH)
    for option in ("--model", "--epochs", "--workers", "--batch-size", "--gpu"):
        assert option in output


@pytest.mark.parametrize("gpu", [False, True])
def test_every_worker_count_trains_on_ray_train(gpu, tmp_path, monkeypatch):
    bench = load_script(BENCH)
    seen = []

    def fake_library(config):
        seen.append(config.cluster)
        return {"wall": 10.0, "epoch_seconds": [2.0, 1.0, 1.0], "examples_per_epoch": [100.0] * 3}

    monkeypatch.setattr(bench, "run_library", fake_library)
    args = bench.parse_args(["--model", "mlp", "--epochs", "3", *(["--gpu"] if gpu else [])])
    rows = [bench.run_workers(args, tmp_path, workers) for workers in (1, 2)]
    assert [cluster.launcher for cluster in seen] == ["ray", "ray"]  # one worker too: no local path
    assert [cluster.num_workers for cluster in seen] == [1, 2]
    assert all(cluster.use_gpu is gpu for cluster in seen)
    assert len({cluster.storage_dir for cluster in seen}) == 1  # outputs under the bench's root
    assert rows[0]["fixed"] == pytest.approx(6.0) and rows[0]["rate"] == pytest.approx(100.0)
