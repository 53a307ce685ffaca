"""The project's tools, run from the repository root: ``python -m scripts.bench`` and
``python -m scripts.soak``."""
