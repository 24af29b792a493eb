"""The training wing: Ray Train on the driver and ``model.fit`` in each worker.

Public entry: :func:`pipeline.training.train.run_train` (with :class:`pipeline.training.train.TrainRequest`).
The worker loop is :mod:`pipeline.training.worker`; built-in models :mod:`pipeline.training.models`;
input pipelines, augmentation, callbacks, sweeps and the cluster helpers have a module each.
Shared format other wings read: :mod:`pipeline.training.model_io` (a trained model on disk).

This file imports nothing on purpose (see :mod:`pipeline.data`).
"""
