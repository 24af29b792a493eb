"""The export wing: SavedModel, TFLite variants and TF.js, each verified in its own runtime.

Public entries: :func:`pipeline.export.run.run_export` and :func:`pipeline.export.predict.run_predict`
(any artifact on new files). One module per format: ``saved_model``, ``raw_rows``, ``tflite``,
``tfjs`` (+ ``tfjs_node``, the Node.js runner), and ``report`` for the parity checks.

This file imports nothing on purpose (see :mod:`pipeline.data`).
"""
