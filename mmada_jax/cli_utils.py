"""Shared bits of the command-line entry points: quiet library logs, clean error exits."""

from __future__ import annotations

import logging
import sys
from typing import Callable


def quiet_logs() -> None:
    """Silence absl/Orbax INFO and WARNING chatter so progress lines stay readable."""
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    logging.getLogger("absl").setLevel(logging.ERROR)


def run_guarded(main: Callable[[], int]) -> int:
    """Run ``main``; a known user error prints ``error: ...`` and exits 2 instead of a traceback."""
    from .config import ConfigError
    from .hf_io import CheckpointError
    try:
        return main()
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
