"""Training entry points (``python -m train ...``); the work is in ``mmada_jax``."""
