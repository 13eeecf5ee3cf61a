"""Which encoder a stream's batches go to. Plain Python, no Ray.

The encode stage keeps each stream's open windows, so a stream sticks to one encoder while that
encoder is up; its decoder is started beside it (on its node), so frames do not cross nodes.
A stream is (re)assigned whenever a decoder of it starts: at admission and at every replay. When
an encoder is gone for good (its node died) it is no longer in `alive`, and the streams that used
it move to the least loaded survivor; their replay starts with a decoder batch of seq 0, which
opens fresh windows there at the committed position, so nothing is doubled or skipped.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from streamvl.errors import ClusterError


class EncoderRouter:
    """Sticky, least-loaded assignment of streams to the encoders that are up."""

    def __init__(self) -> None:
        self.assigned: dict[str, str] = {}  # stream id -> encoder key
        self.moves = 0  # streams moved off an encoder that was gone

    def assign(self, stream_id: str, alive: Sequence[str]) -> str:
        """The stream's encoder: its current one if still alive, else the one with fewest streams."""
        if not alive:
            raise ClusterError(f"stream {stream_id}: no encoder is left running on any node")
        current = self.assigned.get(stream_id)
        if current in alive:
            return current
        load = Counter(k for s, k in self.assigned.items() if s != stream_id and k in alive)
        choice = min(alive, key=lambda k: (load[k], list(alive).index(k)))
        self.moves += current is not None
        self.assigned[stream_id] = choice
        return choice

    def release(self, stream_id: str) -> None:
        """The stream closed: it no longer counts towards its encoder's load."""
        self.assigned.pop(stream_id, None)

    def of(self, stream_id: str) -> str | None:
        return self.assigned.get(stream_id)
