"""CLIP in Flax NNX: both towers, in-graph preprocessing, the ``clip`` checkpoint kind, scores.

Why: ParaRL's semantic reward is a CLIP score (the authors' code: torchmetrics ``clip_score`` =
max(100 cos, 0) with ViT-L/14), and transformers v5 has no Flax CLIP, so this is a small port
checked for parity against transformers' PyTorch ``CLIPModel``.

* :mod:`.config`: :class:`CLIPConfig` (from a HF config.json or our YAML) and the public
  architectures :data:`NAMED` (ViT-B/32, ViT-L/14, ViT-L/14-336);
* :mod:`.model`: :class:`CLIPModel` (``image_embeds``, ``text_embeds``, ``cosine``, ``logits``),
  ``build_model`` / ``abstract_model`` (``nnx.eval_shape``, no weights);
* :mod:`.preprocess`: uint8 images -> normalised pixels, jitted (bicubic resize, center crop);
* :mod:`.checkpoint`: the ``clip`` conversion kind (``convert_torch_weights.py``) and
  :func:`load_clip` (a converted checkpoint or a HF directory -> model + tokenizer);
* :mod:`.score`: :class:`CLIPScorer`, paired ``max(scale * cos, 0)`` (the ``clip`` reward).
"""

from .checkpoint import CLIP, load_clip, load_tokenizer
from .config import (NAMED, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, VIT_B_32, VIT_L_14, VIT_L_14_336, CLIPConfig,
                     CLIPTextConfig, CLIPVisionConfig, named_config)
from .model import CLIPModel, abstract_model, build_model, clip_score, num_params
from .preprocess import preprocess, resized_shape
from .score import CLIPScorer

__all__ = [
    "CLIP", "CLIPConfig", "CLIPModel", "CLIPScorer", "CLIPTextConfig", "CLIPVisionConfig", "NAMED",
    "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "VIT_B_32", "VIT_L_14", "VIT_L_14_336", "abstract_model",
    "build_model", "clip_score", "load_clip", "load_tokenizer", "named_config", "num_params", "preprocess",
    "resized_shape",
]
