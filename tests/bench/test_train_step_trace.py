"""bench/train_step_trace.py: real children of the sides (the default CNN's first epoch: one trace
against Keras's two, Adam fused or Keras's), and the table and ratios from given samples."""

from __future__ import annotations

from helpers.config import REPO, load_script, script_help

BENCH = REPO / "bench" / "train_step_trace.py"


def test_help_lists_the_options():
    output = script_help(BENCH)
    for option in ("--rounds", "--models", "--examples", "--compare"):
        assert option in output


def test_each_side_fits_in_its_own_child_and_counts_the_traces():
    """Two children, each flag both ways: Keras's lazy variables with the fused Adam, then
    ``compile_model``'s variables with Keras's Adam."""
    bench = load_script(BENCH)
    lazy = bench.measure("cnn", bench.COMPARISONS["trace"]["lazy (Keras, before)"], examples=64)
    keras_adam = bench.measure("cnn", bench.COMPARISONS["adam"]["Keras Adam (before)"], 64)
    assert (lazy["traces"], lazy["fused"]) == (2, True)
    assert (keras_adam["traces"], keras_adam["fused"]) == (1, False)
    assert min(lazy["wall"], lazy["cpu"], keras_adam["wall"], keras_adam["cpu"]) > 0


def test_the_table_shows_medians_and_ratios(monkeypatch, capsys):
    bench = load_script(BENCH)
    costs = {False: [10.0, 12.0, 11.0], True: [6.0, 7.0, 8.0]}

    def fake(model, side, examples):
        cost = costs[side["once"]].pop(0)
        return {"wall": cost, "cpu": cost * 2, "traces": 1 if side["once"] else 2}

    monkeypatch.setattr(bench, "measure", fake)
    rows = bench.run(bench.parse_args(["--rounds", "3", "--models", "cnn"]))
    assert rows["cnn"]["once (compile_model)"] == {"wall": 7.0, "cpu": 14.0, "traces": 1}
    out = capsys.readouterr().out
    assert "cnn       ratio once / lazy: wall 0.64, CPU 0.64 (median of 3 rounds)" in out
