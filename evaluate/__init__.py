"""python -m evaluate: sample a benchmark, judge the samples, summarise (see mmada_jax.evaluation.run)."""
