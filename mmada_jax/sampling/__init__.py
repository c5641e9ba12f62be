"""What every masked-diffusion sampler shares: schedules, noise, the MaskGIT image update, the
confidence-ordered text update, per-row randomness (:mod:`.common`) and the runner that jits a
sampler's step function as ONE ``lax.scan`` on the model's mesh (:mod:`.runner`). The samplers
themselves live with their model family: :mod:`mmada_jax.parallel_m`, :mod:`mmada_jax.parallel_a`,
:mod:`mmada_jax.mmada`.
"""

from .common import Randomness, SamplerOutput, as_randomness

__all__ = ["Randomness", "SamplerOutput", "as_randomness"]
