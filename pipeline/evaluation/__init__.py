"""The evaluation wing: test metrics and reports, and the gate that blesses a model for export.

Public entries: :func:`pipeline.evaluation.evaluate.run_evaluate` and :func:`pipeline.evaluation.gate.run_gate`.
Shared format export reads: :mod:`pipeline.evaluation.blessing` (the gate's verdict).

This file imports nothing on purpose (see :mod:`pipeline.data`).
"""
