"""``train.unigrpo`` end to end on the tiny random base model: text (prompts of different token
lengths, sampled per length and left-padded for the learner) and text-to-image, several inner
updates each with its own re-masking, files written, bit-exact resume; config errors named."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
import yaml
from flax import nnx

from conftest import ROOT, golden_path
from mmada_jax.checkpoints import load_model
from mmada_jax.config import ConfigError
from mmada_jax.rl.config import RLConfig


def _prompts(tmp_path) -> str:
    lines = [{"id": "q0", "category": "text", "instruction": "one plus one", "answer": "2"},
             {"id": "q1", "category": "text", "instruction": "what is two plus three and then four", "answer": "9"},
             {"id": "q2", "category": "text", "instruction": "name a colour", "answer": "red"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(path)


def _config(tmp_path, **over):
    cfg = {"checkpoint": str(golden_path("mmada_tiny")), "vq": str(golden_path("magvitv2_tiny")),
           "tokenizer": str(ROOT / "tests" / "fixtures" / "tiny_tokenizer"), "prompts": _prompts(tmp_path),
           "reward": "callable", "reward_function": "rl_rewards_for_tests:text_length",
           "sampling": {"gen_length": 8, "steps": 4, "block_length": 4, "temperature": 0.9, "remasking": "random"},
           "group_size": 2, "prompts_per_step": 2, "inner_updates": 2, "steps": 3, "warmup_steps": 1, "lr": 1e-2,
           "beta": 0.01, "out_dir": str(tmp_path / "run"), "save_every": 1}
    cfg.update(over)
    path = tmp_path / "unigrpo.yaml"
    path.write_text(yaml.safe_dump({"unigrpo": cfg}))
    return path


def _params(path):
    return jax.tree.leaves(nnx.to_pure_dict(nnx.state(load_model(path)[0], nnx.Param)))


@pytest.mark.golden
@pytest.mark.parametrize("task", ["text", pytest.param("t2i", marks=pytest.mark.slow)])   # t2i: ~20 s more
def test_unigrpo_runs_writes_its_files_and_resumes_bit_exactly(tmp_path, task):
    from mmada_jax.rl.loop import run_pararl
    over = {} if task == "text" else {
        "task": "t2i", "reward_function": "rl_rewards_for_tests:brightness", "prompts": None, "synthetic": 6,
        "sampling": {"steps": 4, "guidance": 0.0}, "options": {"resolution": 64, "max_text_len": 24}}
    config = RLConfig.from_yaml(_config(tmp_path, **over), section="unigrpo")
    assert (config.estimator, config.aggregation, config.task) == ("unigrpo", "bnpo", task)
    logs = []
    rows = run_pararl(config, log=logs.append)
    run = tmp_path / "run"
    assert [r["step"] for r in rows] == [1, 2, 3] and any(line.startswith("UniGRPO") for line in logs)
    for name in ("metrics.jsonl", "rewards.png"):
        assert (run / name).is_file(), name
    assert not (run / "reward_stats.json").exists()          # raw rewards, standardised per group
    assert rows[-1]["kl"] > 0 and all(np.isfinite(r["loss"]) for r in rows) and "logp_gap" not in rows[-1]
    assert rows[-1]["final_reward_raw"] == rows[-1]["reward_raw_mean"]
    assert all(r["reward_group_std"] >= 0 and 0 <= r["flat_groups"] <= 1 for r in rows)
    assert any("in-group std" in line for line in logs)

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints" / "3")
    rows2 = run_pararl(RLConfig.from_yaml(_config(tmp_path, out_dir=str(resumed), **over), section="unigrpo"),
                       log=lambda *_: None)
    assert [r["step"] for r in rows2] == [3] and rows2[0]["loss"] == rows[-1]["loss"]
    for x, y in zip(_params(run / "checkpoints" / "3"), _params(resumed / "checkpoints" / "3")):
        np.testing.assert_array_equal(x, y)


def test_base_tasks_need_the_unigrpo_estimator(tmp_path):
    with pytest.raises(ConfigError, match="task=text \\(base MMaDA\\) trains with estimator=unigrpo, not trajectory"):
        RLConfig.from_yaml(_config(tmp_path, estimator="trajectory"), section="unigrpo")
    with pytest.raises(ConfigError, match="t2i_remap='yes' must be bool"):
        RLConfig.from_yaml(_config(tmp_path, t2i_remap="yes"), section="unigrpo")
    with pytest.raises(ConfigError, match="group_masks: only for estimator=unigrpo"):
        RLConfig.from_yaml(_config(tmp_path, estimator="trajectory", group_masks=True), section="unigrpo")


def test_8b_unigrpo_config_loads_with_the_papers_settings():
    config = RLConfig.from_yaml(ROOT / "configs" / "mmada_8b_unigrpo.yaml", section="unigrpo")
    assert (config.task, config.estimator, config.reward, config.aggregation) == ("text", "unigrpo", "correctness", "bnpo")
    assert (config.lr, config.beta, config.group_size, config.epsilon, config.inner_updates) == (5e-5, 1e-4, 8, 0.2, 1)
    settings, options = config.sampler_settings()
    assert (settings.gen_length, settings.steps, settings.block_length, settings.temperature) == (256, 128, 64, 0.9)
    assert options.thinking and config.model_config.endswith("configs/mmada_8b.yaml")


@pytest.mark.parametrize("task", ["t2i", "mmu"])
def test_demo_unigrpo_configs_load(task):
    config = RLConfig.from_yaml(ROOT / "configs" / f"demo_unigrpo_{task}.yaml", section="unigrpo")
    reward = {"t2i": "synthetic_t2i_objects", "mmu": "synthetic_mmu"}[task]
    assert (config.task, config.estimator, config.reward, config.synthetic) == (task, "unigrpo", reward, 2000)
    assert config.checkpoint.endswith("runs/demo_sft_base") and config.benchmark.endswith(f"bench_{task}/benchmark.jsonl")
    config.sampler_settings()
    with pytest.raises(ConfigError, match="no text-only task"):
        RLConfig.from_yaml(ROOT / "configs" / f"demo_unigrpo_{task}.yaml", ["task=text", "prompt_len=0"],
                           section="unigrpo")


@pytest.mark.slow      # ~60 s: three runs (pytest -m slow)
def test_sharded_unigrpo_equals_one_device(tmp_path, monkeypatch):
    """Two UniGRPO text steps (two re-maskings each) on 8 fake devices match one device."""
    from test_pararl_loop import sharded_runs_match_one_device
    sharded_runs_match_one_device(tmp_path, monkeypatch, lambda **over: RLConfig.from_yaml(
        _config(tmp_path, prompts_per_step=4, group_size=2, **over), section="unigrpo"))


@pytest.mark.golden
def test_prompt_len_pads_text_rollouts_to_a_fixed_width(tmp_path):
    """``prompt_len``: rows left-padded to one width (the learner compiles once), the samples
    themselves unchanged; a longer prompt is an error naming it, before any rollout."""
    from mmada_jax.app import load_pipeline
    from mmada_jax.rl.rollout import check_prompt_len, final_rollout
    config = RLConfig.from_yaml(_config(tmp_path), section="unigrpo")
    settings, options = config.sampler_settings()
    task = config.make_task()
    pipe = load_pipeline(config.checkpoint, config.vq, config.tokenizer)
    from mmada_jax.rl.loop import load_prompts
    requests = load_prompts(config, tmp_path, lambda *_: None)[:2]
    keys = jax.random.split(jax.random.key(0), 4)
    free = final_rollout(task, pipe, requests, 2, keys, settings, options, lambda *_: None)
    width = free.output.layout.prompt_len + 5
    fixed = final_rollout(task, pipe, requests, 2, keys, settings, options, lambda *_: None, prompt_len=width)
    assert fixed.output.layout.prompt_len == width and fixed.output.ids.shape[1] == width + 8
    np.testing.assert_array_equal(fixed.output.pads, free.output.pads + 5)
    np.testing.assert_array_equal(fixed.output.ids[:, 5:], free.output.ids)
    assert fixed.final_texts == free.final_texts
    with pytest.raises(ValueError, match=r"prompt_len=3: longer prompt\(s\): 'q0' \(\d+ tokens\)"):
        check_prompt_len(task, pipe, requests, options, 3)
    with pytest.raises(ConfigError, match="prompt_len=64: only for task text or mmu"):
        RLConfig.from_yaml(_config(tmp_path, task="t2i", prompt_len=64), section="unigrpo")
