"""Orbax checkpoints of a training run: train state, data-iterator state and config, saved together.

``CheckpointManager`` (async, keep-N): each step directory holds ``state`` (params, optimizer
state, step, key), ``data`` (the grain iterator position), ``config`` (the TrainConfig as
JSON), ``model`` (the trained ModelConfig as JSON, so :func:`mmada_jax.load_model` reads a
run or a step back without its base checkpoint) and ``checksums`` (a CRC-32 per parameter of
``state["params"]``, taken from the host copy of the values being saved, gathered from every
process in a multi-host run; checked by :func:`mmada_jax.checkpoints.read_params` and when a run
resumes). Orbax writes to a temporary directory and
renames it when complete, so a process killed while saving leaves the last good checkpoint intact (the partial one is ignored and cleaned up).
Restoring takes an abstract state whose leaves carry the TARGET shardings, so a run saved on one
mesh resumes on another.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from ..hf_io import CHECKSUM_ALGORITHM, CheckpointError, check_scanned, checksum_record, flatten, scan_array

CHECKSUMS_ITEM = "checksums"
HOST_CHUNK_BYTES = 256 * 1024**2   # a parameter is gathered to the host this much at a time


def to_host(value) -> np.ndarray:
    """A numpy copy of a numpy or jax array; one spread over several processes (multi-host
    sharding) is gathered from all of them first: a collective, every process must call it."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        if value.is_fully_replicated:
            return np.asarray(value.addressable_data(0))
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.asarray(jax.device_get(value))


def scan_value(value, crc: int | None = 0) -> tuple[int | None, int]:
    """:func:`~mmada_jax.hf_io.scan_array` of a numpy or (sharded) jax array, brought to the host
    in slices of whole leading-axis rows of ~``HOST_CHUNK_BYTES`` (the CRC chains across them into
    the CRC of the whole array). An array spread over several processes is gathered slice by
    slice (:func:`to_host`): every process must scan the same arrays in the same order."""
    if not isinstance(value, jax.Array) or value.ndim == 0 or value.nbytes <= HOST_CHUNK_BYTES:
        return scan_array(to_host(value), crc)
    rows = max(1, value.shape[0] * HOST_CHUNK_BYTES // value.nbytes)
    bad = 0
    for start in range(0, value.shape[0], rows):
        crc, n = scan_array(to_host(value[start:start + rows]), crc)
        bad += n
    return crc, bad


def param_checksums(params: dict) -> dict[str, dict]:
    """{dotted path: checksum record} of ``params`` (a nested dict of numpy or possibly sharded
    jax arrays), gathered to the host a slice at a time (multi-host: from every process, in
    every process; a collective)."""
    return {".".join(str(k) for k in path): checksum_record(value, scan_value(value)[0])
            for path, value in flatten(params).items()}


def check_value(where, name: str, value, record: dict | None, *, allow_nonfinite: bool = False) -> None:
    """Checksum (when recorded) and NaN/Inf check of one parameter read back (numpy or jax; one
    spread over several processes is gathered to each of them: a collective)."""
    crc, bad = scan_value(value, 0 if record is not None else None)
    check_scanned(str(where), name, value, crc, bad, record, allow_nonfinite=allow_nonfinite)


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
        if isinstance(state, dict) and isinstance(state.get("params"), dict) and (force or self.manager.should_save(step)):
            items[CHECKSUMS_ITEM] = ocp.args.JsonSave({"algorithm": CHECKSUM_ALGORITHM,
                                                       "params": param_checksums(state["params"])})
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, abstract_state: dict, data_iterator=None) -> dict:
        """The state (into ``abstract_state``'s shardings); the iterator is restored in place. The
        parameters are checked against the step's checksums (when it has them) and for NaN/Inf."""
        import grain
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        where = self.directory / str(step)
        try:
            state = self.manager.restore(step, args=ocp.args.Composite(**items))["state"]
        except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many kinds
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise CheckpointError(f"{where}: cannot read the training state ({type(e).__name__}: {first}); "
                                  f"the checkpoint is truncated or damaged") from None
        records = {}
        if (where / CHECKSUMS_ITEM).is_dir():
            handler = ocp.JsonCheckpointHandler()
            try:
                records = handler.restore(where / CHECKSUMS_ITEM).get("params", {})
            except Exception as e:  # noqa: BLE001
                raise CheckpointError(f"{where}: cannot read its {CHECKSUMS_ITEM!r} item: {e}") from None
            finally:
                handler.close()
        if isinstance(state, dict) and isinstance(state.get("params"), dict):
            for path, value in flatten(state["params"]).items():
                name = ".".join(str(k) for k in path)
                check_value(where, name, value, records.get(name))
        return state

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: dict, shardings: dict) -> dict:
    """ShapeDtypeStructs of ``state`` carrying ``shardings`` (the restore target)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
