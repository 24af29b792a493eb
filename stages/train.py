"""DVC stage `train`: Ray Train + MultiWorkerMirroredStrategy on ``paths.processed`` -> ``paths.models``."""

from pathlib import Path

from stages._common import stage_main
from pipeline.env import preflight
from pipeline.settings import PipelineConfig
from pipeline.train import TrainRequest, run_train


def train(config: PipelineConfig) -> float:
    preflight()
    request = TrainRequest(seed=config.seed, model=config.model, train=config.train, augment=config.augment,
                           cluster=config.cluster, data_name=config.data.name)
    final = run_train(request, Path(config.paths.processed), Path(config.paths.models),
                      tensorboard_root=Path(config.train.tensorboard_dir), storage_dir=config.cluster.storage_dir)
    return final.get("val_loss", final["loss"])


main = stage_main(train)

if __name__ == "__main__":
    main()
