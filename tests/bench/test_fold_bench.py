"""bench/tfjs_fold.py on a small export-like SavedModel: both folds run on the graph the converter
hands them, and the outputs are reported identical."""

from __future__ import annotations

from helpers.config import REPO, load_script, script_help
from helpers.models import batch_norm_conv_net

BENCH = REPO / "bench" / "tfjs_fold.py"


def test_help_lists_the_options():
    output = script_help(BENCH)
    assert "--rounds" in output and "saved_model" in output


def test_both_folds_run_on_the_converters_graph_with_identical_outputs(tmp_path, capsys):
    from pipeline.env import import_tensorflow

    tf = import_tensorflow()
    model = batch_norm_conv_net()
    serve = tf.function(
        lambda x: {"probabilities": model(x, training=False)},
        input_signature=[tf.TensorSpec([None, 12, 12, 3], tf.float32)],
    )
    tf.saved_model.save(model, str(tmp_path / "saved"), signatures={"probabilities": serve})
    bench = load_script(BENCH)
    medians = bench.run(bench.parse_args([str(tmp_path / "saved"), "--rounds", "1"]))
    assert set(medians) == {"tensorflowjs", "pipeline"} and all(v > 0 for v in medians.values())
    out = capsys.readouterr().out
    assert "3 batch norms folded" in out and "identical output: True" in out
