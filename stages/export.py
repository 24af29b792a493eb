"""DVC stage `export`: SavedModel, TFLite and TF.js from ``paths.models`` -> ``paths.exports``, each verified."""

from pathlib import Path

from stages._common import stage_main
from pipeline.env import preflight
from pipeline.export import run_export
from pipeline.settings import PipelineConfig


def export(config: PipelineConfig) -> None:
    preflight()
    run_export(config.export, Path(config.paths.processed), Path(config.paths.models), Path(config.paths.exports))


main = stage_main(export)

if __name__ == "__main__":
    main()
