"""`serve --index`: the long-running indexing job of `streamvl serve-index`, as a child process.

A child process, not a thread: it keeps Ray (which installs its own signal handlers and must own
its main thread) out of the web server, and it stops the way `serve-index` stops, on SIGTERM,
committing what it holds; streams added through the API reach it through the stream_requests table.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Sequence

LAUNCH = "import sys; from streamvl.cli import main; sys.argv[0] = 'streamvl'; main()"


class IndexJob:
    """Starts, watches and stops one `streamvl serve-index --db DB` child."""

    def __init__(self, db: str, args: Sequence[str] = ()) -> None:
        self.argv = [sys.executable, "-c", LAUNCH, "serve-index", "--db", db, *args]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "IndexJob":
        # its own session: a terminal's Ctrl-C reaches the server, which then stops the job in order
        self.proc = subprocess.Popen(self.argv, start_new_session=True)
        return self

    def status(self) -> str:
        if self.proc is None:
            return "not started"
        code = self.proc.poll()
        return "running" if code is None else f"exited {code}"

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, wait for the job to commit and exit; SIGKILL after timeout_s. Returns its exit code."""
        return None if self.proc is None else stop_process(self.proc, timeout_s)


def stop_process(proc: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM, wait up to timeout_s for a clean exit, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
