"""DVC stage `ingest`: load and validate the data source -> ``paths.raw``."""

from pathlib import Path

from pipeline.data.ingest import run_ingest
from pipeline.settings import PipelineConfig
from stages._common import stage_main


def ingest(config: PipelineConfig) -> None:
    run_ingest(config.data, Path(config.paths.raw))


main = stage_main(ingest)

if __name__ == "__main__":
    main()
