"""The ParaRL / UniGRPO AOT memory plan (``mmada_jax.rl.memory_plan``, ``train.pararl --compile-only``)
on scaled-down MMaDA-Parallel-M / -A / MMaDA-8B architectures (the 8B token tables, 2 layers of
width 64) over the session's 8 fake CPU devices, and the 8B ParaRL configs."""

from __future__ import annotations

import subprocess
import sys

import jax
import pytest
import yaml

from conftest import ROOT
from mmada_jax.rl.config import RLConfig
from mmada_jax.rl.memory_plan import PHASES, largest_fitting, persistent, plan, rollout_quantum

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (fake) devices")

SMALL = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4, "mlp_hidden_size": 128,
         "dtype": "float32", "param_dtype": "float32"}
TASKS = {
    "parallel_m": ("mmada_parallel_m.yaml", {"text_len": 32, "text_steps": 8, "image_steps": 4},
                   {"resolution": 128, "pad_instruction": 16}),
    "parallel_a": ("mmada_parallel_a.yaml", {"text_len": 32, "text_steps": 8, "image_steps": 4},
                   {"height": 128, "width": 128, "input_size": 64}),
    "text": ("mmada_8b.yaml", {"gen_length": 32, "steps": 8, "block_length": 16}, {"max_prompt_tokens": 24}),
    "mmu": ("mmada_8b.yaml", {"gen_length": 32, "steps": 8}, {"max_prompt_tokens": 24, "resolution": 64}),
    "t2i": ("mmada_8b.yaml", {"steps": 4}, {"resolution": 128, "max_text_len": 24}),
}


def _config(tmp_path, task: str, **over) -> RLConfig:
    arch, sampling, options = TASKS[task]
    model = yaml.safe_load((ROOT / "configs" / arch).read_text())["model"]
    model.update(SMALL)
    (tmp_path / f"{task}_model.yaml").write_text(yaml.safe_dump({"model": model}))
    cfg = {"task": task, "model_config": f"{task}_model.yaml", "synthetic": 4, "group_size": 2,
           "prompts_per_step": 4, "s": 2, "sampling": sampling, "options": options, "mesh": "fsdp=8",
           "reference_dtype": "bfloat16"}
    cfg.update(over)
    path = tmp_path / f"{task}_pararl.yaml"
    path.write_text(yaml.safe_dump({"pararl": cfg}))
    return RLConfig.from_yaml(path)


_PLANS = {}      # the default plans, shared with the estimator test


@pytest.mark.parametrize("task", ["parallel_m", pytest.param("parallel_a", marks=pytest.mark.slow)])  # -A: ~35 s more
def test_plan_parts_and_peak(tmp_path, task):
    config = _config(tmp_path, task)
    p = _PLANS[task] = plan(config)
    kept = p["persistent"]
    assert p["devices"] == 8 and p["rollouts"] == 8 and p["s"] == 2 and p["task"] == task
    assert all(kept[k] > 0 for k in ("params", "optimizer", "reference", "total"))
    assert kept["reference"] * 2 == kept["params"]                  # bf16 reference of fp32 weights
    assert kept["optimizer"] >= 2 * kept["params"]                  # AdamW's two moments
    for name in PHASES:
        m = p[name]
        assert m["temporaries"] > 0 and m["extra"] > 0, name
        assert m["arguments"] >= m["persistent"], name                # the persistent arrays are arguments
        assert m["extra"] == m["arguments"] - m["persistent"] + m["outputs"] - m["aliased"] + m["temporaries"]
    assert p["train_step"]["aliased"] > 0                           # the donated state
    assert p["peak"] == kept["total"] + max(p[k]["extra"] for k in PHASES)

    bigger = plan(config, prompts_per_step=8)                       # twice the rollouts
    assert bigger["rollouts"] == 16
    assert bigger["persistent"] == kept
    for name in PHASES:
        assert bigger[name]["extra"] > p[name]["extra"], name
    assert bigger["peak"] > p["peak"]


def test_random_remask_estimator_plans_its_own_learner_batch(tmp_path):
    """random_remask scores every text slot (full-vocabulary logits at all 32), the trajectory
    estimator only the most one step decodes (4): bigger forwards and train step."""
    remask = plan(_config(tmp_path, "parallel_m", estimator="random_remask"))
    trajectory = _PLANS.get("parallel_m") or plan(_config(tmp_path, "parallel_m"))
    assert remask["sampler"] == trajectory["sampler"]
    for name in ("reference_forward", "policy_forward", "train_step"):
        assert remask[name]["extra"] > trajectory[name]["extra"], name


@pytest.mark.parametrize("task", [pytest.param("text", marks=pytest.mark.slow), "t2i",
                                  pytest.param("mmu", marks=pytest.mark.slow)])
def test_unigrpo_plans_base_tasks(tmp_path, task):
    """UniGRPO of base MMaDA: the task's own sampler, one learner row per rollout (the response
    re-masked), the same phases; more rollouts need more in the learner (the tiny text sampler's
    ~1 MB is the CPU compiler's layout choice, not a function of the rows)."""
    config = _config(tmp_path, task, estimator="unigrpo", s=1)
    p = plan(config)
    assert p["task"] == task and p["rollouts"] == 8 and p["s"] == 1
    for name in PHASES:
        assert p[name]["temporaries"] > 0 and p[name]["extra"] > 0, name
    bigger = plan(config, prompts_per_step=8)
    assert all(bigger[name]["extra"] > p[name]["extra"] for name in ("reference_forward", "train_step"))


def test_more_fsdp_shards_hold_fewer_parameter_bytes(tmp_path):
    wide = persistent(_config(tmp_path, "parallel_m", mesh="fsdp=8"))
    narrow = persistent(_config(tmp_path, "parallel_m", mesh="data=4,fsdp=2"))
    for key in ("params", "optimizer", "reference"):
        assert wide[key] < narrow[key], key


def test_rollout_search():
    calls = []

    def peak(k):
        calls.append(k)
        return 10.0 + 3.0 * k

    assert largest_fitting(peak, 100.0, {}) == 30 and len(calls) <= 5
    calls.clear()
    assert largest_fitting(peak, 100.0, {2: peak(2)}) == 30 and len(calls) <= 5
    assert largest_fitting(peak, 5.0, {}) == 0
    assert largest_fitting(lambda k: k * k, 50.0, {}) == 7
    cfg = type("C", (), {"group_size": 8, "grad_accum": 2})
    assert rollout_quantum(cfg, {"data": 1, "fsdp": 8}) == 2      # 2 x 8 rows = 2 micro-batches of 8
    assert rollout_quantum(cfg, {"fsdp": 16}) == 4


def test_cli_compile_only_prints_the_plan(tmp_path):
    _config(tmp_path, "parallel_a")
    out = subprocess.run([sys.executable, "-m", "train.pararl", "--config", str(tmp_path / "parallel_a_pararl.yaml"),
                          "--compile-only", "--mesh", "fsdp=4"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    for text in ("task parallel_a, on 4 devices", "4 prompts x G=2 = 8 rollouts per step", "rollout sampler",
                 "reference log-prob forward", "train step", "estimated peak per device"):
        assert text in out.stdout, (text, out.stdout)


@pytest.mark.parametrize("task", ["parallel_m", "parallel_a"])
def test_8b_pararl_configs_load(task):
    config = RLConfig.from_yaml(ROOT / "configs" / f"mmada_{task}_pararl.yaml")
    assert config.task == task
    assert config.model_config.endswith(f"configs/mmada_{task}.yaml")
    assert config.checkpoint.endswith(f"ckpt/mmada_{task}")
    assert (config.group_size, config.s, config.beta, config.lr, config.warmup_steps) == (8, 3, 1e-4, 2e-5, 500)
    assert (config.param_dtype, config.dtype, config.remat_policy, config.reference_dtype) == (
        "float32", "bfloat16", "full", "bfloat16")
    assert config.reward == "clip" and config.reward_checkpoint.endswith("ckpt/clip-vit-large-patch14")
    assert config.mesh == "fsdp=-1" and config.prompts.endswith("pararl_prompts.jsonl")
    settings, _ = config.sampler_settings()
    assert (settings.text_len, settings.text_steps, settings.image_cfg) == (256, 128, 4.0)
