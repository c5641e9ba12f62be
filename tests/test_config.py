"""The typed config: HF config.json, our YAML files, the token layout, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import golden_path
from mmada_jax import ConfigError, ModelConfig, TokenIds, load_config
from mmada_jax.config import REAL_IMAGE_OFFSET

TRANSFORMER_CONFIGS = [p for p in sorted(Path("configs").glob("*.yaml")) if "model" in yaml.safe_load(p.read_text())]


@pytest.mark.parametrize("path", TRANSFORMER_CONFIGS, ids=str)
def test_shipped_transformer_configs_load(path):
    config = ModelConfig.from_yaml(path)
    assert config.tokens.image_offset + config.tokens.codebook_size <= config.vocab_size


def test_8b_configs():
    m = ModelConfig.from_yaml("configs/mmada_parallel_m.yaml")
    assert (m.d_model, m.n_layers, m.n_heads, m.mlp_hidden_size, m.vocab_size) == (4096, 32, 32, 12288, 134656)
    assert m.num_params() == 8_082_690_048
    assert m.tokens.image_offset == REAL_IMAGE_OFFSET == 126349 and m.tokens.mask_id == 126336
    assert m.tokens["interleave"] == 126095 and m.tokens["soi"] == 126084
    assert m.attention_mask_mode == "additive"
    assert ModelConfig.from_yaml("configs/mmada_8b.yaml").attention_mask_mode == "hard"
    assert ModelConfig.from_yaml("configs/llada_8b.yaml").vocab_size == 126464


@pytest.mark.golden
def test_hf_config_of_the_tiny_models():
    tiny = ModelConfig.from_hf_dir(golden_path("mmada_tiny"))
    hf = json.loads((golden_path("mmada_tiny") / "config.json").read_text())
    assert (tiny.d_model, tiny.n_layers, tiny.n_heads, tiny.mlp_hidden_size, tiny.vocab_size) == (
        hf["d_model"], hf["n_layers"], hf["n_heads"], hf["mlp_hidden_size"], hf["embedding_size"])
    assert tiny.tokens.mask_id == hf["mask_token_id"] and tiny.tokens.eos_id == hf["eos_token_id"]
    assert tiny.tokens.codebook_size == hf["codebook_size"]
    # small layout: every real id shifted by the same amount as the mask id
    shift = 126336 - hf["mask_token_id"]
    assert tiny.tokens.image_offset == REAL_IMAGE_OFFSET - shift
    assert tiny.tokens["interleave"] == 126095 - shift
    full = ModelConfig.from_hf_dir(golden_path("mmada_tiny_fullvocab"))
    assert full.tokens.image_offset == 126349 and full.tokens.mask_id == 126336
    assert full.tokens["interleave"] == TokenIds.mmada(0)["interleave"] == 126095
    # the whole small-layout token table, rebuilt from the golden config.json alone
    real = TokenIds.mmada(0).special
    expected = TokenIds(mask_id=hf["mask_token_id"], image_offset=REAL_IMAGE_OFFSET - shift,
                        codebook_size=hf["codebook_size"], llm_vocab_size=hf["llm_vocab_size"],
                        special={**{k: v - shift for k, v in real.items()},
                                 "eos": hf["eos_token_id"], "pad": hf["pad_token_id"]})
    assert tiny.tokens == expected
    assert tiny.tokens.image_offset + tiny.tokens.codebook_size <= hf["embedding_size"]
    # the shipped YAML claims to describe this golden model: check it wherever it has the same sizes
    # (another golden set with other sizes is simply not the model the YAML describes)
    shipped = ModelConfig.from_yaml("configs/mmada_tiny.yaml").replace(kind="mmada")
    sizes = lambda c: (c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.mlp_hidden_size, c.vocab_size,  # noqa: E731
                       c.tokens.codebook_size, c.tokens.mask_id)
    if sizes(shipped) == sizes(tiny):
        assert shipped.tokens == tiny.tokens


def test_yaml_round_trip(tmp_path):
    config = ModelConfig.from_yaml("configs/mmada_parallel_m.yaml").replace(remat_policy="save_dots")
    config.to_yaml(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_yaml_typo_is_named(tmp_path):
    (tmp_path / "c.yaml").write_text("model:\n  d_modle: 64\n")
    with pytest.raises(ConfigError, match=r"d_modle.*did you mean 'd_model'"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "t.yaml").write_text("model:\n  tokens: {mask_idd: 3}\n")
    with pytest.raises(ConfigError, match="mask_idd"):
        load_config(tmp_path / "t.yaml")
    (tmp_path / "s.yaml").write_text("modle:\n  d_model: 64\n")
    with pytest.raises(ConfigError, match="expected exactly one of the sections"):
        load_config(tmp_path / "s.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("change,pattern", [
    ({"n_heads": 5}, "d_model"), ({"n_kv_heads": 3}, "n_kv_heads"), ({"dtype": "float8"}, "dtype"),
    ({"remat_policy": "everything"}, "remat_policy"), ({"attention_mask_mode": "soft"}, "attention_mask_mode"),
    ({"vocab_size": 400}, "image tokens"), ({"n_layers": 0}, "n_layers"),
])
def test_invalid_values_are_named(change, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ModelConfig.from_yaml("configs/mmada_tiny.yaml").replace(**change)


@pytest.mark.parametrize("key,value", [("alibi", True), ("weight_tying", True), ("include_bias", True),
                                       ("attention_layer_norm", True), ("layer_norm_type", "default")])
def test_unsupported_hf_switches(key, value):
    hf = json.loads((golden_path("mmada_tiny") / "config.json").read_text())
    hf[key] = value
    with pytest.raises(ConfigError, match=key):
        ModelConfig.from_hf_config(hf)


def test_hf_config_export_without_a_source():
    config = ModelConfig.from_yaml("configs/mmada_tiny.yaml")
    hf = config.to_hf_config()
    assert hf["model_type"] == "mmada" and hf["architectures"] == ["MMadaModelLM"]
    back = ModelConfig.from_hf_config(hf)
    assert (back.d_model, back.n_layers, back.vocab_size, back.tokens.mask_id) == (
        config.d_model, config.n_layers, config.vocab_size, config.tokens.mask_id)


@pytest.mark.golden
@pytest.mark.parametrize("name", ["mmada_parallel_a", "lumina_dimoo"])
def test_parallel_a_configs(name):
    """The -A token table is its own (126084 is <end-of-line> there, <|soi|> in -M) and the tiny
    golden -A model uses the same table shifted like the -M one."""
    config = ModelConfig.from_yaml(f"configs/{name}.yaml")
    assert config.kind == "dimoo" and config.vocab_size == 126356 + 8192
    assert config.num_params() == 8_081_805_312
    assert config.tokens["newline"] == 126084 == TokenIds.mmada(0)["soi"]
    tiny = ModelConfig.from_hf_dir(golden_path("dimoo_tiny")).tokens
    shift = config.tokens.mask_id - tiny.mask_id
    assert {k: v - shift for k, v in config.tokens.special.items()} == tiny.special
    assert config.tokens.image_offset - shift == tiny.image_offset
