"""Reinforcement learning for the masked-diffusion models (ParaRL; ``pararl.md``).

* :mod:`.steps`: which denoising steps of a rollout are optimised (s per group, shared by its G
  rollouts, or the final step);
* :mod:`.advantages`: a registry of advantage estimators (``per_step``: ParaRL's A_{i,t});
* :mod:`.losses`: a registry of policy losses (``clipped``: the clipped surrogate of Eq. 3) with
  the k3 KL and the loss aggregations.

The rollout side lives in the samplers (``record_steps``, :mod:`mmada_jax.sampling.recording`).
"""

from .advantages import ADVANTAGE_ESTIMATORS, advantages, group_spread
from .losses import POLICY_LOSSES, policy_loss
from .steps import draw_steps

__all__ = ["ADVANTAGE_ESTIMATORS", "POLICY_LOSSES", "advantages", "draw_steps", "group_spread", "policy_loss"]
