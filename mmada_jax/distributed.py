"""Multi-process (multi-host) start-up: ``jax.distributed.initialize()`` when the launch asks for it.

Every process of a multi-host job runs the same command; :func:`initialize` (called first thing
by ``python -m train.sft`` and ``python -m sample``, and by
:func:`~mmada_jax.training.loop.run_sft`) connects them before anything touches a device. What
decides that a launch is multi-process, in order:

* ``MMADA_DISTRIBUTED=0``: never (a single-process run, whatever the environment says);
* ``MMADA_COORDINATOR=host:port`` with ``MMADA_NUM_PROCESSES=N`` and ``MMADA_PROCESS_ID=i``:
  explicit, for any cluster or for several processes on one machine;
* ``MMADA_DISTRIBUTED=1``: always, with JAX's own detection of the rest;
* otherwise JAX's own launch markers: ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES`` /
  ``JAX_PROCESS_ID``), a Cloud TPU VM (the slice's hosts found from its metadata; a single-host
  slice becomes one process), SLURM with more than one task (``srun``), Open MPI with more than
  one rank (``mpirun``).

Which devices a process uses: all of its host's by default; under SLURM/Open MPI detection JAX
gives each process ONE GPU (its local rank: launch one task per GPU), unless
``JAX_LOCAL_DEVICE_IDS=0,1,...`` (read by JAX) says otherwise. On CPU, cross-process collectives
use gloo (JAX's default ``jax_cpu_collectives_implementation``).
"""

from __future__ import annotations

import os
from typing import Any, Callable

ENV_SWITCH = "MMADA_DISTRIBUTED"
ENV_COORDINATOR = "MMADA_COORDINATOR"
ENV_NUM_PROCESSES = "MMADA_NUM_PROCESSES"
ENV_PROCESS_ID = "MMADA_PROCESS_ID"


def _int(name: str, value: str | None) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def _more_than_one(env, name: str) -> bool:
    return (_int(name, env.get(name)) or 0) > 1


def _on_cloud_tpu_vm() -> bool:
    try:
        from jax._src import cloud_tpu_init   # set when `import jax` found libtpu and TPU chips
        return bool(cloud_tpu_init.running_in_cloud_tpu_vm)
    except (ImportError, AttributeError):
        return False


def launch_arguments(environ=None) -> dict | None:
    """The ``jax.distributed.initialize`` keyword arguments this launch asks for (``{}``: JAX
    detects them), or None for a single-process run (see the module docstring)."""
    env = os.environ if environ is None else environ
    switch = env.get(ENV_SWITCH, "").strip().lower()
    if switch in ("0", "false", "no", "off"):
        return None
    if env.get(ENV_COORDINATOR):
        missing = [n for n in (ENV_NUM_PROCESSES, ENV_PROCESS_ID) if not env.get(n)]
        if missing:
            raise ValueError(f"{ENV_COORDINATOR} is set but {' and '.join(missing)} not: a multi-process launch "
                             f"needs all three")
        return {"coordinator_address": env[ENV_COORDINATOR],
                "num_processes": _int(ENV_NUM_PROCESSES, env[ENV_NUM_PROCESSES]),
                "process_id": _int(ENV_PROCESS_ID, env[ENV_PROCESS_ID])}
    if switch in ("1", "true", "yes", "on"):
        return {}
    if switch not in ("", "auto"):
        raise ValueError(f"{ENV_SWITCH}={env[ENV_SWITCH]!r}: expected 0, 1 or auto")
    if env.get("JAX_COORDINATOR_ADDRESS"):
        return {k: v for k, v in (("num_processes", _int("JAX_NUM_PROCESSES", env.get("JAX_NUM_PROCESSES"))),
                                  ("process_id", _int("JAX_PROCESS_ID", env.get("JAX_PROCESS_ID"))))
                if v is not None}
    if "SLURM_JOB_ID" in env and "SLURM_STEP_NODELIST" in env and _more_than_one(env, "SLURM_NTASKS"):
        return {}
    if "OMPI_MCA_orte_hnp_uri" in env and _more_than_one(env, "OMPI_COMM_WORLD_SIZE"):
        return {}
    if environ is None and _on_cloud_tpu_vm():
        return {}
    return None


def is_initialized() -> bool:
    """Whether ``jax.distributed`` is connected in this process."""
    from jax._src import distributed
    return distributed.global_state.client is not None


def initialize(log: Callable[[str], None] | None = None) -> bool:
    """Connect this process to the others of a multi-process launch (see the module docstring);
    returns whether ``jax.distributed`` is initialized afterwards. A no-op for a single-process
    launch or when it is already initialized. Call it before anything touches a JAX device: when
    the devices are already in use and the launch asks for several processes, this is an error
    (an unconnected process would train or sample on its own and write the same files)."""
    if is_initialized():
        return True
    kwargs = launch_arguments()
    if kwargs is None:
        return False
    import jax
    from jax._src import xla_bridge
    if xla_bridge.backends_are_initialized():
        raise RuntimeError("this launch is multi-process (" + _describe(kwargs) + ") but JAX's devices were "
                           "used before jax.distributed could start: call mmada_jax.distributed.initialize() "
                           f"first (or set {ENV_SWITCH}=0 for a single-process run)")
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # noqa: BLE001 - name the launch in the error
        raise RuntimeError(f"jax.distributed.initialize() failed for a multi-process launch "
                           f"({_describe(kwargs)}): {type(e).__name__}: {e}; set {ENV_SWITCH}=0 for a "
                           f"single-process run") from e
    if log is not None:
        log(f"jax.distributed: process {jax.process_index()} of {jax.process_count()}, "
            f"{jax.local_device_count()} local of {jax.device_count()} devices")
    return True


def _describe(kwargs: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "detected from the environment"


def on_process_0(fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` on process 0 alone (e.g. checks and writes of a shared output folder), its
    outcome shared: when it raises, every process stops (process 0 with its error, the others with
    a ValueError naming ``what``) instead of the others waiting for process 0 in a collective.
    Returns ``fn()``'s value on process 0 and None elsewhere; with one process, just ``fn()``."""
    import jax
    if jax.process_count() == 1:
        return fn()
    import numpy as np
    from jax.experimental import multihost_utils
    result, error = None, None
    if jax.process_index() == 0:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, once the others know
            error = e
    ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if error is not None:
        raise error
    if not ok:
        raise ValueError(f"process 0 failed: {what} (its error is in its output)")
    return result
