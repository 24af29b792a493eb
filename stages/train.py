"""DVC stage `train`: Ray Train + MultiWorkerMirroredStrategy on ``paths.processed`` -> ``paths.models``.

Under Hydra multirun (``-m``) each trial returns ``sweep.objective`` to the sweeper (stages/_sweep.py).
"""

from pathlib import Path

from stages._common import stage_main
from pipeline.env import preflight
from pipeline.hparams import log_hparams
from pipeline.io import read_json
from pipeline.settings import PipelineConfig
from pipeline.train import TrainRequest, run_train


def train(config: PipelineConfig) -> dict:
    """Train, log the run's hyperparameters and final metrics to TensorBoard HParams; return the final metrics."""
    preflight(import_tf=False)  # the driver only hands work to Ray workers: no TensorFlow import here
    request = TrainRequest(seed=config.seed, model=config.model, train=config.train, augment=config.augment,
                           cluster=config.cluster, data_name=config.data.name)
    models = Path(config.paths.models)
    final = run_train(request, Path(config.paths.processed), models,
                      tensorboard_root=Path(config.train.tensorboard_dir), storage_dir=config.cluster.storage_dir)
    run = read_json(models / "run.json")
    log_hparams(Path(run["tensorboard_dir"]), config, final)
    return final


main = stage_main(train, sweep_trials=True)

if __name__ == "__main__":
    main()
