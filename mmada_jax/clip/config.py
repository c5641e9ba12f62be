"""Typed config of a CLIP model (both towers), read from a Hugging Face ``CLIPModel`` config.json
or from our YAML (``clip:`` section of a converted checkpoint's config.yaml).

Three frozen (hashable: usable as static jit arguments and as cache keys) dataclasses:

* :class:`CLIPTextConfig`: the text tower, HF ``text_config`` keys (defaults = HF's defaults);
* :class:`CLIPVisionConfig`: the image tower, HF ``vision_config`` keys;
* :class:`CLIPConfig`: both towers + ``projection_dim``, the ``logit_scale`` init, the image
  normalisation (``image_mean`` / ``image_std``, read from ``preprocessor_config.json`` when the
  source has one) and the run-time choices (dtypes, matmul precision) that do not change weights.

Reading a HF config.json follows ``transformers``: a key missing from ``text_config`` /
``vision_config`` takes transformers' default (what ``CLIPModel.from_pretrained`` would build),
``text_config_dict`` / ``vision_config_dict`` (old Hub files) override them, and the many
generation-era keys old Hub files carry are ignored. What this port does not implement
(activations other than ``quick_gelu`` / ``gelu``, non-square images or patches, a list of EOS
ids) is a :class:`~mmada_jax.config.ConfigError` naming the key. Our YAML, by contrast, is strict:
an unknown key is an error naming it.

:data:`NAMED` holds the public OpenAI checkpoints' architectures (``openai/clip-vit-base-patch32``,
``openai/clip-vit-large-patch14``, ``openai/clip-vit-large-patch14-336``), so an abstract model can
be built with ``nnx.eval_shape`` without any file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, check_keys

SECTION = "clip"
DTYPES = ("float32", "bfloat16", "float16")
ACTIVATIONS = ("quick_gelu", "gelu")
PRECISIONS = ("highest", "default")
# the normalisation of every OpenAI CLIP (CLIPImageProcessor's OPENAI_CLIP_MEAN / _STD)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# eos_token_id of the OpenAI Hub configs (set before transformers PR #24773): with it the text
# tower pools at argmax(input_ids) (the EOS being the largest id of the OpenAI vocabulary)
LEGACY_EOS_ID = 2


def _positive(value, key: str, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{source}: {key}={value!r} must be a positive integer")
    return value


def _int(value, key: str, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{source}: {key}={value!r} must be an integer")
    return value


def _square(value, key: str, source: str) -> int:
    """An HF size that may be an int or an [h, w] pair; only square ones are supported."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ConfigError(f"{source}: {key}={list(value)!r}: only square sizes are supported")
        value = value[0]
    return _positive(value, key, source)


def _check_tower(cfg, source: str) -> None:
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        _positive(getattr(cfg, key), key, source)
    if cfg.hidden_size % cfg.num_attention_heads:
        raise ConfigError(f"{source}: hidden_size={cfg.hidden_size} is not divisible by "
                          f"num_attention_heads={cfg.num_attention_heads}")
    if cfg.hidden_act not in ACTIVATIONS:
        raise ConfigError(f"{source}: hidden_act={cfg.hidden_act!r} is not supported (one of {ACTIVATIONS})")
    if not isinstance(cfg.layer_norm_eps, (int, float)) or isinstance(cfg.layer_norm_eps, bool) \
            or not cfg.layer_norm_eps > 0:
        raise ConfigError(f"{source}: layer_norm_eps={cfg.layer_norm_eps!r} must be a positive number")
    object.__setattr__(cfg, "layer_norm_eps", float(cfg.layer_norm_eps))


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """The text tower (HF ``CLIPTextConfig`` names and defaults).

    ``eos_token_id`` chooses the pooled position as transformers does: 2 (the OpenAI Hub configs)
    means the position of the largest id (``argmax(input_ids)``); any other value the first
    position holding that id."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    pad_token_id: int = 1

    def __post_init__(self):
        src = "clip text config"
        _check_tower(self, src)
        for key in ("vocab_size", "max_position_embeddings"):
            _positive(getattr(self, key), key, src)
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            _int(getattr(self, key), key, src)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def legacy_pooling(self) -> bool:
        """Pool at argmax(input_ids) (eos_token_id == 2), not at the first EOS."""
        return self.eos_token_id == LEGACY_EOS_ID


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """The image tower (HF ``CLIPVisionConfig`` names and defaults); square images and patches."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        src = "clip vision config"
        _check_tower(self, src)
        for key in ("num_channels", "image_size", "patch_size"):
            _positive(getattr(self, key), key, src)
        if self.patch_size > self.image_size:
            raise ConfigError(f"{src}: patch_size={self.patch_size} is larger than image_size={self.image_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid(self) -> int:
        """Patches per side (a remainder of the image beyond grid * patch_size is dropped, as the
        reference's strided convolution does)."""
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        return self.grid ** 2 + 1


_TEXT_KEYS = tuple(f.name for f in dataclasses.fields(CLIPTextConfig))
_VISION_KEYS = tuple(f.name for f in dataclasses.fields(CLIPVisionConfig))


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """A CLIP model: both towers, the projections, and run-time options.

    ``name``: where the architecture / weights come from (the HF ``_name_or_path``, a Hub id of
    :data:`NAMED`, or the source folder), recorded so a score can say which model produced it.
    ``logit_scale_init``: the HF ``logit_scale_init_value`` (the trained ``logit_scale`` is a
    parameter). ``image_mean`` / ``image_std``: the per-channel normalisation of the pixels in
    [0, 1]. ``param_dtype`` / ``dtype``: storage and compute dtypes (layer norms and softmax always
    compute in float32). ``matmul_precision``: ``highest`` (default: float32 matmuls really in
    float32, as PyTorch computes them; no TF32 on GPUs) or ``default`` (XLA's choice).
    """

    kind: str = "clip"
    name: str = ""
    text: CLIPTextConfig = dataclasses.field(default_factory=CLIPTextConfig)
    vision: CLIPVisionConfig = dataclasses.field(default_factory=CLIPVisionConfig)
    projection_dim: int = 512
    logit_scale_init: float = 2.6592
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    param_dtype: str = "float32"
    dtype: str = "float32"
    matmul_precision: str = "highest"

    def __post_init__(self):
        src = "clip config"
        if self.kind != "clip":
            raise ConfigError(f"{src}: kind={self.kind!r} must be 'clip'")
        if not isinstance(self.text, CLIPTextConfig) or not isinstance(self.vision, CLIPVisionConfig):
            raise ConfigError(f"{src}: text / vision must be CLIPTextConfig / CLIPVisionConfig")
        _positive(self.projection_dim, "projection_dim", src)
        object.__setattr__(self, "logit_scale_init", float(self.logit_scale_init))
        for key in ("image_mean", "image_std"):
            value = getattr(self, key)
            if (not isinstance(value, (list, tuple)) or len(value) != self.vision.num_channels
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ConfigError(f"{src}: {key}={value!r} must be {self.vision.num_channels} numbers "
                                  f"(one per channel)")
            object.__setattr__(self, key, tuple(float(v) for v in value))
        if not all(s > 0 for s in self.image_std):
            raise ConfigError(f"{src}: image_std={list(self.image_std)} must be positive")
        for key in ("param_dtype", "dtype"):
            if getattr(self, key) not in DTYPES:
                raise ConfigError(f"{src}: {key}={getattr(self, key)!r} must be one of {DTYPES}")
        if self.matmul_precision not in PRECISIONS:
            raise ConfigError(f"{src}: matmul_precision={self.matmul_precision!r} must be one of {PRECISIONS}")

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    def replace(self, **changes) -> "CLIPConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ our YAML

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["text"] = dataclasses.asdict(self.text)
        out["vision"] = dataclasses.asdict(self.vision)
        out["image_mean"], out["image_std"] = list(self.image_mean), list(self.image_std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "CLIPConfig":
        """The ``clip:`` section of a config.yaml (unknown keys are an error naming them)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the '{SECTION}' section must be a mapping, got {data!r}")
        check_keys(data, {f.name for f in dataclasses.fields(cls)}, source)
        data = dict(data)
        try:
            for key, sub in (("text", CLIPTextConfig), ("vision", CLIPVisionConfig)):
                if key in data:
                    if not isinstance(data[key], dict):
                        raise ConfigError(f"{SECTION}.{key} must be a mapping, got {data[key]!r}")
                    check_keys(data[key], {f.name for f in dataclasses.fields(sub)}, f"{SECTION}.{key}")
                    data[key] = sub(**data[key])
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump({SECTION: self.to_dict()}, sort_keys=False))

    # ------------------------------------------------------------------ HF config.json

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], source: str = "config.json",
                       preprocessor: dict[str, Any] | None = None, name: str = "") -> "CLIPConfig":
        """Read a HF ``CLIPModel`` config.json (and, if given, its ``preprocessor_config.json``
        for ``image_mean`` / ``image_std``). ``name``: recorded when the file has no
        ``_name_or_path``."""
        model_type = hf.get("model_type", "clip")
        if model_type != "clip":
            raise ConfigError(f"{source}: model_type={model_type!r}; expected 'clip' (a CLIPModel with "
                              f"both towers)")

        def tower(key: str, keys: tuple[str, ...]) -> dict[str, Any]:
            merged = {}
            for k in (key, key + "_dict"):
                part = hf.get(k) or {}
                if not isinstance(part, dict):
                    raise ConfigError(f"{source}: {k} must be an object, got {part!r}")
                merged.update(part)
            return {k: merged[k] for k in keys if k in merged and merged[k] is not None}

        text = tower("text_config", _TEXT_KEYS)
        vision = tower("vision_config", _VISION_KEYS)
        if isinstance(text.get("eos_token_id"), (list, tuple)):
            raise ConfigError(f"{source}: text_config.eos_token_id={text['eos_token_id']!r}: a list of EOS "
                              f"ids is not supported")
        for key in ("image_size", "patch_size"):
            if key in vision:
                vision[key] = _square(vision[key], f"vision_config.{key}", source)
        data: dict[str, Any] = {"name": str(hf.get("_name_or_path") or name)}
        if "projection_dim" in hf:
            data["projection_dim"] = hf["projection_dim"]
        if hf.get("logit_scale_init_value") is not None:
            data["logit_scale_init"] = hf["logit_scale_init_value"]
        for key in ("image_mean", "image_std"):
            if preprocessor and preprocessor.get(key) is not None:
                data[key] = preprocessor[key]
        try:
            try:
                data["text"] = CLIPTextConfig(**text)
            except ConfigError as e:
                raise ConfigError(f"text_config: {e}") from None
            try:
                data["vision"] = CLIPVisionConfig(**vision)
            except ConfigError as e:
                raise ConfigError(f"vision_config: {e}") from None
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf_config(self, base: dict[str, Any] | None = None) -> dict[str, Any]:
        """The HF config.json: ``base`` (the source's, kept in ``hf/``) with our values written
        over it (``*_config_dict`` merged into ``*_config``); a complete one without ``base``."""
        hf = dict(base or {})
        text = {"model_type": "clip_text_model",
                **(hf.get("text_config") or {}), **(hf.pop("text_config_dict", None) or {})}
        vision = {"model_type": "clip_vision_model",
                  **(hf.get("vision_config") or {}), **(hf.pop("vision_config_dict", None) or {})}
        text.update(dataclasses.asdict(self.text), projection_dim=self.projection_dim)
        vision.update(dataclasses.asdict(self.vision), projection_dim=self.projection_dim)
        hf.setdefault("architectures", ["CLIPModel"])
        hf.update(model_type="clip", projection_dim=self.projection_dim,
                  logit_scale_init_value=self.logit_scale_init, text_config=text, vision_config=vision)
        return hf


def _openai(name: str, text: dict, vision: dict, projection_dim: int) -> CLIPConfig:
    # the OpenAI Hub configs carry the pre-#24773 token ids (bos 0, eos 2, pad 1)
    return CLIPConfig(name=name, projection_dim=projection_dim,
                      text=CLIPTextConfig(bos_token_id=0, eos_token_id=LEGACY_EOS_ID, pad_token_id=1, **text),
                      vision=CLIPVisionConfig(**vision))


_L_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
_L_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 patch_size=14)
VIT_B_32 = _openai("openai/clip-vit-base-patch32",
                   dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                   dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        image_size=224, patch_size=32), 512)
VIT_L_14 = _openai("openai/clip-vit-large-patch14", _L_TEXT, dict(_L_VISION, image_size=224), 768)
VIT_L_14_336 = _openai("openai/clip-vit-large-patch14-336", _L_TEXT, dict(_L_VISION, image_size=336), 768)

#: The public OpenAI architectures, by Hub id and by the short name of the CLIP paper.
NAMED: dict[str, CLIPConfig] = {
    "openai/clip-vit-base-patch32": VIT_B_32, "ViT-B/32": VIT_B_32,
    "openai/clip-vit-large-patch14": VIT_L_14, "ViT-L/14": VIT_L_14,
    "openai/clip-vit-large-patch14-336": VIT_L_14_336, "ViT-L/14-336": VIT_L_14_336,
}


def named_config(name: str) -> CLIPConfig:
    """The architecture of a public CLIP (:data:`NAMED`); an unknown name is a ConfigError."""
    if name not in NAMED:
        raise ConfigError(f"unknown CLIP architecture {name!r}; known: {sorted(NAMED)}")
    return NAMED[name]
