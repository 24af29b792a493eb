"""DVC stage `export`: SavedModel, TFLite variants and TF.js from ``paths.models`` -> ``paths.exports``, each verified.

Runs only on a model the gate blessed (``paths.reports``/blessing.json).
"""

from pathlib import Path

from pipeline.evaluation.blessing import BLESSING_FILE
from pipeline.export.run import run_export
from pipeline.settings import PipelineConfig
from stages._common import stage_main


def export(config: PipelineConfig) -> None:
    paths = config.paths
    run_export(
        config.export,
        Path(paths.processed),
        Path(paths.models),
        Path(paths.exports),
        Path(paths.reports) / BLESSING_FILE,
    )


main = stage_main(export)

if __name__ == "__main__":
    main()
