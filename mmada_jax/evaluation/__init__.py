"""Evaluation: judges that score generated (reasoning text, image) pairs with ParaBench's metrics."""

from mmada_jax.evaluation.judges import JUDGES, METRICS, Judge, get_judge, judges, register_judge

__all__ = ["JUDGES", "METRICS", "Judge", "get_judge", "judges", "register_judge"]
