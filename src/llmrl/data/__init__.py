"""Data preparation: Big-Math style curation of math problems for RL (``llmrl data curate``).

Modules (imported explicitly; this package imports nothing so that the CLI stays fast to start):
``llmrl.data.curate`` (the pipeline, :func:`~llmrl.data.curate.curate_file`), ``llmrl.data.filters``
(question filters, gold-answer extraction), ``llmrl.data.dedup`` (exact and MinHash-LSH near-duplicate
detection), ``llmrl.data.solvability`` (solve rates from model rollouts, difficulty buckets), ``llmrl.data.stream`` (the
streaming, bounded-memory passes ``curate_file`` runs: dedup state spilled to a temporary directory).
"""
