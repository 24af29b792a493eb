"""DVC stage `gate`: bless (or not) the evaluated model: ``paths.reports``/metrics.json -> blessing.json.

Exits non-zero with one line when the model is not blessed, so `dvc repro` stops before export.
"""

from pathlib import Path

from pipeline.evaluation.blessing import BLESSING_FILE
from pipeline.evaluation.gate import run_gate
from pipeline.settings import PipelineConfig
from stages._common import stage_main


def gate(config: PipelineConfig) -> bool:
    reports = Path(config.paths.reports)
    return run_gate(config.gate, reports / "metrics.json", reports / BLESSING_FILE)["blessed"]


main = stage_main(gate)

if __name__ == "__main__":
    main()
