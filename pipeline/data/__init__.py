"""The data wing: sources -> ``data/raw`` (ingest) -> ``data/processed`` TFRecord shards (preprocess).

Public entries: :func:`pipeline.data.ingest.run_ingest` and :func:`pipeline.data.preprocess.run_preprocess`.
Shared formats other wings read: :mod:`pipeline.data.shards` (the TFRecord contract),
:mod:`pipeline.data.columns` (the CSV column layout) and :mod:`pipeline.data.records` (what every
source returns).

This file imports nothing on purpose: importing one shared format (say ``shards`` from the
training wing) must not run the whole wing, or every stage's import closure, and so its DVC deps,
would span every wing.
"""
