"""Base MMaDA's t2i and mmu rows mixed into the parallel SFT (mmada_jax.mmada.sft): the data
fields from the synthetic writer through pretokenize and the pipeline, the rows against the
reference-parity prompt builders, the losses against an independent float64 computation, the
loop end to end (bit-exact resume) and the config errors."""

from __future__ import annotations

import json
import math
import shutil

import jax
import numpy as np
import pytest

from conftest import ROOT, golden_path
from mmada_jax import load_config, load_model, load_vq
from mmada_jax.config import ConfigError
from mmada_jax.data.pipeline import make_dataset
from mmada_jax.data.pretokenize import pretokenize
from mmada_jax.data.synthetic import MMU_QUESTION, write_dataset
from mmada_jax.mmada import prompts
from mmada_jax.mmada import sft as base_sft
from mmada_jax.sequences import IGNORE
from mmada_jax.tokenizer import load_tokenizer
from mmada_jax.training import TrainConfig
from mmada_jax.training.loop import run_sft

pytestmark = pytest.mark.golden
TEXT_LEN = 512      # the character-level test tokenizer
BASE_LEN = 256


def _image_size(vq) -> int:
    return int(getattr(vq.config, "image_size", None) or 4 * vq.downsample)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("base_sft")
    vq = load_vq(golden_path("magvitv2_tiny"))
    write_dataset(root / "raw", 16, seed=3, size=_image_size(vq), base_tasks=True)
    common = dict(checkpoint=golden_path("mmada_tiny"), vq=golden_path("magvitv2_tiny"),
                  tokenizer=ROOT / "tests/fixtures/tiny_tokenizer", text_len=TEXT_LEN, log=lambda *_: None)
    pretokenize(root / "raw", root / "base", base_tasks=True, **common)
    pretokenize(root / "raw", root / "plain", **common)
    return root


@pytest.fixture(scope="module")
def tok():
    config = load_config(golden_path("mmada_tiny"))
    return load_tokenizer(ROOT / "tests/fixtures/tiny_tokenizer", config), config.tokens


def _batch(data, tokens, n=4):
    ds = make_dataset(data / "base", "train", batch_size=n, text_len=TEXT_LEN, seed=0, tokens=tokens,
                      base_text_len=BASE_LEN, process_index=0, process_count=1, with_ids=True, shuffle=False)
    return next(iter(ds))


def test_base_fields_go_from_the_writer_to_the_batch(data, tok):
    tokenizer, tokens = tok
    lines = [json.loads(x) for x in (data / "raw" / "examples.jsonl").read_text().splitlines()]
    batch = _batch(data, tokens)
    for i, ex_id in enumerate(batch["id"]):
        line = next(x for x in lines if x["id"] == str(ex_id))
        assert line["mmu_question"] == MMU_QUESTION and line["t2i_prompt"].endswith("background.")
        want_t2i = [tokens.bos_id] + tokenizer.encode(line["t2i_prompt"]) + [tokens.eos_id]
        assert batch["t2i_text"][i, :batch["t2i_text_len"][i]].tolist() == want_t2i
        assert (batch["t2i_text"][i, len(want_t2i):] == tokens.eos_id).all()
        question = tokenizer.chat(line["mmu_question"])
        want_mmu = question + tokenizer.encode(line["mmu_answer"])
        assert batch["mmu_prompt_len"][i] == len(question)
        assert batch["mmu_text"][i, :len(want_mmu)].tolist() == want_mmu
        assert (batch["mmu_text"][i, len(want_mmu):] == tokens.eos_id).all()


def test_base_text_len_needs_base_fields_that_fit(data, tok):
    _, tokens = tok
    with pytest.raises(ValueError, match="without --base-tasks"):
        make_dataset(data / "plain", "train", batch_size=2, text_len=TEXT_LEN, seed=0, tokens=tokens,
                     base_text_len=BASE_LEN, process_index=0, process_count=1)
    from mmada_jax.training.data import check_budgets
    with pytest.raises(ConfigError, match="no base-task fields"):
        check_budgets(data / "plain", base_text_len=BASE_LEN)
    with pytest.raises(ConfigError, match=r"record 'syn\d+'.*base_text_len=40"):
        check_budgets(data / "base", base_text_len=40)


def test_pretokenize_reports_lines_without_base_fields(tmp_path, tok):
    from PIL import Image

    from mmada_jax.data.pretokenize import BadReporter, read_examples
    tokenizer, _ = tok
    Image.new("RGB", (8, 8)).save(tmp_path / "out.png")
    good = {"reasoning": "r", "output_image": "out.png", "t2i_prompt": "Draw it.", "mmu_question": "What?",
            "mmu_answer": "This."}
    lines = [dict(good, id="ok"), dict(good, id="no_answer", mmu_answer=None), dict(good, id="long", t2i_prompt="x" * 60)]
    (tmp_path / "src.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    report = BadReporter(tmp_path / "bad.jsonl", "skip", lambda *_: None)
    examples, _ = read_examples(tmp_path / "src.jsonl", tokenizer.encode, 48, report, tokenizer.chat)
    assert [e.id for e in examples] == ["ok"]
    assert examples[0].base["mmu_prompt_ids"].tolist() == tokenizer.chat("What?")
    assert [(b.id, b.reason.split(":")[0]) for b in report.bad] == [("no_answer", "missing mmu_answer"),
                                                                    ("long", "t2i_prompt too long")]


def _draws(batch, seed=0):
    b, n = batch["output_image_codes"].shape
    rand = base_sft.random_draws(jax.random.key(seed), b, n, batch["mmu_text"].shape[1])
    return {k: np.asarray(v) for k, v in rand.items()}


def test_t2i_rows_are_the_reference_prompt_with_the_masked_codes(data, tok):
    _, tokens = tok
    batch = _batch(data, tokens)
    rand = _draws(batch)
    rand["rand_t2i_dropout"] = np.array([0.05, 0.5, 0.5, 0.5], np.float32)   # row 0 drops its request
    rows = base_sft.t2i_rows(tokens, batch, rand, min_masking_rate=1e-3, cond_dropout_prob=0.1)
    codes = batch["output_image_codes"] + tokens.image_offset
    n = codes.shape[1]
    for i in range(len(codes)):
        ratio = max(math.cos(math.pi / 2 * float(rand["rand_t2i_t"][i])), 1e-3)
        # the reference's draw of a random k-subset: position p is masked iff argsort(u)[p] < k
        masked = np.argsort(rand["rand_t2i_perm"][i], kind="stable") < max(1, round(n * ratio))
        assert masked.sum() == max(1, round(n * ratio))
        image = np.where(masked, tokens.mask_id, codes[i])
        text = batch["t2i_text"][i, 1:batch["t2i_text_len"][i] - 1].tolist()   # without BOS and EOS
        want, _, _ = prompts.t2i_prompt(tokens, [text], image[None], BASE_LEN, drop_condition=[i == 0])
        np.testing.assert_array_equal(np.asarray(rows.input_ids[i]), want[0], err_msg=f"row {i}")
        labels = np.asarray(rows.labels[i])
        assert labels[0] == tokens["soi"] and labels[-1] == tokens["eoi"] and rows.head_start == BASE_LEN + 1
        np.testing.assert_array_equal(labels[1:-1], np.where(masked, codes[i], IGNORE))


def test_mmu_rows_mask_only_the_answer(data, tok):
    _, tokens = tok
    batch = _batch(data, tokens)
    rand = _draws(batch, seed=1)
    rows = base_sft.mmu_rows(tokens, batch, rand, eps=1e-3)
    codes = batch["output_image_codes"] + tokens.image_offset
    text = batch["mmu_text"]
    q = batch["mmu_prompt_len"]
    clean, _, _ = prompts.mmu_prompt(tokens, codes, [t.tolist() for t in text], BASE_LEN)
    ids = np.asarray(rows.input_ids)
    for i in range(len(codes)):
        p = (1 - 1e-3) * float(rand["rand_mmu_t"][i]) + 1e-3
        masked = (np.arange(BASE_LEN) >= q[i]) & (rand["rand_mmu_mask"][i] < p)
        assert masked.any()
        head = rows.head_start
        np.testing.assert_array_equal(ids[i, :head], clean[i, :head])
        np.testing.assert_array_equal(ids[i, head:], np.where(masked, tokens.mask_id, clean[i, head:]))
        np.testing.assert_allclose(float(rows.p_mask[i]), p, rtol=1e-6)
        assert float(rows.answer_len[i]) == BASE_LEN - q[i]


def test_base_losses_against_a_float64_computation(data, tok):
    _, tokens = tok
    batch = _batch(data, tokens)
    model, _ = load_model(golden_path("mmada_tiny"))
    key = jax.random.key(5)
    got = base_sft.base_task_losses(model, tokens, batch, key, min_masking_rate=1e-3, cond_dropout_prob=0.1)
    rand = _draws(batch, seed=5)

    def ce64(ids, labels, start):   # full-sequence forward, float64 log-softmax over every column
        logits = np.asarray(model(ids), np.float64)[:, start:]
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        valid = labels != IGNORE
        picked = np.take_along_axis(logits, np.where(valid, labels, 0)[..., None], -1)[..., 0]
        return np.where(valid, logz - picked, 0.0), valid

    t2i = base_sft.t2i_rows(tokens, batch, rand)
    ce, valid = ce64(np.asarray(t2i.input_ids), np.asarray(t2i.labels), t2i.head_start)
    np.testing.assert_allclose(float(got["t2i_loss"]), ce.sum() / valid.sum(), rtol=1e-5)
    mmu = base_sft.mmu_rows(tokens, batch, rand)
    ce, valid = ce64(np.asarray(mmu.input_ids), np.asarray(mmu.labels), mmu.head_start)
    per_row = (ce / np.asarray(mmu.p_mask, np.float64)[:, None]).sum(-1) / np.asarray(mmu.answer_len, np.float64)
    np.testing.assert_allclose(float(got["mmu_loss"]), per_row.mean(), rtol=1e-5)


def _config(data_dir, out_dir, **kw):
    # reasoning cut to 96 characters (the pipeline warns): the loop's cost is the compile, which
    # the parallel rows' length dominates; the base rows keep their full texts
    base = dict(checkpoint=str(golden_path("mmada_tiny")), data_dir=str(data_dir), text_len=96, batch_size=4,
                steps=4, lr=3e-3, warmup_steps=1, out_dir=str(out_dir), save_every=2, log_every=1,
                base_text_len=BASE_LEN, t2i_coeff=1.0, mmu_coeff=0.5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.filterwarnings("ignore:.*shorter than the --text-len")
def test_mixed_sft_runs(data, tmp_path):
    rows = run_sft(_config(data / "base", tmp_path, steps=2), log=lambda *_: None)
    assert {"t2i_loss", "mmu_loss", "text_loss", "image_loss"} <= set(rows[0])
    for row in rows:   # loss = parallel + t2i_coeff * t2i + mmu_coeff * mmu
        parallel = row["text_loss"] + row["image_loss"]
        np.testing.assert_allclose(row["loss"], parallel + row["t2i_loss"] + 0.5 * row["mmu_loss"], rtol=1e-5)
    assert (tmp_path / "loss.png").stat().st_size > 0
    # a run of this run (as an RL run of an SFT run records it: no vq / tokenizer of its own) finds
    # this run's tokenizer and image tokenizer
    from mmada_jax.checkpoints import open_checkpoint
    sft = open_checkpoint(tmp_path)
    step = tmp_path / "rl" / "checkpoints" / "2"
    shutil.copytree(tmp_path / "checkpoints" / "2", step)
    config = json.loads((step / "config" / "metadata").read_text())
    (step / "config" / "metadata").write_text(json.dumps(dict(config, checkpoint=str(tmp_path), vq=None, tokenizer=None)))
    rl = open_checkpoint(tmp_path / "rl")
    assert (rl.step, rl.vq_dir, rl.tokenizer_dir) == (2, sft.vq_dir, sft.tokenizer_dir) and sft.vq_dir is not None


@pytest.mark.slow      # three runs, ~1 min more (pytest -m slow)
@pytest.mark.filterwarnings("ignore:.*shorter than the --text-len")
def test_mixed_sft_resumes_bit_exactly(data, tmp_path):
    straight = run_sft(_config(data / "base", tmp_path / "a"), log=lambda *_: None)
    run_sft(_config(data / "base", tmp_path / "b", steps=2), log=lambda *_: None)
    resumed = run_sft(_config(data / "base", tmp_path / "b"), log=lambda *_: None)
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight[2:]]


def test_base_text_len_config_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="base_text_len=2"):
        _config(data / "base", tmp_path, base_text_len=2)
    with pytest.raises(ConfigError, match="no base-task fields"):
        run_sft(_config(data / "plain", tmp_path / "plain"), log=lambda *_: None)
