"""CLIP in NNX (mmada_jax.clip): parity with transformers' PyTorch CLIPModel on tiny random
models (quick_gelu / gelu, both EOS poolings), the ``clip`` conversion kind (round trip through
our checkpoint and back to a directory CLIPModel.from_pretrained loads, errors naming the key),
the in-graph preprocessing, the ``clip`` reward against an independent torch computation, and
the public ViT-L/14 architecture's parameter count from nnx.eval_shape (no weights).

Everything is tiny and offline: the tokenizer is a CLIP BPE over the byte alphabet plus a few
merges, written by the test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

import convert_torch_weights
import mmada_jax
from mmada_jax.cli_utils import run_guarded
from mmada_jax.clip import (CLIPConfig, VIT_B_32, VIT_L_14, VIT_L_14_336, load_clip, named_config, num_params,
                            preprocess, resized_shape)
from mmada_jax.clip.config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from mmada_jax.clip.model import eos_positions
from mmada_jax.config import ConfigError
from mmada_jax.convert import convert_to_orbax, resolve_kind
from mmada_jax.hf_io import CheckpointError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

IMAGE, PATCH = 30, 7          # 30 = 4 patches of 7 + 2 pixels the strided conv drops
VOCAB = 520                   # 2 x 256 byte symbols + 6 merges + <|startoftext|> (518), <|endoftext|> (519)
BOS, EOS = 518, 519
MERGES = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("t", "h"), ("th", "e</w>")]
TOL = dict(atol=1e-4, rtol=1e-4)


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of bytes that byte-level BPE vocabularies use (GPT-2's map)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(others))]


def write_tokenizer(directory: Path) -> None:
    """A tiny CLIP tokenizer (vocab.json + merges.txt, then saved by CLIPTokenizerFast)."""
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in MERGES] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB
    raw = directory.parent / (directory.name + "-raw")
    raw.mkdir(parents=True)
    (raw / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (raw / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in MERGES) + "\n")
    tok = transformers.CLIPTokenizerFast.from_pretrained(str(raw))
    assert (tok.bos_token_id, tok.eos_token_id) == (BOS, EOS)
    tok.save_pretrained(str(directory))


def hf_config(hidden_act: str = "quick_gelu", eos_token_id: int = 2):
    tower = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, hidden_act=hidden_act)
    return transformers.CLIPConfig(
        text_config=dict(tower, vocab_size=VOCAB, max_position_embeddings=77, bos_token_id=BOS,
                         eos_token_id=eos_token_id, pad_token_id=EOS),
        vision_config=dict(tower, image_size=IMAGE, patch_size=PATCH), projection_dim=16)


def make_hf_clip(directory: Path, seed: int = 0, **config):
    """A tiny random torch CLIPModel saved with save_pretrained (+ the tiny tokenizer). Every
    parameter gets noise, so no layer norm is the identity."""
    torch.manual_seed(seed)
    model = transformers.CLIPModel(hf_config(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(str(directory))
    write_tokenizer(directory)
    return model


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    """(torch model, HF directory) of the default tiny model (quick_gelu, OpenAI's eos id 2)."""
    d = tmp_path_factory.mktemp("clip") / "hf"
    return make_hf_clip(d), d


@pytest.fixture(scope="module")
def converted(hf_clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "ours"
    convert_to_orbax(hf_clip[1], out, log=lambda s: None)
    return out


def _inputs(seed: int, legacy: bool):
    """Pixels [3, 30, 30, 3], ids and mask [2, 12] (EOS then padding; the non-legacy case has
    ids above the EOS before it, so argmax and first-EOS pooling disagree)."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(size=(3, IMAGE, IMAGE, 3)).astype(np.float32)
    ids = rng.integers(0, 500, (2, 12))
    ids[:, 0] = BOS
    eos = EOS if legacy else 505
    ends = [6, 11]
    mask = np.zeros_like(ids)
    for row, end in enumerate(ends):
        ids[row, end:] = eos
        mask[row, :end + 1] = 1
    if not legacy:
        ids[0, 2], ids[1, 4] = 519, 510       # larger than the EOS id (as the BOS), before it
    return pixels, ids.astype(np.int32), mask.astype(np.int32)


def torch_outputs(model, pixels, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long(),
                    pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
    return {k: getattr(out, k).numpy() for k in ("image_embeds", "text_embeds", "logits_per_image")}


def assert_parity(model, ref_model, pixels, ids, mask):
    ref = torch_outputs(ref_model, pixels, ids, mask)
    np.testing.assert_allclose(np.asarray(model.image_embeds(pixels)), ref["image_embeds"], **TOL)
    np.testing.assert_allclose(np.asarray(model.text_embeds(ids, mask)), ref["text_embeds"], **TOL)
    np.testing.assert_allclose(np.asarray(model.logits(pixels, ids, mask)[0]), ref["logits_per_image"], **TOL)


# ------------------------------------------------------------------------------ parity

@pytest.mark.parametrize("hidden_act,eos_token_id", [("quick_gelu", 2), ("gelu", 505)])
def test_parity_with_transformers(hidden_act, eos_token_id, tmp_path):
    ref = make_hf_clip(tmp_path / "hf", seed=1, hidden_act=hidden_act, eos_token_id=eos_token_id)
    model, tok = load_clip(tmp_path / "hf")                       # HF directory, converted in memory
    c = model.config
    assert (c.text.hidden_act, c.vision.hidden_act, c.text.eos_token_id) == (hidden_act, hidden_act, eos_token_id)
    assert c.text.legacy_pooling == (eos_token_id == 2) and tok.eos_token_id == EOS
    pixels, ids, mask = _inputs(2, legacy=eos_token_id == 2)
    np.testing.assert_array_equal(np.asarray(eos_positions(ids, c.text)), [6, 11])
    if eos_token_id != 2:   # argmax pooling would pick the larger ids placed before the EOS
        assert list(np.argmax(ids, -1)) == [2, 0]
    assert_parity(model, ref, pixels, ids, mask)


def test_named_architectures_param_count_without_weights():
    from transformers import CLIPConfig as HFConfig
    assert num_params(VIT_L_14) == 427_616_513              # openai/clip-vit-large-patch14, logit_scale included
    assert num_params(VIT_B_32) == 151_277_313
    assert num_params(VIT_L_14_336) == 427_944_193
    assert named_config("openai/clip-vit-large-patch14") is VIT_L_14 and VIT_L_14.image_size == 224
    assert VIT_L_14_336.image_size == 336 and VIT_L_14.text.legacy_pooling
    with pytest.raises(ConfigError, match="ViT-L/14"):
        named_config("ViT-H/14")
    with torch.device("meta"):   # our config written as HF's builds the same-sized torch model
        meta = transformers.CLIPModel(HFConfig(**VIT_L_14.to_hf_config()))
    assert sum(p.numel() for p in meta.parameters()) == 427_616_513


# ------------------------------------------------------------------------------ conversion

def test_convert_round_trip(hf_clip, converted, tmp_path):
    ref, src = hf_clip
    spec, cdir, _ = resolve_kind(src)
    assert spec.name == "clip" and cdir == src
    config = mmada_jax.load_config(converted)
    assert isinstance(config, CLIPConfig) and config.kind == "clip" and config.image_size == IMAGE
    assert (converted / "hf" / "tokenizer.json").exists()
    model, tok = load_clip(converted)
    assert_parity(model, ref, *_inputs(3, legacy=True))
    with pytest.raises(CheckpointError, match="load_clip"):
        mmada_jax.load_model(converted)

    back = tmp_path / "back"
    assert convert_torch_weights.main([str(converted), str(back), "--to-hf"]) == 0
    assert sorted(p.name for p in back.glob("*.safetensors")) == ["model.safetensors"]
    assert not any("position_ids" in k for k in load_file(str(back / "model.safetensors")))
    again = transformers.CLIPModel.from_pretrained(str(back)).eval()
    want, got = ref.state_dict(), again.state_dict()
    assert sorted(want) == sorted(got)
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert again.config.text_config.eos_token_id == 2 and again.config.vision_config.image_size == IMAGE
    assert transformers.CLIPTokenizerFast.from_pretrained(str(back))("the cat")["input_ids"] == [BOS, 517, 513, EOS]


def test_position_id_buffers_accepted_and_checked(hf_clip, tmp_path):
    src = _copy(hf_clip[1], tmp_path)
    w = src / "model.safetensors"
    tensors = load_file(str(w))
    tensors["text_model.embeddings.position_ids"] = np.arange(77)[None]
    tensors["vision_model.embeddings.position_ids"] = np.arange(17)[None]
    save_file(tensors, str(w))
    convert_to_orbax(src, tmp_path / "ok", log=lambda s: None)          # old checkpoints carry them
    tensors["vision_model.embeddings.position_ids"] = np.arange(17)[None][:, ::-1].copy()
    save_file(tensors, str(w))
    with pytest.raises(CheckpointError, match="vision_model.embeddings.position_ids.*values differ"):
        convert_to_orbax(src, tmp_path / "bad", log=lambda s: None)


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(src, dst)
    return dst


def _cli_error(args, capsys) -> str:
    rc = run_guarded(lambda: convert_torch_weights.main(args))
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


KEY = "vision_model.encoder.layers.1.self_attn.q_proj.weight"


@pytest.mark.parametrize("damage,expect", [
    ("missing", "missing key"), ("shape", "shape"), ("nan", "non-finite"), ("unexpected", "unexpected key")])
def test_conversion_errors_name_the_key(damage, expect, hf_clip, tmp_path, capsys):
    src = _copy(hf_clip[1], tmp_path)
    w = src / "model.safetensors"
    tensors = load_file(str(w))
    key = KEY
    if damage == "missing":
        del tensors[key]
    elif damage == "shape":
        tensors[key] = tensors[key][:, :-1].copy()
    elif damage == "nan":
        tensors[key] = tensors[key].copy()
        tensors[key][0, :2] = [np.nan, np.inf]
    else:
        key = "vision_model.encoder.layers.2.mlp.fc1.weight"
        tensors[key] = np.zeros((48, 32), np.float32)
    save_file(tensors, str(w))
    err = _cli_error([str(src), str(tmp_path / "dst")], capsys)
    assert expect in err and key in err, err
    assert not (tmp_path / "dst").exists()


def test_hf_config_errors_name_the_key(hf_clip, tmp_path, capsys):
    src = _copy(hf_clip[1], tmp_path)
    hf = json.loads((src / "config.json").read_text())
    hf["vision_config"]["hidden_act"] = "relu"
    (src / "config.json").write_text(json.dumps(hf))
    err = _cli_error([str(src), str(tmp_path / "dst")], capsys)
    assert "hidden_act" in err and "relu" in err
    hf["vision_config"]["hidden_act"] = "quick_gelu"
    hf["vision_config"]["patch_size"] = 5            # the weights were made for 7
    (src / "config.json").write_text(json.dumps(hf))
    err = _cli_error([str(src), str(tmp_path / "dst")], capsys)
    assert "patch_embedding.weight" in err and "does not fit" in err


def test_yaml_config_round_trip_and_strict_keys(tmp_path):
    VIT_L_14.to_yaml(tmp_path / "c.yaml")
    assert mmada_jax.load_config(tmp_path / "c.yaml") == VIT_L_14
    text = (tmp_path / "c.yaml").read_text().replace("patch_size:", "patch_sise:")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match="patch_sise.*patch_size"):
        mmada_jax.load_config(tmp_path / "bad.yaml")


# ------------------------------------------------------------------------------ preprocessing

def test_preprocess_normalises_an_image_at_the_target_size():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, IMAGE, IMAGE, 3), dtype=np.uint8)
    got = np.asarray(preprocess(images, IMAGE))
    want = (images.astype(np.float64) / 255.0 - np.asarray(OPENAI_CLIP_MEAN)) / np.asarray(OPENAI_CLIP_STD)
    assert got.shape == (2, IMAGE, IMAGE, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_preprocess_resizes_the_short_side_and_center_crops():
    assert resized_shape(40, 60, 30) == (30, 45) and resized_shape(60, 40, 30) == (45, 30)
    assert resized_shape(224, 300, 224) == (224, 300)
    # a vertical ramp: resizing keeps it a ramp; the crop is the center (rows 7..37 of 45)
    col = np.linspace(0, 255, 60).round().astype(np.uint8)
    images = np.broadcast_to(col[:, None, None], (1, 60, 40, 3)).copy()
    got = np.asarray(preprocess(images, 30))
    assert got.shape == (1, 30, 30, 3)
    pixel = got[0, :, 0, 0] * OPENAI_CLIP_STD[0] + OPENAI_CLIP_MEAN[0]
    assert np.all(np.diff(pixel) > 0) and 0.1 < pixel[0] < 0.2 and 0.8 < pixel[-1] < 0.9
    with pytest.raises(ValueError, match="uint8"):
        preprocess(images.astype(np.float32), 30)


# ------------------------------------------------------------------------------ the reward

def test_clip_reward_equals_torch_clip_score(hf_clip, converted):
    from mmada_jax.rl.rewards import CLIPReward, get_reward, score
    from mmada_jax.rl.rollout import MASK_MARK, plain_text

    ref, src = hf_clip
    reward = get_reward("clip", checkpoint=str(converted), scale=100.0)
    assert isinstance(reward, CLIPReward)
    texts = [[f"the {MASK_MARK} cat", "the dog and the cat"],
             [f"{MASK_MARK}", "a dog " * 60 + "<|endoftext|> the cat"]]    # truncated to 77 tokens
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (2, 2, 40, 36, 3), dtype=np.uint8)
    got = score(reward, [{}, {}], texts, images)
    assert got.shape == (2, 2) and got.dtype == np.float64
    assert np.all((got >= 0) & (got <= 100))

    # independently: the same pixels and token ids through transformers' CLIPModel
    tok = transformers.CLIPTokenizerFast.from_pretrained(str(src))
    flat = [" ".join(plain_text(t).replace("<|endoftext|>", " ").split()) for row in texts for t in row]
    enc = tok(flat, padding="max_length", truncation=True, max_length=77, return_tensors="np")
    assert enc["input_ids"].shape == (4, 77) and enc["input_ids"][3, -1] == EOS
    ids, mask = reward.scorer.tokenize([plain_text(t) for row in texts for t in row])
    np.testing.assert_array_equal(ids, enc["input_ids"])
    pixels = np.asarray(preprocess(images.reshape(4, 40, 36, 3), IMAGE))
    with torch.no_grad():
        out = ref(input_ids=torch.from_numpy(enc["input_ids"]).long(),
                  attention_mask=torch.from_numpy(enc["attention_mask"]).long(),
                  pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))
    cos = (out.image_embeds * out.text_embeds).sum(-1).double().numpy()
    np.testing.assert_allclose(got.ravel(), np.maximum(100.0 * cos, 0.0), atol=1e-3, rtol=0)

    half = get_reward("clip", checkpoint=str(converted), scale=50.0)
    np.testing.assert_allclose(score(half, [{}, {}], texts, images), np.maximum(50.0 * cos, 0.0).reshape(2, 2),
                               atol=1e-3, rtol=0)
    info = reward.describe()
    assert info["reward"] == "clip" and info["checkpoint"] == str(converted)
    assert (info["image_size"], info["scale"], info["max_tokens"]) == (IMAGE, 100.0, 77)
    json.dumps(info)
    with pytest.raises(ValueError, match="checkpoint"):
        get_reward("clip")
    with pytest.raises(ValueError, match="max_tokens"):
        get_reward("clip", checkpoint=str(converted), max_tokens=78)


@pytest.mark.golden
def test_pararl_with_the_clip_reward_records_the_model(converted, tmp_path):
    """``reward: clip`` in a ParaRL run (tiny -M policy): the calibration file names the CLIP
    model, resolution and scale that produced mu and sigma."""
    from test_pararl_loop import _config

    from mmada_jax.config import ConfigError
    from mmada_jax.rl.config import RLConfig
    from mmada_jax.rl.loop import run_pararl

    with pytest.raises(ConfigError, match="reward=clip needs reward_checkpoint"):
        RLConfig.from_yaml(_config(tmp_path, reward="clip"))
    config = RLConfig.from_yaml(_config(tmp_path, reward="clip", reward_checkpoint=str(converted), steps=1,
                                        calibration_prompts=1))
    rows = run_pararl(config, log=lambda *_: None)
    assert len(rows) == 1 and np.isfinite(rows[0]["loss"]) and 0 <= rows[0]["reward_raw_mean"] <= 100
    stats = json.loads((tmp_path / "run" / "reward_stats.json").read_text())
    assert stats["reward"] == "clip" and stats["reward_checkpoint"] == str(converted)
    assert (stats["reward_model"]["image_size"], stats["reward_model"]["scale"]) == (IMAGE, 100.0)


def test_evaluate_with_the_clip_judge(converted, tmp_path):
    """``evaluate --judge clip`` on stored samples of two image sizes: per item max(100 cos, 0)
    of the output image with its text and with its instruction, as the scorer gives them one
    pair at a time; the summary records the CLIP."""
    from test_vlm_judge import _evaluate, _stored_samples

    from mmada_jax.clip import CLIPScorer, load_clip
    bench, src = _stored_samples(tmp_path)
    rng = np.random.default_rng(3)
    for n, d in enumerate(sorted((src / "samples").iterdir())):      # two sizes in one batch
        Image.fromarray(rng.integers(0, 256, (24 + 8 * (n % 2), 40, 3), dtype=np.uint8)).save(d / "image.png")
    out = tmp_path / "clip_eval"
    assert _evaluate("--benchmark", bench, "--judge", "clip", "--clip-checkpoint", converted,
                     "--samples-from", src, "--out", out) == 0
    scorer = CLIPScorer(*load_clip(converted))
    items = {json.loads(x)["id"]: json.loads(x) for x in bench.read_text().splitlines()}
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == len(items)
    for r in results:
        image = np.asarray(Image.open(out / r["files"]["image"]).convert("RGB"))
        want = {"CLIP Output Alignment": scorer([r["text"]], image[None])[0],
                "CLIP Instruction Alignment": scorer([items[r["id"]]["instruction"]], image[None])[0]}
        assert r["scores"] == pytest.approx(want, abs=1e-4), r["id"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"] == ["CLIP Output Alignment", "CLIP Instruction Alignment"]
    assert summary["judge"]["checkpoint"] == str(converted) and summary["judge"]["scale"] == 100.0
    assert len({r["scores"]["CLIP Output Alignment"] for r in results}) > 1       # not a constant
