"""The soak: ``python -m scripts.soak``, mixed load and random kills, then a check of every
conversation against Redis."""
