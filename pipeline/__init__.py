"""Keras/TensorFlow training pipeline: ingest -> preprocess -> train -> evaluate -> export.

Importing this package selects the Keras flavour (legacy Keras 2 via ``TF_USE_LEGACY_KERAS=1``)
before TensorFlow's first import in this process; see :mod:`pipeline.env`.
"""

from pipeline.env import configure_process_env

configure_process_env()
