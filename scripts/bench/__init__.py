"""The benchmark: ``python -m scripts.bench`` (streaming scenarios and the worker) and
``python -m scripts.bench.requests`` (small requests)."""
