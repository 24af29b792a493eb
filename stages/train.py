"""DVC stage `train`: Ray Train + MultiWorkerMirroredStrategy on ``paths.processed`` -> ``paths.models``.

Under Hydra multirun (``-m``) each trial returns ``sweep.objective`` to the sweeper (stages/_sweep.py).
"""

from pathlib import Path

from pipeline.settings import PipelineConfig, TrainRequest
from pipeline.training.train import run_train
from stages._common import stage_main
from stages._sweep import run_trial


def train(config: PipelineConfig) -> dict:
    """Train (TensorBoard HParams included); return the final metrics (a sweep trial's objective comes from them)."""
    return run_train(
        TrainRequest.from_config(config),
        Path(config.paths.processed),
        Path(config.paths.models),
        tensorboard_root=Path(config.train.tensorboard_dir),
        storage_dir=config.cluster.storage_dir,
    )


main = stage_main(train, sweep_trial=run_trial)

if __name__ == "__main__":
    main()
