"""Command-line sampling entry points (``python -m sample ...``); the work is in ``mmada_jax``."""
