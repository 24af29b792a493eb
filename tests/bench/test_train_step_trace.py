"""bench/train_step_trace.py: a real child of each side (the default CNN's first epoch: one trace
against Keras's two), and the table and ratios from given samples."""

from __future__ import annotations

from helpers.config import REPO, load_script, script_help

BENCH = REPO / "bench" / "train_step_trace.py"


def test_help_lists_the_options():
    output = script_help(BENCH)
    for option in ("--rounds", "--models", "--examples"):
        assert option in output


def test_each_side_fits_in_its_own_child_and_counts_the_traces():
    bench = load_script(BENCH)
    once, lazy = (bench.measure("cnn", side, examples=64) for side in (True, False))
    assert (once["traces"], lazy["traces"]) == (1, 2)
    assert min(once["wall"], once["cpu"], lazy["wall"], lazy["cpu"]) > 0


def test_the_table_shows_medians_and_ratios(monkeypatch, capsys):
    bench = load_script(BENCH)
    costs = {False: [10.0, 12.0, 11.0], True: [6.0, 7.0, 8.0]}

    def fake(model, once, examples):
        cost = costs[once].pop(0)
        return {"wall": cost, "cpu": cost * 2, "traces": 1 if once else 2}

    monkeypatch.setattr(bench, "measure", fake)
    rows = bench.run(bench.parse_args(["--rounds", "3", "--models", "cnn"]))
    assert rows["cnn"]["once (compile_model)"] == {"wall": 7.0, "cpu": 14.0, "traces": 1}
    out = capsys.readouterr().out
    assert "cnn       ratio once / lazy: wall 0.64, CPU 0.64 (median of 3 rounds)" in out
