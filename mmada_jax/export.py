"""A training run (or one of its checkpoints) as a self-contained converted checkpoint.

``python -m train.export RUN DST`` writes into ``DST``: the trained transformer (``config.yaml``,
``params/``, ``checksums.json``: what :func:`~mmada_jax.checkpoints.save_model` writes), the
budgets it trained with as sampling defaults (``sampling.yaml``, -M; merged into an existing one),
the run's text tokenizer in ``hf/`` and its image tokenizer, as a converted checkpoint, in
``vqvae/``: the layout :func:`~mmada_jax.checkpoints.open_checkpoint` reads, so ``--checkpoint DST`` alone runs every
command. A side folder that ``DST`` already holds because the run trained with it (``tokenizer:
DST/hf``, ``vq: DST/vqvae``, the demo models' case) is left as it is.

Everything is built in a staging folder beside ``DST``; the entries of ``DST`` it replaces are
swapped in one by one only once all are written, and only with ``overwrite`` (other files in
``DST``, a README, plots, are never touched).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml

from .app.cli import SAMPLING_FILE, run_sampling_defaults
from .checkpoints import CONFIG_FILE, TRAINING, VQ_SUBFOLDER, load_model, load_vq, open_checkpoint, save_model, save_vq
from .convert import CHECKSUMS_FILE, HF_DIR, PARAMS_DIR
from .hf_io import CheckpointError


def _same(a: Path | None, b: Path) -> bool:
    return a is not None and b.exists() and a.resolve() == b.resolve()


def _merged_sampling(budgets: dict, existing: Path) -> dict:
    """``budgets`` merged into the sampling file ``existing`` (when there is one): the settings
    chosen there by hand stay. Read before any weights are, so a bad file stops the export first."""
    if not budgets or not existing.is_file():
        return budgets
    try:
        old = yaml.safe_load(existing.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{existing}: not valid YAML: {e}") from None
    if not isinstance(old, dict) or not all(isinstance(v, dict) for v in old.values()):
        raise ValueError(f"{existing}: expected {{task name: {{setting: value}}}}")
    return {**old, **{task: {**old.get(task, {}), **values} for task, values in budgets.items()}}


def export_run(src: str | Path, dst: str | Path, *, overwrite: bool = False, log=print) -> Path:
    """Export the training run or checkpoint ``src`` to ``dst`` (see the module docstring)."""
    ckpt = open_checkpoint(src, image_tokenizer=False)
    if ckpt.format != TRAINING:
        raise CheckpointError(f"{src}: a {ckpt.format} checkpoint, not a training run (it can be used as it is)")
    dst = Path(dst)
    entries = [CONFIG_FILE, PARAMS_DIR, CHECKSUMS_FILE]
    sampling = _merged_sampling(run_sampling_defaults(ckpt), dst / SAMPLING_FILE)
    entries += [SAMPLING_FILE] * bool(sampling)
    copy_tokenizer = ckpt.tokenizer_dir is not None and not _same(ckpt.tokenizer_dir, dst / HF_DIR)
    copy_vq = ckpt.vq_dir is not None and not _same(ckpt.vq_dir, dst / VQ_SUBFOLDER)
    entries += [HF_DIR] * copy_tokenizer + [VQ_SUBFOLDER] * copy_vq
    clash = [e for e in entries if (dst / e).exists()]
    if clash and not overwrite:
        raise ValueError(f"{dst} already holds {clash}: pass --overwrite to replace them")
    dst.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.export-", dir=dst))
    try:
        model, _ = load_model(ckpt)
        save_model(model, stage)
        if sampling:
            (stage / SAMPLING_FILE).write_text(yaml.safe_dump(sampling, sort_keys=False))
        if copy_tokenizer:
            shutil.copytree(ckpt.tokenizer_dir, stage / HF_DIR)
        if copy_vq:
            save_vq(load_vq(ckpt.vq_dir), stage / VQ_SUBFOLDER)
        for e in entries:
            if (dst / e).exists():
                old = stage / f"{e}.replaced"
                (dst / e).rename(old)
            (stage / e).rename(dst / e)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log(f"exported {ckpt.path} (step {ckpt.step}) to {dst}: {', '.join(entries)}"
        + ("" if copy_tokenizer else f"; tokenizer {dst / HF_DIR} kept") + ("" if copy_vq else f"; VQ {dst / VQ_SUBFOLDER} kept"))
    return dst
