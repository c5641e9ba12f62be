"""Typed configuration of the LLaDA / MMaDA transformer.

One frozen dataclass, :class:`ModelConfig`, holds the architecture (read from a Hugging Face
``config.json`` with the LLaDA/MMaDA keys, or from our YAML files in ``configs/``), the token-id
layout (:class:`TokenIds`: mask, BOS/EOS, reserved task tokens, image-token offset, codebook size),
and the run-time choices that do not change the weights (dtypes, remat policy, attention kernel).

Unknown keys in a YAML file are an error that names the key (a typo never silently falls back to a
default); architectural switches that the reference supports but MMaDA never uses (ALiBi, QK-norm,
biases, weight tying, ...) are rejected when reading a HF config, naming the key and its value.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any, Literal

import yaml

# Real MMaDA / LLaDA special-token ids (MMaDA-8B, MMaDA-Parallel-M; spec mmada_m.md §3.1).
REAL_MASK_ID = 126336
_REAL_SPECIAL = {
    "bos": 126080,
    "eos": 126081,
    "soi": 126084,
    "eoi": 126085,
    "sov": 126086,
    "eov": 126087,
    "t2i": 126088,
    "mmu": 126089,
    "t2v": 126090,
    "v2v": 126091,
    "lvg": 126092,
    "ipad": 126093,
    "r2i": 126094,
    "interleave": 126095,
    "t2it": 126096,
    "start_header": 126346,
    "end_header": 126347,
    "eot_id": 126348,
}
# len(tokenizer) of the LLaDA tokenizer: the image-token offset the MMaDA code uses. It is NOT
# llm_vocab_size (126464); see spec mmada_m.md §7.1.
REAL_IMAGE_OFFSET = 126349
REAL_LLM_VOCAB = 126464
REAL_CODEBOOK = 8192

DTYPES = ("float32", "bfloat16", "float16")
REMAT_POLICIES = ("none", "full", "save_dots", "save_qkv_proj", "save_out_proj")
ATTENTION_IMPLS = ("auto", "xla", "xla_rows", "cudnn", "plain")
MASK_MODES = ("hard", "additive")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file, key and value."""


@dataclasses.dataclass(frozen=True)
class TokenIds:
    """The token-id layout of a checkpoint.

    ``image_offset`` is the id of VQ code 0 (image token of code ``c`` is ``image_offset + c``);
    for the real MMaDA tokenizer it is ``len(tokenizer) = 126349``. ``special`` maps the names of
    the reserved ids (``soi``, ``eoi``, ``t2i``, ``mmu``, ``interleave``, ``ipad``, ``bos``, ...)
    to their ids.
    """

    mask_id: int = REAL_MASK_ID
    image_offset: int = REAL_IMAGE_OFFSET
    codebook_size: int = REAL_CODEBOOK
    llm_vocab_size: int = REAL_LLM_VOCAB
    special: dict[str, int] = dataclasses.field(default_factory=lambda: dict(_REAL_SPECIAL))

    @property
    def bos_id(self) -> int:
        return self.special["bos"]

    @property
    def eos_id(self) -> int:
        return self.special["eos"]

    @property
    def pad_id(self) -> int:
        return self.special.get("pad", self.special["eos"])

    def __getitem__(self, name: str) -> int:
        if name == "mask":
            return self.mask_id
        try:
            return self.special[name]
        except KeyError:
            raise KeyError(f"unknown special token {name!r}; known: {sorted(self.special)}") from None

    @classmethod
    def mmada(cls, shift: int = 0, codebook_size: int = REAL_CODEBOOK,
              llm_vocab_size: int | None = None) -> "TokenIds":
        """The MMaDA layout with every id >= 125952 moved down by ``shift``.

        ``shift=0`` is the real layout; ``shift=125952`` is the small layout of the golden tiny
        models (mask 384, image offset 397, codebook 64).
        """
        return cls(
            mask_id=REAL_MASK_ID - shift,
            image_offset=REAL_IMAGE_OFFSET - shift,
            codebook_size=codebook_size,
            llm_vocab_size=(REAL_LLM_VOCAB - shift) if llm_vocab_size is None else llm_vocab_size,
            special={k: v - shift for k, v in _REAL_SPECIAL.items()},
        )

    def image_token(self, code):
        return code + self.image_offset

    def __hash__(self):  # ``special`` is a dict; hash its items so configs can be static jit args
        return hash((self.mask_id, self.image_offset, self.codebook_size, self.llm_vocab_size,
                     tuple(sorted(self.special.items()))))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """LLaDA / MMaDA transformer: architecture, token layout and run-time options.

    Architecture fields use the reference names (``d_model``, ``n_layers``, ``n_heads``,
    ``n_kv_heads``, ``mlp_hidden_size``, ``rope_theta``, ``rms_norm_eps``). ``vocab_size`` is the
    number of embedding rows (the reference's ``embedding_size``).

    Run-time options:
      * ``dtype``: compute dtype; ``param_dtype``: storage dtype of the parameters (fp32 master
        weights with bf16 compute is ``param_dtype=float32, dtype=bfloat16``).
      * ``remat_policy``: what each scanned block keeps for the backward pass (``none`` keeps
        everything, ``full`` recomputes the whole block, ``save_dots`` keeps matmul outputs,
        ``save_qkv_proj`` / ``save_out_proj`` keep only the named projections).
      * ``attention_impl``: ``auto`` (cuDNN flash on GPU for bf16/fp16, ``xla_rows`` in the samplers'
        forwards on CPU, XLA otherwise), ``xla`` (``jax.nn.dot_product_attention``), ``xla_rows`` (the same, one batch
        row at a time: cache-friendly on CPU), ``cudnn``, or ``plain`` (explicit einsum + fp32
        softmax; the test oracle).
      * ``attention_mask_mode``: what an ``attention_mask`` passed to the model does. ``hard``
        masks padded keys out; ``additive`` reproduces MMaDA-Parallel-M, which ADDS the 0/1 mask
        to the attention scores (padded keys are only down-weighted by e^-1; needed for
        training parity, spec mmada_m.md §1.4).
      * ``matmul_precision``: ``default`` or ``highest`` (fp32 matmuls on TPU/GPU for parity).
    """

    kind: str = "mmada"
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 32
    mlp_hidden_size: int = 12288
    vocab_size: int = 134656
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    max_sequence_length: int = 4096
    tokens: TokenIds = dataclasses.field(default_factory=TokenIds)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    param_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    remat_policy: str = "none"
    attention_impl: str = "auto"
    attention_mask_mode: str = "hard"
    matmul_precision: str = "default"

    def __post_init__(self):
        def bad(key, why):
            raise ConfigError(f"model config: {key}={getattr(self, key)!r}: {why}")

        for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                bad(key, "must be a positive integer")
        if self.d_model % self.n_heads:
            bad("d_model", f"not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            bad("n_kv_heads", f"must divide n_heads={self.n_heads}")
        if self.head_dim % 2:
            bad("d_model", f"head_dim {self.head_dim} must be even for RoPE")
        for key, allowed in (("dtype", DTYPES), ("param_dtype", DTYPES),
                             ("remat_policy", REMAT_POLICIES), ("attention_impl", ATTENTION_IMPLS),
                             ("attention_mask_mode", MASK_MODES),
                             ("matmul_precision", ("default", "highest"))):
            if getattr(self, key) not in allowed:
                bad(key, f"must be one of {allowed}")
        t = self.tokens
        if t.image_offset + t.codebook_size > self.vocab_size:
            raise ConfigError(
                f"model config: image tokens {t.image_offset}..{t.image_offset + t.codebook_size - 1} "
                f"(image_offset + codebook_size) do not fit in vocab_size={self.vocab_size}")
        if not 0 <= t.mask_id < self.vocab_size:
            raise ConfigError(f"model config: tokens.mask_id={t.mask_id} outside vocab_size={self.vocab_size}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        d, f, v, h = self.d_model, self.mlp_hidden_size, self.vocab_size, self.head_dim
        per_layer = 2 * d + d * self.n_heads * h * 2 + 2 * d * self.n_kv_heads * h + 3 * d * f
        return 2 * v * d + d + self.n_layers * per_layer

    # ------------------------------------------------------------------ YAML

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "ModelConfig":
        data = dict(data)
        tokens = data.pop("tokens", None)
        check_keys(data, {f.name for f in dataclasses.fields(cls)} - {"tokens"}, source)
        if tokens is not None:
            if not isinstance(tokens, dict):
                raise ConfigError(f"{source}: 'tokens' must be a mapping, got {tokens!r}")
            check_keys(tokens, {f.name for f in dataclasses.fields(TokenIds)}, f"{source}: tokens")
            data["tokens"] = TokenIds(**tokens)
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ModelConfig":
        config = load_config(path)
        if not isinstance(config, cls):
            raise ConfigError(f"{path}: holds a {type(config).__name__}, not a transformer config")
        return config

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump({"model": self.to_dict()}, sort_keys=False))

    # ------------------------------------------------------------- HF config

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], source: str = "config.json", *,
                       kind: str | None = None, **overrides) -> "ModelConfig":
        """Read a LLaDA / MMaDA ``config.json`` (the reference ``ModelConfig`` keys)."""
        def get(key, default=None):
            value = hf.get(key, default)
            return default if value is None else value

        required_off = {
            "alibi": False, "attention_layer_norm": False, "include_bias": False,
            "include_qkv_bias": False, "bias_for_layer_norm": False, "weight_tying": False,
            "scale_logits": False, "input_emb_norm": False, "clip_qkv": None,
        }
        for key, want in required_off.items():
            if key in hf and hf[key] not in (want, None, False):
                raise ConfigError(f"{source}: {key}={hf[key]!r} is not supported (MMaDA uses {want})")
        expected = {"block_type": "llama", "activation_type": ("silu", "swiglu"),
                    "layer_norm_type": "rms", "rope": True, "block_group_size": 1}
        for key, want in expected.items():
            if key in hf:
                ok = hf[key] in want if isinstance(want, tuple) else hf[key] == want
                if not ok:
                    raise ConfigError(f"{source}: {key}={hf[key]!r} is not supported (expected {want!r})")
        missing = [k for k in ("d_model", "n_heads", "n_layers") if k not in hf]
        if missing:
            raise ConfigError(f"{source}: not a LLaDA/MMaDA config, missing keys {missing}")
        d_model, n_heads = int(hf["d_model"]), int(hf["n_heads"])
        n_kv = get("n_kv_heads")
        if n_kv is None:
            n_kv = 1 if hf.get("multi_query_attention") else n_heads
        mlp = get("mlp_hidden_size") or int(get("mlp_ratio", 4) * d_model)
        vocab = int(get("embedding_size") or hf["vocab_size"])
        kind = kind or detect_kind(hf, source)
        mask_id = int(get("mask_token_id", REAL_MASK_ID))
        shift = REAL_MASK_ID - mask_id
        if kind == "dimoo":
            tokens = dimoo_tokens(hf, shift)
        else:
            tokens = TokenIds.mmada(
                shift=shift, codebook_size=int(get("codebook_size", REAL_CODEBOOK)),
                llm_vocab_size=int(get("llm_vocab_size", REAL_LLM_VOCAB - shift)))
        special = dict(tokens.special)
        if hf.get("eos_token_id") is not None:
            special["eos"] = int(hf["eos_token_id"])
        if hf.get("pad_token_id") is not None:
            special["pad"] = int(hf["pad_token_id"])
        tokens = dataclasses.replace(tokens, special=special)
        fields = dict(
            kind=kind, d_model=d_model, n_layers=int(hf["n_layers"]), n_heads=n_heads,
            n_kv_heads=int(n_kv), mlp_hidden_size=int(mlp), vocab_size=vocab,
            rope_theta=float(get("rope_theta", 10000.0)), rms_norm_eps=float(get("rms_norm_eps", 1e-5)),
            max_sequence_length=int(get("max_sequence_length", 4096)), tokens=tokens)
        fields.update(overrides)
        try:
            return cls(**fields)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_hf_dir(cls, path: str | Path, **kw) -> "ModelConfig":
        path = Path(path) / "config.json"
        if not path.exists():
            raise ConfigError(f"no config.json in {path.parent}")
        return cls.from_hf_config(read_file(path, json.loads, "JSON"), source=str(path), **kw)

    def to_hf_config(self, base: dict[str, Any] | None = None) -> dict[str, Any]:
        """A reference ``config.json`` for this model; ``base`` (the source file) is kept otherwise."""
        hf = dict(base or {})
        if not base:
            hf.update(_HF_TEMPLATE)
            hf["model_type"] = "llada" if self.kind in ("llada", "dimoo") else "mmada"
            hf["architectures"] = [{"mmada": "MMadaModelLM", "llada": "LLaDAModelLM",
                                    "dimoo": "LLaDAForMultiModalGeneration"}[self.kind]]
        t = self.tokens
        hf.update(d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
                  n_kv_heads=self.n_kv_heads, mlp_hidden_size=self.mlp_hidden_size,
                  embedding_size=self.vocab_size, rope_theta=self.rope_theta,
                  rms_norm_eps=self.rms_norm_eps, max_sequence_length=self.max_sequence_length,
                  mask_token_id=t.mask_id)
        hf.setdefault("vocab_size", self.vocab_size)
        if self.kind == "mmada":
            hf.setdefault("codebook_size", t.codebook_size)
            hf.setdefault("llm_vocab_size", t.llm_vocab_size)
            hf.setdefault("new_vocab_size", self.vocab_size)
        if self.kind == "dimoo":
            hf.setdefault("text_vocab_size", t.image_offset)
            hf.setdefault("codebook_size", t.codebook_size)
        return hf


def detect_kind(hf: dict[str, Any], source: str = "config.json") -> str:
    """``mmada`` (MMaDA-8B, MMaDA-Parallel-M), ``llada`` (LLaDA-8B) or ``dimoo`` (MMaDA-Parallel-A)."""
    archs = hf.get("architectures") or []
    if "LLaDAForMultiModalGeneration" in archs or "text_vocab_size" in hf:
        return "dimoo"
    model_type = hf.get("model_type")
    if model_type == "mmada" or "MMadaModelLM" in archs:
        return "mmada"
    if model_type == "llada" or any(a.startswith("LLaDA") for a in archs):
        return "llada"
    raise ConfigError(f"{source}: cannot tell the model kind (model_type={model_type!r}, "
                      f"architectures={archs!r}); pass --kind")


def dimoo_tokens(hf: dict[str, Any], shift: int) -> TokenIds:
    """Lumina-DiMOO / MMaDA-Parallel-A ids (golden README 'Token-id layout of MMaDA-Parallel-A')."""
    real = {"bos": 126080, "eos": 126081, "newline": 126084, "answer_pad": 126339,
            "system": 126340, "end_system": 126341, "user": 126342, "end_user": 126343,
            "boi": 126349, "eoi": 126350, "uncondition": 126351, "boa": 126354, "eoa": 126355}
    offset = int(hf.get("text_vocab_size") or 126356 - shift)
    return TokenIds(mask_id=REAL_MASK_ID - shift, image_offset=offset,
                    codebook_size=int(hf.get("codebook_size") or REAL_CODEBOOK),
                    llm_vocab_size=offset, special={k: v - shift for k, v in real.items()})


def check_keys(data: dict, known: set[str], source: str) -> None:
    """Raise a ConfigError naming the first unknown key of ``data`` and the closest known one."""
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(known)}"
            raise ConfigError(f"{source}: unknown key {key!r}{hint}")


# Keys of the reference config.json that we do not model; written when exporting a model that
# never had a HF config (trained from a YAML config).
_HF_TEMPLATE = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "attention_dropout": 0.0,
    "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama",
    "embedding_dropout": 0.0, "flash_attention": False, "include_bias": False,
    "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mlp_ratio": 4, "multi_query_attention": None,
    "precision": "amp_bf16", "residual_dropout": 0.0, "rope": True, "rope_full_precision": True,
    "scale_logits": False, "weight_tying": False, "use_cache": False,
}


def config_sections() -> dict[str, Any]:
    """Top-level sections of a config.yaml -> the function that reads them
    (``from_dict(data: dict, source: str)``): ``model`` (the transformer), ``vq`` (the image
    tokenizers) and ``clip`` (a CLIP model, e.g. of the ``clip`` reward). The one table of
    sections; imported here, not registered by other modules."""
    from .clip.config import SECTION as CLIP_SECTION, CLIPConfig   # both import this module
    from .vq.config import SECTION, vq_config_from_dict
    return {"model": ModelConfig.from_dict, SECTION: vq_config_from_dict, CLIP_SECTION: CLIPConfig.from_dict}


def read_file(path: Path, parse, what: str):
    """``parse(text)`` of a config file; a missing file or a parse error is a ConfigError naming it."""
    try:
        return parse(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {what}: {e}") from None


def load_config(path: str | Path):
    """A typed config from a YAML file, a converted checkpoint directory or a HF directory."""
    path = Path(path)
    if path.is_dir():
        ours = path / CONFIG_FILE
        if not ours.exists():
            return ModelConfig.from_hf_dir(path)
        path = ours
    if path.suffix == ".json":
        return ModelConfig.from_hf_config(read_file(path, json.loads, "JSON"), source=str(path))
    data = read_file(path, yaml.safe_load, "YAML")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    readers = config_sections()
    sections = [k for k in data if k in readers]
    if len(sections) != 1:
        raise ConfigError(f"{path}: expected exactly one of the sections "
                          f"{list(readers)}, found {sorted(data)}")
    name = sections[0]
    return readers[name](data[name], str(path))


CONFIG_FILE = "config.yaml"
