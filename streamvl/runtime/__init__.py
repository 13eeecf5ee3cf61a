"""The only package that imports Ray: actors, wiring, backpressure."""

from streamvl.runtime.driver import IndexReport, StreamReport, run_index

__all__ = ["IndexReport", "StreamReport", "run_index"]
