"""Typed configs of the two image tokenizers, read from our YAML (``vq:`` section) or the
reference ``config.json``.

* :class:`MagvitV2Config` (``kind: magvitv2``, MMaDA / MMaDA-Parallel-M; spec mmada_m.md §2):
  the constructor arguments of the reference ``VQGANEncoder`` / ``VQGANDecoder`` /
  ``LFQuantizer``. The reference ``MAGVITv2.__init__`` takes no arguments, so a Hub
  ``config.json`` without ``encoder``/``decoder`` sections means the class defaults (the real
  architecture, equal to :data:`MAGVITV2_REAL`).
* :class:`AmusedVQConfig` (``kind: amused``, MMaDA-Parallel-A; spec mmada_a.md §2): the
  diffusers ``VQModel`` config keys.

Architectural switches that the reference supports but these tokenizers never use (attention
inside the levels, ``double_z``, attention in the diffusers mid block, spatial norm, ...) are
rejected with the key and value, never silently ignored. Both configs are frozen (hashable), so
they can be static arguments of jitted functions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, check_keys

SECTION = "vq"
DTYPES = ("float32", "bfloat16", "float16")


def _int_tuple(value, key: str, source: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise ConfigError(f"{source}: {key}={value!r} must be a non-empty list of positive integers")
    return tuple(int(v) for v in value)


def _positive(value, key: str, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{source}: {key}={value!r} must be a positive integer")
    return value


class _YamlMixin:
    """``from_dict`` / ``to_dict`` / ``to_yaml`` shared by both configs (tuples written as lists)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config"):
        check_keys(data, {f.name for f in dataclasses.fields(cls)}, source)
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump({SECTION: self.to_dict()}, sort_keys=False))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# ------------------------------------------------------------------------------- MAGVIT-v2

#: GroupNorm settings the reference MAGVIT-v2 hard-codes (32 groups, eps 1e-6). A config with
#: others (the demo tokenizer of the synthetic world: 8 groups) writes them into its config.json's
#: encoder/decoder sections under these keys, which this project reads back and the PyTorch
#: reference ignores: such a tokenizer runs here only.
NORM_KEYS = ("norm_groups", "norm_eps")


@dataclasses.dataclass(frozen=True)
class MagvitV2Config(_YamlMixin):
    """MAGVIT-v2 (LFQ) tokenizer. Defaults are the real ``showlab/magvitv2`` architecture.

    ``z_channels`` is both the latent width and the LFQ ``codebook_dim`` (the codebook has
    ``2 ** z_channels`` entries). ``resolution`` / ``attn_resolutions`` are kept only to rebuild
    the reference config; attention inside a level (a level resolution in
    ``attn_resolutions``) is not supported and rejected. ``image_size`` is the side every image
    is squashed to by the MMaDA preprocessing (``image_transform_squash``).
    """

    kind: str = "magvitv2"
    enc_ch: int = 128
    enc_ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4)
    enc_num_res_blocks: tuple[int, ...] = (4, 3, 4, 3, 4)
    dec_ch: int = 128
    dec_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    dec_num_res_blocks: tuple[int, ...] = (4, 4, 3, 4, 3)
    z_channels: int = 13
    in_channels: int = 3
    out_channels: int = 3
    resolution: int = 256
    attn_resolutions: tuple[int, ...] = (5,)
    norm_groups: int = 32
    norm_eps: float = 1e-6
    image_size: int = 512
    param_dtype: str = "float32"

    def __post_init__(self):
        src = "magvitv2 config"
        if self.kind != "magvitv2":
            raise ConfigError(f"{src}: kind={self.kind!r} must be 'magvitv2'")
        for key in ("enc_ch", "dec_ch", "z_channels", "in_channels", "out_channels", "resolution",
                    "norm_groups", "image_size"):
            _positive(getattr(self, key), key, src)
        for key in ("enc_ch_mult", "enc_num_res_blocks", "dec_ch_mult", "dec_num_res_blocks"):
            object.__setattr__(self, key, _int_tuple(getattr(self, key), key, src))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if len(self.enc_num_res_blocks) != len(self.enc_ch_mult):
            raise ConfigError(f"{src}: enc_num_res_blocks={list(self.enc_num_res_blocks)} needs one entry "
                              f"per level of enc_ch_mult={list(self.enc_ch_mult)}")
        if len(self.dec_num_res_blocks) != len(self.dec_ch_mult):
            raise ConfigError(f"{src}: dec_num_res_blocks={list(self.dec_num_res_blocks)} needs one entry "
                              f"per level of dec_ch_mult={list(self.dec_ch_mult)}")
        if len(self.enc_ch_mult) != len(self.dec_ch_mult):
            raise ConfigError(f"{src}: encoder ({len(self.enc_ch_mult)}) and decoder "
                              f"({len(self.dec_ch_mult)}) must have the same number of levels")
        if self.z_channels > 30:
            raise ConfigError(f"{src}: z_channels={self.z_channels} gives codes beyond int32")
        for side, ch, mult in (("encoder", self.enc_ch, self.enc_ch_mult),
                               ("decoder", self.dec_ch, self.dec_ch_mult)):
            for m in mult:
                if (ch * m) % self.norm_groups:
                    raise ConfigError(f"{src}: {side} width {ch * m} is not divisible by "
                                      f"norm_groups={self.norm_groups}")
        levels = [self.resolution // 2 ** i for i in range(len(self.enc_ch_mult))]
        used = sorted(set(levels) & set(self.attn_resolutions))
        if used:
            raise ConfigError(f"{src}: attn_resolutions={list(self.attn_resolutions)} puts attention "
                              f"inside the level(s) of resolution {used}; only the mid-block attention "
                              f"of MAGVIT-v2 is supported")
        if self.param_dtype not in DTYPES:
            raise ConfigError(f"{src}: param_dtype={self.param_dtype!r} must be one of {DTYPES}")

    @property
    def codebook_size(self) -> int:
        return 2 ** self.z_channels

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.enc_ch_mult) - 1)

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], source: str = "config.json") -> "MagvitV2Config":
        """Read the reference config: sections ``encoder``, ``decoder``, ``quantizer`` holding the
        constructor arguments (as the golden tiny model writes them), or none of them (the Hub
        file of the argument-less ``MAGVITv2``: the class defaults)."""
        sections = [k for k in ("encoder", "decoder", "quantizer") if k in hf]
        if not sections:
            return cls()
        if len(sections) != 3:
            raise ConfigError(f"{source}: has {sections} but not all of encoder, decoder, quantizer")
        enc, dec, q = hf["encoder"], hf["decoder"], hf["quantizer"]

        def need(section: dict, name: str, key: str, default=None):
            if key not in section:
                if default is not None:
                    return default
                raise ConfigError(f"{source}: {name}.{key} is missing")
            return section[key]

        for name, sec in (("encoder", enc), ("decoder", dec)):
            if need(sec, name, "double_z", False):
                raise ConfigError(f"{source}: {name}.double_z=True is not supported (MAGVIT-v2 uses False)")
            if float(need(sec, name, "dropout", 0.0)) != 0.0:
                raise ConfigError(f"{source}: {name}.dropout={sec['dropout']!r}: only 0 is supported")
        z = need(enc, "encoder", "z_channels")
        if need(dec, "decoder", "z_channels") != z:
            raise ConfigError(f"{source}: decoder.z_channels={dec['z_channels']} differs from "
                              f"encoder.z_channels={z}")
        if need(q, "quantizer", "codebook_dim") != z:
            raise ConfigError(f"{source}: quantizer.codebook_dim={q['codebook_dim']} must equal "
                              f"encoder.z_channels={z} (LFQ quantizes every latent channel)")
        if q.get("num_codebook_entry", -1) not in (-1, None, 2 ** z):
            raise ConfigError(f"{source}: quantizer.num_codebook_entry={q['num_codebook_entry']} must "
                              f"be -1 or 2**codebook_dim={2 ** z}")
        for key in ("in_ch", "out_ch", "resolution", "attn_resolutions", *NORM_KEYS):
            if key in dec and key in enc and dec[key] != enc[key]:
                raise ConfigError(f"{source}: decoder.{key}={dec[key]!r} differs from encoder.{key}={enc[key]!r}")
        try:
            return cls(enc_ch=need(enc, "encoder", "ch"), enc_ch_mult=need(enc, "encoder", "ch_mult"),
                       enc_num_res_blocks=need(enc, "encoder", "num_res_blocks"),
                       dec_ch=need(dec, "decoder", "ch"), dec_ch_mult=need(dec, "decoder", "ch_mult"),
                       dec_num_res_blocks=need(dec, "decoder", "num_res_blocks"),
                       z_channels=z, in_channels=enc.get("in_ch", 3), out_channels=dec.get("out_ch", 3),
                       resolution=enc.get("resolution", 256),
                       attn_resolutions=tuple(enc.get("attn_resolutions", (5,))),
                       image_size=int(hf.get("image_resolution", 512)),
                       **{k: enc[k] for k in NORM_KEYS if k in enc})
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf_config(self, base: dict[str, Any] | None = None) -> dict[str, Any]:
        """The reference config: ``base`` (the source's config.json) updated with our sections.
        A ``base`` without sections (the Hub file) is kept as is when we are the class defaults."""
        hf = dict(base or {})
        if base is not None and not any(k in base for k in ("encoder", "decoder", "quantizer")) \
                and dataclasses.replace(self, image_size=512, param_dtype="float32") == MAGVITV2_REAL:
            return hf

        def part(ch, mult, nrb):
            return {"ch": ch, "ch_mult": list(mult), "num_res_blocks": list(nrb),
                    "attn_resolutions": list(self.attn_resolutions), "dropout": 0.0,
                    "in_ch": self.in_channels, "out_ch": self.out_channels,
                    "resolution": self.resolution, "z_channels": self.z_channels, "double_z": False}

        hf["encoder"] = {**hf.get("encoder", {}), **part(self.enc_ch, self.enc_ch_mult, self.enc_num_res_blocks)}
        hf["decoder"] = {**hf.get("decoder", {}), **part(self.dec_ch, self.dec_ch_mult, self.dec_num_res_blocks)}
        hf["image_resolution"] = self.image_size
        for name in ("encoder", "decoder"):
            for key in NORM_KEYS:
                hf[name].pop(key, None)
                if getattr(self, key) != getattr(MagvitV2Config, key):
                    hf[name][key] = getattr(self, key)
        hf["quantizer"] = {"num_codebook_entry": -1, "beta": 0.25, "entropy_multiplier": 0.1,
                           "commit_loss_multiplier": 0.1, **hf.get("quantizer", {}),
                           "codebook_dim": self.z_channels}
        return hf


MAGVITV2_REAL = MagvitV2Config()


# ------------------------------------------------------------------------------- aMUSEd VQ

_AMUSED_FIXED = {  # diffusers VQModel keys whose value we require (what aMUSEd uses)
    "act_fn": "silu",
    "mid_block_add_attention": False,
    "lookup_from_codebook": True,
    "norm_type": "group",
}
_AMUSED_IGNORED = {"_class_name", "_diffusers_version", "_name_or_path", "scaling_factor",
                   "force_upcast", "sample_size", "torch_dtype", "down_block_types", "up_block_types",
                   *_AMUSED_FIXED}


@dataclasses.dataclass(frozen=True)
class AmusedVQConfig(_YamlMixin):
    """aMUSEd VQ-GAN (diffusers ``VQModel``). Defaults are the real aMUSEd / Lumina-DiMOO VQ.

    ``vq_embed_dim`` None means ``latent_channels`` (as in diffusers). Decoder up blocks have
    ``layers_per_block + 1`` ResNets, encoder down blocks ``layers_per_block``.
    """

    kind: str = "amused"
    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512, 768)
    layers_per_block: int = 2
    latent_channels: int = 64
    vq_embed_dim: int | None = None
    num_vq_embeddings: int = 8192
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    param_dtype: str = "float32"

    def __post_init__(self):
        src = "amused config"
        if self.kind != "amused":
            raise ConfigError(f"{src}: kind={self.kind!r} must be 'amused'")
        object.__setattr__(self, "block_out_channels",
                           _int_tuple(self.block_out_channels, "block_out_channels", src))
        for key in ("in_channels", "out_channels", "layers_per_block", "latent_channels",
                    "num_vq_embeddings", "norm_num_groups"):
            _positive(getattr(self, key), key, src)
        if self.vq_embed_dim is not None:
            _positive(self.vq_embed_dim, "vq_embed_dim", src)
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ConfigError(f"{src}: block_out_channels entry {c} is not divisible by "
                                  f"norm_num_groups={self.norm_num_groups}")
        if self.param_dtype not in DTYPES:
            raise ConfigError(f"{src}: param_dtype={self.param_dtype!r} must be one of {DTYPES}")

    @property
    def embed_dim(self) -> int:
        return self.vq_embed_dim or self.latent_channels

    @property
    def codebook_size(self) -> int:
        return self.num_vq_embeddings

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], source: str = "config.json") -> "AmusedVQConfig":
        """Read a diffusers ``VQModel`` config.json (``vqvae/config.json``)."""
        if hf.get("_class_name", "VQModel") != "VQModel":
            raise ConfigError(f"{source}: _class_name={hf['_class_name']!r}, expected 'VQModel'")
        for key, want in _AMUSED_FIXED.items():
            if key in hf and hf[key] != want:
                raise ConfigError(f"{source}: {key}={hf[key]!r} is not supported (the aMUSEd VQ uses {want!r})")
        n = len(hf.get("block_out_channels") or ())
        for key, want in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            value = hf.get(key, [want] * n)
            if list(value) != [want] * n:
                raise ConfigError(f"{source}: {key}={value!r} is not supported (needs {n} x {want!r})")
        fields = {f.name for f in dataclasses.fields(cls)} - {"kind", "norm_eps", "param_dtype"}
        check_keys(hf, fields | _AMUSED_IGNORED, source)
        data = {k: hf[k] for k in fields if k in hf}
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None

    def to_hf_config(self, base: dict[str, Any] | None = None) -> dict[str, Any]:
        n = len(self.block_out_channels)
        hf = {"_class_name": "VQModel", "force_upcast": False, "sample_size": 32,
              "scaling_factor": 0.18215, **(base or {}), **_AMUSED_FIXED}
        hf.update(in_channels=self.in_channels, out_channels=self.out_channels,
                  block_out_channels=list(self.block_out_channels),
                  layers_per_block=self.layers_per_block, latent_channels=self.latent_channels,
                  vq_embed_dim=self.vq_embed_dim, num_vq_embeddings=self.num_vq_embeddings,
                  norm_num_groups=self.norm_num_groups,
                  down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n)
        return hf


AMUSED_REAL = AmusedVQConfig()

VQ_CONFIGS = {"magvitv2": MagvitV2Config, "amused": AmusedVQConfig}
VQConfig = MagvitV2Config | AmusedVQConfig


def vq_config_from_dict(data: dict[str, Any], source: str = "config") -> VQConfig:
    """The ``vq:`` section of a config.yaml -> the typed config named by its ``kind``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the 'vq' section must be a mapping, got {data!r}")
    kind = data.get("kind")
    if kind not in VQ_CONFIGS:
        raise ConfigError(f"{source}: vq.kind={kind!r} must be one of {sorted(VQ_CONFIGS)}")
    return VQ_CONFIGS[kind].from_dict(dict(data), source)
