"""bench/tf_import.py: a real child of the pipeline's side (one TensorFlow import), and the table
and ratios from given samples (the plain side's child is the same code without pipeline.env)."""

from __future__ import annotations

from helpers.config import REPO, load_script, script_help

BENCH = REPO / "bench" / "tf_import.py"


def test_help_lists_the_options():
    assert "--rounds" in script_help(BENCH)


def test_the_pipelines_child_imports_tensorflow_without_the_deferred_libraries_then_works():
    sample = load_script(BENCH).measure(pipeline=True, work=True)
    assert sample["modules"] == [] and sample["cpu"] > 0 and sample["wall"] > 0
    assert sample["work_cpu"] > 0 and sample["work_wall"] > 0


def test_the_table_shows_medians_and_ratios(monkeypatch, capsys):
    bench = load_script(BENCH)
    costs = {False: [8.0, 6.0, 7.0], True: [5.0, 4.0, 6.0]}

    def fake(pipeline, work=False):
        cost = costs[pipeline].pop(0)
        return {
            "wall": cost,
            "cpu": cost / 2,
            "modules": [] if pipeline else ["jax", "pandas", "scipy"],
        }

    monkeypatch.setattr(bench, "measure", fake)
    rows = bench.run(bench.parse_args(["--rounds", "3"]))
    assert rows["plain import tensorflow"]["wall"] == 7.0
    assert rows["pipeline.env.import_tensorflow"]["cpu"] == 2.5
    out = capsys.readouterr().out
    assert "ratio pipeline / plain: wall 0.71, CPU 0.71 (median of 3 rounds)" in out
    assert "of jax, pandas, scipy: imported" in out
    assert "jax, pandas, scipy\n" in out and "none\n" in out


def test_with_work_the_table_times_it_apart(monkeypatch, capsys):
    bench = load_script(BENCH)
    seen = []

    def fake(pipeline, work=False):
        seen.append(work)
        cost = 4.0 if pipeline else 5.0
        return {
            "wall": cost,
            "cpu": cost,
            "work_wall": 2 * cost,
            "work_cpu": 3 * cost,
            "modules": [],
        }

    monkeypatch.setattr(bench, "measure", fake)
    rows = bench.run(bench.parse_args(["--rounds", "1", "--work"]))
    assert seen == [True, True] and rows["plain import tensorflow"]["work_cpu"] == 15.0
    out = capsys.readouterr().out
    assert "work CPU s" in out
    assert "ratio pipeline / plain, the work after the import: wall 0.80, CPU 0.80" in out
