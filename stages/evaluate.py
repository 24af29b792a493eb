"""DVC stage `evaluate`: the trained model on the test split -> ``paths.reports`` (metrics, per-class report, confusion matrix, training curves picture)."""

from pathlib import Path

from pipeline.evaluation.evaluate import run_evaluate
from pipeline.settings import PipelineConfig
from stages._common import stage_main


def evaluate(config: PipelineConfig) -> dict:
    return run_evaluate(
        config.evaluate,
        Path(config.paths.processed),
        Path(config.paths.models),
        Path(config.paths.reports),
    )


main = stage_main(evaluate)

if __name__ == "__main__":
    main()
