"""Shared bits of the command-line entry points: quiet library logs, clean error exits."""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
import threading
import time
import traceback
from typing import Callable

# OSErrors that are the user's environment, not a bug: reported as ``error: ...`` (exit 2)
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR,
               errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EFBIG, errno.ENAMETOOLONG, errno.EXDEV}
NOISY_LOGGERS = ("absl", "orbax", "jax._src.distributed")


def use_fake_devices(mesh: str | None) -> None:
    """For ``--compile-only`` (AOT memory plans): make this CPU host pretend to have the mesh's
    device count (8 when the mesh names none). Must run before JAX initialises its backends."""
    import math
    import os

    from .sharding import parse_mesh
    devices = math.prod(v for v in parse_mesh(mesh or "").values() if v > 0) or 8
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={devices}").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def quiet_logs() -> None:
    """Silence absl/Orbax INFO and WARNING chatter so progress lines stay readable."""
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    logging.getLogger("absl").setLevel(logging.ERROR)


class _DropErrors(logging.Filter):
    """Drop ERROR/CRITICAL records (Orbax logs each background failure with its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextlib.contextmanager
def _quiet_background(join_timeout_s: float = 10.0):
    """While the command runs: Orbax's background threads neither log their failures (absl
    ERROR records, each with a traceback) nor print uncaught-exception tracebacks (thread hook,
    and ``sys.excepthook``, which errors raised in TensorStore callbacks go through); the failure
    reaches the main thread as one exception, reported once. On failure, Orbax threads started
    meanwhile are joined (bounded) before the hooks are restored, so none prints after it."""
    before = set(threading.enumerate())
    drop = _DropErrors()
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    hooks = threading.excepthook, sys.excepthook, sys.unraisablehook
    for logger in loggers:
        logger.addFilter(drop)
    threading.excepthook = lambda args: None
    sys.excepthook = lambda *args: None
    sys.unraisablehook = lambda args: None
    try:
        yield
    except BaseException:
        deadline = time.monotonic() + join_timeout_s   # let Orbax's failed writers finish quietly
        for thread in set(threading.enumerate()) - before:
            if type(thread).__module__.startswith("orbax") and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        raise
    finally:
        threading.excepthook, sys.excepthook, sys.unraisablehook = hooks
        for logger in loggers:
            logger.removeFilter(drop)


def is_user_error(e: BaseException) -> bool:
    from .config import ConfigError
    from .hf_io import CheckpointError
    if isinstance(e, (CheckpointError, ConfigError, FileNotFoundError, ValueError)):
        return True
    return isinstance(e, OSError) and e.errno in USER_ERRNOS


def run_guarded(main: Callable[[], int]) -> int:
    """Run ``main``; a known user error (bad checkpoint or config, missing file, bad value, full
    disk, no permission) prints ``error: ...`` and returns 2; any other exception prints
    ``internal error: ...`` and its traceback and returns 1. Background-thread noise of Orbax is
    kept off stderr meanwhile."""
    try:
        with _quiet_background():
            return main()
    except Exception as e:  # noqa: BLE001 - the one place every failure is reported
        if is_user_error(e):
            if isinstance(e, OSError) and e.strerror:
                message = f"{e.strerror.lower()}" + (f": {e.filename}" if e.filename else "")
            else:
                message = str(e)
            print(f"error: {message}", file=sys.stderr)
            return 2
        print(f"internal error: {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return 1
