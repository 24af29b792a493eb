"""The TF.js converter's batch-norm folding against the pipeline's vectorised copy
(:mod:`pipeline.export.tfjs_fold`), side by side in one run, on the graph the converter folds for
an export's SavedModel.

The SavedModel (an export's ``exports/saved_model``, e.g. of a ``model=backbone`` run) is converted
once by ``tensorflowjs``'s converter, recording the graph it hands ``fold_batch_norms``; then both
folds run on copies of that graph, alternating ``--rounds`` times, and the table shows how many
batch norms there were, each side's median seconds, the ratio and whether the two outputs are
identical (they must be). Nothing is asserted.

Run it from the repository root (about a minute for MobileNetV2 on 2 CPU cores)::

    python bench/tfjs_fold.py exports/saved_model --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "saved_model", type=Path, help="an export's SavedModel (exports/saved_model of a run)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed folds per side")
    return parser.parse_args(argv)


def folded_graph(saved_model: Path) -> bytes:
    """The serialized GraphDef tensorflowjs's converter hands its batch-norm folding for the
    export's SavedModel ``saved_model`` (its ``probabilities`` signature)."""
    from pipeline.env import import_tensorflow

    import_tensorflow()
    from tensorflowjs.converters import fold_batch_norms as module
    from tensorflowjs.converters import tf_saved_model_conversion_v2

    seen, original = [], module.fold_batch_norms

    def recording(graph_def):
        seen.append(graph_def.SerializeToString())
        raise StopIteration  # the graph is all this needs: stop the conversion here

    module.fold_batch_norms = recording
    try:
        with tempfile.TemporaryDirectory() as scratch:
            tf_saved_model_conversion_v2.convert_tf_saved_model(
                str(saved_model), scratch, signature_def="probabilities", saved_model_tags="serve"
            )
    except StopIteration:
        pass
    finally:
        module.fold_batch_norms = original
    return seen[0]


def timed(fold, serialized: bytes) -> tuple[float, bytes]:
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(serialized)
    start = time.perf_counter()
    result = fold(graph)
    return time.perf_counter() - start, result.SerializeToString()


def run(args: argparse.Namespace) -> dict[str, float]:
    from tensorflow.core.framework import graph_pb2
    from tensorflowjs.converters.fold_batch_norms import fold_batch_norms as converters

    from pipeline.export.tfjs_fold import fold_batch_norms as ours

    serialized = folded_graph(args.saved_model)
    graph = graph_pb2.GraphDef()
    graph.ParseFromString(serialized)
    norms = sum(node.op.startswith(("FusedBatchNorm", "BatchNorm")) for node in graph.node)
    seconds = {"tensorflowjs": [], "pipeline": []}
    outputs = {}
    for _ in range(args.rounds):
        for name, fold in (("tensorflowjs", converters), ("pipeline", ours)):
            elapsed, outputs[name] = timed(fold, serialized)
            seconds[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"{args.saved_model}: {norms} batch norms folded, median of {args.rounds}")
    for name, value in medians.items():
        print(f"  {name:<13} {value:8.3f} s")
    print(
        f"  ratio pipeline / tensorflowjs: {medians['pipeline'] / medians['tensorflowjs']:.4f}; "
        f"identical output: {outputs['pipeline'] == outputs['tensorflowjs']}"
    )
    return medians


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    run(parse_args())
