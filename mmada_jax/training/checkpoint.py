"""Orbax checkpoints of a training run: train state, data-iterator state and config, saved together.

``CheckpointManager`` (async, keep-N): each step directory holds ``state`` (params, optimizer
state, step, key), ``data`` (the grain iterator position), ``config`` (the TrainConfig as
JSON) and ``model`` (the trained ModelConfig as JSON, so :func:`mmada_jax.load_model` reads a
run or a step back without its base checkpoint). Orbax writes to a temporary directory and
renames it when complete, so a process killed while saving leaves the last good checkpoint intact (the partial one is ignored and cleaned up).
Restoring takes an abstract state whose leaves carry the TARGET shardings, so a run saved on one
mesh resumes on another.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
    def __init__(self, directory: str | Path, keep: int = 3, save_every: int = 1):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every, create=True,
                                               enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_iterator=None, config: dict | None = None, force: bool = False,
             model_config: dict | None = None) -> bool:
        import grain
        items = {"state": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        if config is not None:
            items["config"] = ocp.args.JsonSave(config)
        if model_config is not None:
            items["model"] = ocp.args.JsonSave(model_config)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state: dict, data_iterator=None) -> dict:
        """The state (into ``abstract_state``'s shardings); the iterator is restored in place."""
        import grain
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: dict, shardings: dict) -> dict:
    """ShapeDtypeStructs of ``state`` carrying ``shardings`` (the restore target)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
