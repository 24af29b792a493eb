"""``kp-check-model``: build, train one batch, save and reload, and convert the configured model to
float32 TFLite (and, with ``export.tfjs``, check its ops against TF.js's) before any cluster time is
spent (the train stage runs the same check for ``model=custom`` and ``model=backbone``). Takes the
usual overrides, e.g. ``kp-check-model model=custom model.builder=user_models.examples:subclassed_mlp``;
needs the preprocess stage's ``meta.json``.
"""

from pathlib import Path

from pipeline.settings import PipelineConfig
from pipeline.training.check import check_model
from stages._common import stage_main


def check(config: PipelineConfig) -> dict:
    return check_model(
        config.model,
        config.train,
        Path(config.paths.processed),
        config.export.allow_select_tf_ops,
        tfjs=config.export.tfjs,
    )


main = stage_main(check)

if __name__ == "__main__":
    main()
