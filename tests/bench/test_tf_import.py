"""bench/tf_import.py: a real child of the pipeline's side (one TensorFlow import), and the table
and ratios from given samples (the plain side's child is the same code without pipeline.env)."""

from __future__ import annotations

from helpers.config import REPO, load_script, script_help

BENCH = REPO / "bench" / "tf_import.py"


def test_help_lists_the_options():
    assert "--rounds" in script_help(BENCH)


def test_the_pipelines_child_imports_tensorflow_without_the_deferred_libraries():
    sample = load_script(BENCH).measure(pipeline=True)
    assert sample["modules"] == [] and sample["cpu"] > 0 and sample["wall"] > 0


def test_the_table_shows_medians_and_ratios(monkeypatch, capsys):
    bench = load_script(BENCH)
    costs = {False: [8.0, 6.0, 7.0], True: [5.0, 4.0, 6.0]}

    def fake(pipeline):
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
