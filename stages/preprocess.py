"""DVC stage `preprocess`: split, normalise and shard ``paths.raw`` -> ``paths.processed``."""

from pathlib import Path

from pipeline.data.preprocess import run_preprocess
from pipeline.settings import PipelineConfig
from stages._common import stage_main


def preprocess(config: PipelineConfig) -> None:
    run_preprocess(
        config.preprocess, config.seed, Path(config.paths.raw), Path(config.paths.processed)
    )


main = stage_main(preprocess)

if __name__ == "__main__":
    main()
