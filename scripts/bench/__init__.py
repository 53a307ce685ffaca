"""The benchmark: ``python -m scripts.bench`` (streaming scenarios and the worker) and
``python -m scripts.bench.requests`` (small requests).

Nothing is imported here: the naive baseline runs as ``python -m scripts.bench.naive_front``,
which loads this package first, and must carry nothing of the benchmark into what it measures.
"""
