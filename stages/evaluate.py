"""DVC stage `evaluate`: test-split metrics of ``paths.models`` -> ``paths.reports``."""

from pathlib import Path

from stages._common import stage_main
from pipeline.env import preflight
from pipeline.evaluate import run_evaluate
from pipeline.settings import PipelineConfig


def evaluate(config: PipelineConfig) -> float:
    preflight()
    metrics = run_evaluate(config.evaluate, Path(config.paths.processed), Path(config.paths.models), Path(config.paths.reports))
    return metrics["accuracy"] if "accuracy" in metrics else metrics["mae"]  # regression: the test MAE


main = stage_main(evaluate)

if __name__ == "__main__":
    main()
