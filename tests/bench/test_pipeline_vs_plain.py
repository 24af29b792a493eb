"""bench/pipeline_vs_plain.py's cheap parts: its command line, the copy's file list and config, its tables."""

from __future__ import annotations

import shutil

from helpers.config import REPO, load_script, script_help

BENCH = REPO / "bench" / "pipeline_vs_plain.py"


def load_bench():
    return load_script(BENCH)


def test_help_lists_the_options():
    output = script_help(BENCH)
    for option in ("--dataset", "--epochs", "--batch-size", "--exports", "--keep"):
        assert option in output


def test_the_copy_lists_the_working_tree_with_untracked_files_and_without_ignored_ones():
    files = load_bench().working_tree_files(REPO)
    assert {"dvc.yaml", "conf/config.yaml", "stages/_common.py"} <= set(files)
    assert not any(name.startswith((".venv/", ".git/")) for name in files)
    assert all((REPO / name).is_file() for name in files)


def test_the_preset_sets_the_dataset_epochs_batch_and_exports_both_sides_run(tmp_path):
    from stages._config import compose_conf, to_settings

    bench = load_bench()
    shutil.copytree(REPO / "conf", tmp_path / "conf")
    preset = bench.preset_yaml("fashion_mnist", bench.FASHION_DIR, 5, 128, "float")
    bench.select_preset(tmp_path, preset)

    config = to_settings(compose_conf([], config_dir=tmp_path / "conf"))

    assert (config.data.name, config.data.path) == ("fashion_mnist", str(bench.FASHION_DIR))
    assert (config.train.epochs, config.train.batch_size) == (5, 128)
    assert (config.export.tflite, config.export.tfjs) == (["float32"], False)
    assert config.model.name == "cnn"


def test_the_stage_table_splits_the_wall_time_between_dvc_and_the_stages():
    bench = load_bench()
    lines = [
        {"stage": "ingest", "clock_start": 101.0, "startup_s": 1.0, "work_s": 2.0, "exit_s": 0.5, "total_s": 3.5},
        {"stage": "train", "clock_start": 105.0, "startup_s": 1.5, "work_s": 10.0, "exit_s": None, "total_s": 11.5},
    ]  # fmt: skip
    rows = bench.stage_rows(lines, launched=100.0, wall=20.0)
    assert [row["before"] for row in rows] == [1.0, 0.5, 3.5]  # 104.5 -> 105, 116.5 -> 120
    assert [row.get("overhead") for row in rows] == [1.5, 1.5, None]
    assert sum(row["before"] for row in rows) + sum(line["total_s"] for line in lines) == 20.0

    table = bench.format_table(["stage", "s"], [["ingest", 3.46], ["train", None], ["sum", 12]])
    assert table.splitlines() == ["stage     s", "ingest  3.5", "train", "sum      12"]


def test_export_check_seconds_come_from_the_export_report(tmp_path):
    bench = load_bench()
    report = tmp_path / "report.json"
    report.write_text(
        '{"artifacts": {"tfjs": {"check_seconds": 4.5}, "tflite_int8": {"check_seconds": 0.5},'
        ' "saved_model": {"accuracy": 0.9}}}'
    )
    assert bench.export_check_seconds(report) == {"tfjs": 4.5, "tflite_int8": 0.5}
