"""Shared test fixtures: where the golden reference data lives.

Golden data is read from ``$MMADA_GOLDEN_DIR`` when set (same layout as ``shared/golden``), else
from the project's copy in ``tests/golden``, else from ``../shared/golden`` beside the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

# The sharding tests run on 8 fake CPU devices; this must be set before jax is imported.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def golden_root_for(name: str) -> Path | None:
    env = os.environ.get("MMADA_GOLDEN_DIR")
    candidates = [Path(env)] if env else [ROOT / "tests" / "golden", ROOT.parent / "shared" / "golden"]
    for root in candidates:
        if (root / name).exists():
            return root
    return None


def golden_path(name: str) -> Path:
    """Path of a golden item (``mmada_tiny``, ``samplers/t2i_tiny.npz`` ...); fails if absent."""
    root = golden_root_for(name)
    if root is None:
        where = os.environ.get("MMADA_GOLDEN_DIR") or f"{ROOT / 'tests' / 'golden'} or ../shared/golden"
        pytest.fail(f"golden data {name!r} not found in {where}")
    return root / name


def tiny_m_args() -> tuple:
    """The flags that run ``sample parallel`` / ``evaluate`` on the tiny random MMaDA (their default
    without --checkpoint is the trained demo model)."""
    return ("--checkpoint", golden_path("mmada_tiny"), "--vq", golden_path("magvitv2_tiny"),
            "--tokenizer", ROOT / "tests" / "fixtures" / "tiny_tokenizer")


@pytest.fixture
def golden():
    """``golden(name)`` -> Path of that golden item."""
    return golden_path


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def independent_token_logp(model, batch: dict, layout) -> np.ndarray:
    """[R, P] log-probabilities of ``batch['targets']`` (the RL learner's batch) from the model's
    whole-vocabulary logits in float64 numpy: what ``rl.trajectory.token_logp`` must give."""
    import jax.numpy as jnp
    t = model.config.tokens
    hidden, _ = model.encode(jnp.asarray(batch["ids"]), jnp.asarray(batch["attention_mask"]), mask_mode="hard",
                             position_ids=jnp.asarray(batch["position_ids"]))
    logits = np.asarray(model.head(hidden), np.float64)

    def log_softmax(x):
        top = x.max(-1, keepdims=True)
        return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))
    text = log_softmax(logits[:, layout.generated_text_positions()])
    image = log_softmax(logits[:, layout.image_positions(), t.image_offset:t.image_offset + t.codebook_size])
    n = text.shape[1]
    return np.concatenate([np.take_along_axis(text, batch["targets"][:, :n, None], -1)[..., 0],
                           np.take_along_axis(image, batch["targets"][:, n:, None], -1)[..., 0]], -1)
