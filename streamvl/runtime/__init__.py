"""Running an index: the only package that imports Ray.

Plain Python (unit-tested without Ray): engine (the run loop), scheduler (admission,
backpressure), commit (encoder calls and write groups), streams (start, replay, end),
routing (which encoder a stream's batches go to), recorder (the `streams` table), report,
backend (the Backend protocol), and testing + memory_backend (an in-memory Backend for tests).
Ray: driver (ray.init, run_index, serve_index), ray_backend, encoders (one, N or one per node),
sinks and actors. See docs/runtime.md. The package names below load lazily, so importing a plain module never
imports Ray.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"IndexReport": "report", "StreamReport": "report", "IndexRun": "driver", "run_index": "driver",
            "serve_index": "driver"}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"streamvl.runtime.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'streamvl.runtime' has no attribute {name!r}")
