"""The only package that imports Ray: actors, wiring, backpressure."""

from streamvl.runtime.driver import IndexReport, IndexRun, StreamReport, run_index, serve_index

__all__ = ["IndexReport", "IndexRun", "StreamReport", "run_index", "serve_index"]
