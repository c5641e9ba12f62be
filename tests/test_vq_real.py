"""The real-size tokenizer configs, built abstractly (nnx.eval_shape; nothing is allocated).

Checks that configs/*.yaml equal the reference's real configurations recorded with the goldens,
that the parameter counts are right (aMUSEd: the count and full key/shape list diffusers
reports; MAGVIT-v2: an independent count from the architecture, validated on the tiny golden
checkpoint), and that 512x512 images give 32x32 = 1024 codes and decode back to 512x512.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mmada_jax
from conftest import golden_path
from mmada_jax.vq import checkpoint as vq_ckpt
from mmada_jax.vq.base import AmusedTokenizer, MagvitV2Tokenizer
from mmada_jax.vq.config import AmusedVQConfig, MagvitV2Config

pytestmark = pytest.mark.golden
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def magvit_count(enc_ch, enc_mult, enc_nrb, dec_ch, dec_mult, dec_nrb, z, cin=3, cout=3) -> int:
    """Parameters of the reference VQGANEncoder + VQGANDecoder, counted from the architecture."""
    conv = lambda i, o, k: i * o * k * k + o            # noqa: E731
    gn = lambda c: 2 * c                                 # noqa: E731
    res = lambda i, o: gn(i) + conv(i, o, 3) + gn(o) + conv(o, o, 3) + (conv(i, o, 1) if i != o else 0)  # noqa: E731
    mid = lambda c: 2 * res(c, c) + gn(c) + 4 * conv(c, c, 1)  # noqa: E731
    n = len(enc_mult)
    total, c = conv(cin, enc_ch, 3), enc_ch
    for i in range(n):
        for j in range(enc_nrb[i]):
            total += res(c, enc_ch * enc_mult[i])
            c = enc_ch * enc_mult[i]
        if i < n - 1:
            total += conv(c, c, 3)
    total += mid(c) + gn(c) + conv(c, z, 3) + conv(z, z, 1)
    c = dec_ch * dec_mult[-1]
    total += conv(z, z, 1) + conv(z, c, 3) + mid(c)
    for i in reversed(range(n)):
        for j in range(dec_nrb[i]):
            total += res(c, dec_ch * dec_mult[i])
            c = dec_ch * dec_mult[i]
        if i > 0:
            total += conv(c, c, 3)
    return total + gn(c) + conv(c, cout, 3)


def _count_args(hf: dict) -> tuple:
    e, d = hf["encoder"], hf["decoder"]
    return (e["ch"], e["ch_mult"], e["num_res_blocks"], d["ch"], d["ch_mult"], d["num_res_blocks"],
            e["z_channels"], e["in_ch"], d["out_ch"])


def test_magvit_count_formula_matches_tiny_checkpoint():
    from safetensors.numpy import load_file
    d = golden_path("magvitv2_tiny")
    weights = load_file(str(d / "model.safetensors"))
    stored = sum(v.size for k, v in weights.items() if not k.startswith("quantize."))
    hf = json.loads((d / "config.json").read_text())
    assert magvit_count(*_count_args(hf)) == stored
    assert vq_ckpt.num_params(MagvitV2Config.from_hf_config(hf)) == stored


def test_real_magvit_config_and_count():
    real = json.loads((golden_path("magvitv2_tiny") / "magvitv2_real_config.json").read_text())
    config = mmada_jax.load_config(CONFIGS / "magvitv2.yaml")
    assert config == MagvitV2Config.from_hf_config(real)
    assert config.codebook_size == real["derived"]["codebook_size"]
    assert config.downsample == real["derived"]["downsample_factor"]
    assert vq_ckpt.num_params(config) == magvit_count(*_count_args(real))


def test_real_amused_config_count_and_keys():
    real = json.loads((golden_path("amused_vq_tiny") / "amused_vq_real_config.json").read_text())
    config = mmada_jax.load_config(CONFIGS / "amused_vq.yaml")
    assert config == AmusedVQConfig.from_hf_config(real["config_as_written_by_diffusers_0.34.0"])
    assert vq_ckpt.num_params(config) == real["n_params"]
    # every reference key and shape is produced by exactly one of our parameters
    shapes = {k: tuple(v) for k, v in real["state_dict_shapes"].items()}
    abstract = vq_ckpt.abstract_params(config)
    maps = vq_ckpt.param_maps(config)
    assert sorted(m.sources[0] for m in maps) == sorted(shapes)
    for m in maps:
        assert m.shape_to_ours(shapes[m.sources[0]]) == tuple(abstract[m.path].shape), m.sources[0]


@pytest.mark.parametrize("yaml_name,cls", [("magvitv2.yaml", MagvitV2Tokenizer),
                                           ("amused_vq.yaml", AmusedTokenizer)])
def test_real_512_gives_32x32_codes(yaml_name, cls):
    config = mmada_jax.load_config(CONFIGS / yaml_name)
    tok = cls(vq_ckpt.abstract_model(config))       # abstract parameters: shapes only
    side = 512
    assert tok.grid(side, side) == (32, 32) and tok.num_tokens(side, side) == 1024
    assert tok.codebook_size == 8192
    codes = jax.eval_shape(tok._encode, tok.state, jax.ShapeDtypeStruct((2, side, side, 3), jnp.float32), None)
    assert codes.shape == (2, 1024) and codes.dtype == jnp.int32
    images = jax.eval_shape(tok._decode, tok.state, jax.ShapeDtypeStruct((2, 1024), jnp.int32), (32, 32), None)
    assert images.shape == (2, side, side, 3) and images.dtype == jnp.float32
    if cls is AmusedTokenizer:   # non-square grids (-A): 640x384 -> 40x24 tokens (spec mmada_a.md §2.2)
        assert tok.grid(384, 640) == (24, 40)
        images = jax.eval_shape(tok._decode, tok.state, jax.ShapeDtypeStruct((1, 960), jnp.int32), (24, 40), 1)
        assert images.shape == (1, 384, 640, 3)


def test_abstract_model_has_no_sharding_metadata():
    state = nnx.state(vq_ckpt.abstract_model(mmada_jax.load_config(CONFIGS / "amused_vq.yaml")), nnx.Param)
    for _, var in nnx.to_flat_state(state):
        assert not var.get_metadata().get("out_sharding")
    assert all(np.dtype(s.dtype) == np.float32 for s in vq_ckpt.abstract_params(
        mmada_jax.load_config(CONFIGS / "magvitv2.yaml")).values())
