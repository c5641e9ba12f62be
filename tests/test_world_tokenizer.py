"""The word-level world tokenizer: MMaDA's id layout, exact round trips of every text the world
writes, and clear errors (python -m train.tokenizer)."""

from __future__ import annotations

import json

import pytest

import mmada_jax as m
from mmada_jax.data import synthetic as syn
from mmada_jax.tokenizer import SPECIAL_STRINGS, WORD_UNK, build_word_tokenizer, load_tokenizer
from mmada_jax.training.config import REPO_ROOT

CONFIG = REPO_ROOT / "configs" / "demo_parallel_m.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    config = m.ModelConfig.from_yaml(CONFIG)
    examples = [syn.make_example(0, i) for i in range(1500)]
    texts = [e.reasoning for e in examples] + [e.instruction for e in examples if e.instruction]
    out = build_word_tokenizer(config.tokens, texts, tmp_path_factory.mktemp("tok") / "tok")
    return config, load_tokenizer(out, config)


def test_layout(world):
    config, tok = world
    t = config.tokens
    assert len(tok) == t.image_offset
    vocab = tok.hf.get_vocab()
    for name, string in SPECIAL_STRINGS.items():
        want = t.mask_id if name == "mask" else t.special.get(name)
        if want is not None:
            assert vocab[string] == want, name
    assert tok.hf.bos_token_id == t.bos_id and tok.hf.eos_token_id == t.eos_id


def test_every_world_text_round_trips_in_about_100_tokens(world):
    _, tok = world
    lengths = []
    for i in range(300):   # other seed than the fitted corpus
        ex = syn.make_example(5, i)
        for text in (ex.reasoning, ex.instruction):
            if text:
                ids = tok.encode(text)
                assert tok.decode(ids) == text
                assert tok.hf.unk_token_id not in ids
                lengths.append(len(ids))
    assert max(lengths) <= 112


def test_every_template_with_every_name_is_known(world):
    _, tok = world
    names = list(zip(syn.COLORS, list(syn.COLORS)[1:] + list(syn.COLORS)[:1]))
    texts = []
    for template in [t for ts in syn.TEMPLATES.values() for t in ts]:
        for i, (color, new) in enumerate(names):
            shape, cell = syn.SHAPES[i % 3], syn.CELLS[i % 4]
            bg = list(syn.BACKGROUNDS)[i % len(syn.BACKGROUNDS)]
            scene = syn.Scene(bg, ((cell, shape, color),)).describe()
            texts.append(template.format(color=color, shape=shape, new=new, new_color=new, new_shape=shape,
                                         cell=cell, bg=bg, scene=scene))
    for text in texts:
        assert tok.hf.unk_token_id not in tok.encode(text), text


def test_unknown_words_become_unk(world):
    _, tok = world
    ids = tok.encode("Make the zebra blue.")
    assert tok.hf.unk_token_id in ids
    assert tok.pieces([tok.hf.unk_token_id]) == [WORD_UNK]


def test_too_many_pieces_is_an_error(tmp_path):
    config = m.ModelConfig.from_yaml(CONFIG)
    texts = [" ".join(f"w{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}" for i in range(1000))]
    with pytest.raises(ValueError, match="do not fit"):
        build_word_tokenizer(config.tokens, texts, tmp_path / "t")


def test_cli_fits_a_corpus_and_keeps_existing_output(tmp_path, capsys):
    from train.tokenizer import main
    corpus = tmp_path / "examples.jsonl"
    syn.write_dataset(tmp_path / "data", 40, seed=1)
    corpus = tmp_path / "data" / "examples.jsonl"
    out = tmp_path / "tok"
    assert main([str(out), "--corpus", str(corpus), "--model-config", str(CONFIG)]) == 0
    first = (out / "tokenizer.json").read_text()
    assert main([str(out), "--corpus", str(corpus), "--model-config", str(CONFIG)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "tokenizer.json").read_text() == first
    assert main([str(out), "--corpus", str(corpus), "--model-config", str(CONFIG), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "tok"]   # no staging folder left


def test_cli_names_the_bad_corpus_line(tmp_path, capsys):
    from train.tokenizer import main
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"reasoning": "fine."}) + "\n{broken\n")
    assert main([str(tmp_path / "tok"), "--corpus", str(corpus), "--model-config", str(CONFIG)]) == 2
    assert f"{corpus}:2" in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()
