"""A Backend in this process, for unit tests of the run loop without Ray (streamvl.runtime.testing
has its parts: ListSource decoders, a FakeEncoder, sinks into a MemoryDB).

Calls complete lazily: on every wait() each queued call completes with probability `progress`
(seeded), and a wait with a timeout completes at least one of the refs it waits on (and more
until num_returns are ready), as time passing would. A call
first completes the earlier calls of its worker (calls to a Ray actor run in order) and the calls
its arguments come from. kill() ends a worker as a crash would: its queued calls fail as system
failures; the encoder comes back empty (as Ray restarts it), the sinks keep the database (with
land=True the writes queued on a killed sink land but are reported failed), decoders stay dead.
With encoders=N each encoder stands for a node (runtime.encoders = "per-node"): decoders are
placed beside the encoder they are started for, and kill_node() ends an encoder for good with
every decoder on its node, as a node that dies does; like Ray, the backend lists that encoder
until the run waits for restarts (await_restarts), which finds it gone. It also measures what the run keeps in
flight, independently of the run's own counters.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any, Callable, Mapping, Sequence

from streamvl.runtime.backend import BatchPuller, TaskFailed
from streamvl.runtime.testing import FakeEncoder, ListSource, MemoryDB
from streamvl.sources.decode import is_url
from streamvl.storage.schema import stream_row
from streamvl.storage.store import STREAMS
from streamvl.types import StreamEvent, StreamInfo, StreamState


class _Call:
    """One call to a worker, run at most once; its outputs are read through MemRefs."""

    def __init__(self, worker: str, kind: str, fn: Callable[[], Any], outputs: int):
        self.worker, self.kind, self.fn, self.outputs = worker, kind, fn, outputs
        self.value: tuple | None = None
        self.error: TaskFailed | None = None
        self.taken = False

    @property
    def done(self) -> bool:
        return self.value is not None or self.error is not None


class MemRef:
    """One output of a call (what a Ray ObjectRef is to the run)."""

    def __init__(self, call: _Call, index: int):
        self.call, self.index = call, index


class MemoryBackend:
    """Runs decoders, an encoder and sinks in memory, lazily and in a seeded order, with kills on demand."""

    def __init__(self, db: MemoryDB, sources: Mapping[str, ListSource], window: int, stride: int, *,
                 seed: int = 0, progress: float = 0.3, swap_sinks_every: int = 0, encoders: int = 1):
        self.db, self.sources, self.window, self.stride = db, sources, window, stride
        self.rng, self.progress, self.swap_every = random.Random(seed), progress, swap_sinks_every
        keys = ["encoder"] if encoders == 1 else [f"encoder:{i}" for i in range(encoders)]
        self.fakes = {key: FakeEncoder(window, stride) for key in keys}  # encoder key -> its fake (one per node)
        self.gone: set[str] = set()  # encoders whose node died, once the run has noticed (await_restarts)
        self.dying: set[str] = set()  # encoders whose node died
        self.placed: dict[str, str] = {}  # decoder -> the encoder (node) it was started beside
        self.decoders_of: dict[str, str] = {}  # decoder -> its stream (also once it is dead)
        self.encoded: Counter[str] = Counter()  # frames each encoder embedded
        self.queues: dict[str, list[_Call]] = defaultdict(list)  # worker -> calls not run yet, in order
        self.dead: set[str] = set()
        self.decoders: dict[str, StreamInfo] = {}  # live decoder -> its stream
        self._pullers: dict[str, BatchPuller] = {}
        self._writes_since_swap = 0
        self.started = self.closed = False
        # measured here: batches asked of a decoder and not taken; encoder calls queued; file decoders alive
        self.asked: Counter[str] = Counter()
        self.peak_asked = self.peak_asked_total = self.peak_encodes = self.peak_file_decoders = 0
        self.swaps = self.unsafe_swaps = 0  # sink swaps, and sink calls still queued at one (must stay 0)
        self.blocking_gets = 0  # get() of a result not ready yet: the loop would block on it
        self.killed: list[str] = []
        self.state_writes: list[int] = []  # rows per `streams` write (record_states calls)
        self.peak_state_writes = 0  # record_states calls queued at once

    # -- calls ---------------------------------------------------------------------------------
    def _call(self, worker: str, kind: str, fn: Callable[[], Any], outputs: int = 1) -> list[MemRef]:
        call = _Call(worker, kind, fn, outputs)
        if worker in self.dead or self.closed:
            call.error = TaskFailed(f"{worker} is dead", system=True)
        else:
            self.queues[worker].append(call)
        return [MemRef(call, i) for i in range(outputs)]

    def _run(self, call: _Call) -> None:
        queue = self.queues.get(call.worker, [])
        while not call.done and queue:
            head = queue.pop(0)
            try:
                value = head.fn()
                head.value = tuple(value) if head.outputs > 1 else (value,)
            except TaskFailed as exc:  # an argument's call failed: so does this one
                head.error = exc

    def _value(self, ref: MemRef) -> Any:
        self._run(ref.call)
        if ref.call.error is not None:
            raise TaskFailed(ref.call.error.message, ref.call.error.system)
        return ref.call.value[ref.index]

    def _background(self) -> None:
        """Time passes: each queued call completes with probability `progress`."""
        for queue in list(self.queues.values()):
            for call in list(queue):
                if self.rng.random() < self.progress:
                    self._run(call)

    def kill(self, worker: str, land: bool = False) -> None:
        """Crash a worker ("encoder", "sink:<table>", or "decoder:<stream id>" for a stream's decoder)."""
        if worker.startswith("decoder:") and worker not in self.decoders:
            worker = next(w for w, info in self.decoders.items() if info.stream_id == worker[len("decoder:"):])
        for call in self.queues.pop(worker, []):
            if land and worker.startswith("sink:"):
                try:
                    call.fn()  # the write lands; its reply is lost
                except TaskFailed:
                    pass
            call.error = TaskFailed(f"{worker} died", system=True)
        if worker in self.decoders:
            self.dead.add(worker)
            del self.decoders[worker]
            self.asked.pop(worker, None)
        if worker in self.fakes and worker not in self.gone:
            self.fakes[worker] = FakeEncoder(self.window, self.stride)  # restarted by Ray: its windows are gone
        self.killed.append(worker)

    def kill_node(self, encoder: str) -> None:
        """The node of this encoder dies: the encoder is gone for good, and so is every decoder placed there."""
        self.dying.add(encoder)
        self.dead.add(encoder)
        self.kill(encoder)
        for decoder in [d for d, e in self.placed.items() if e == encoder and d in self.decoders]:
            self.kill(decoder)

    # -- the Backend protocol ------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        self.started = True
        return {"model": "fake-model", "warning": None, "meta": {}, "precision": "fp32"}

    def encoders(self) -> list[str]:
        return [key for key in self.fakes if key not in self.gone]

    def start_decoder(self, info: StreamInfo, first_index: int, start_after: float | None, resume,
                      encoder: str) -> str:
        worker = f"decoder:{info.stream_id}:{len(self._pullers)}"
        self.placed[worker] = encoder
        self.decoders_of[worker] = info.stream_id
        source = self.sources[info.uri]
        self._pullers[worker] = BatchPuller(info.stream_id, lambda: source.batches(info, first_index, start_after))
        self.decoders[worker] = info
        files = sum(1 for i in self.decoders.values() if not is_url(i.uri))
        self.peak_file_decoders = max(self.peak_file_decoders, files)
        return worker

    def stop_decoder(self, decoder: str) -> None:
        for call in self.queues.pop(decoder, []):
            call.error = TaskFailed(f"{decoder} was stopped", system=True)
        self.dead.add(decoder)
        self.decoders.pop(decoder, None)
        self.asked.pop(decoder, None)

    def next_batch(self, decoder: str) -> tuple[MemRef, MemRef]:
        if decoder in self.decoders:
            self.asked[decoder] += 1
            self.peak_asked = max(self.peak_asked, self.asked[decoder])
            self.peak_asked_total = max(self.peak_asked_total, sum(self.asked.values()))
        meta, batch = self._call(decoder, "next", lambda: self._pullers[decoder].next(), 2)
        return meta, batch

    def encode(self, batches: Sequence[MemRef], encoder: str) -> tuple[MemRef, MemRef, MemRef]:
        queued = sum(1 for c in self.queues[encoder] if c.kind == "process")
        self.peak_encodes = max(self.peak_encodes, queued + 1)  # on one encoder

        def process():
            values = [self._value(b) for b in batches]
            self.encoded[encoder] += sum(len(b) for b in values if b is not None)
            return self.fakes[encoder].process(values)

        frames, clips, progress = self._call(encoder, "process", process, 3)
        return frames, clips, progress

    def finish(self, stream_id: str, encoder: str) -> MemRef:
        return self._call(encoder, "finish", lambda: self.fakes[encoder].finish(stream_id))[0]

    def write(self, table: str, data: MemRef) -> MemRef:
        self._writes_since_swap += 1
        return self._call(f"sink:{table}", "write", lambda: self.db.write(table, self._value(data)))[0]

    def record_state(self, state: StreamState) -> MemRef:
        row = stream_row(state)  # the row the streams sink stores
        return self._call(f"sink:{STREAMS}", "record", lambda: self.db.rows.__setitem__(row["stream_id"], row))[0]

    def record_states(self, states: list[StreamState]) -> MemRef:
        rows = [stream_row(state) for state in states]
        self.state_writes.append(len(rows))
        queued = sum(1 for c in self.queues[f"sink:{STREAMS}"] if c.kind == "states")
        self.peak_state_writes = max(self.peak_state_writes, queued + 1)
        return self._call(f"sink:{STREAMS}", "states", lambda: self.db.rows.update((r["stream_id"], r) for r in rows))[0]

    def record_events(self, events: list[StreamEvent]) -> MemRef:
        return self._call(f"sink:{STREAMS}", "record", lambda: self.db.events.extend(events))[0]

    def wait(self, refs: Sequence[MemRef], num_returns: int = 1, timeout: float | None = None) -> list[MemRef]:
        self._background()
        if timeout != 0:  # the caller blocks (or spins): time passes, its refs complete oldest first
            for ref in refs:
                if not ref.call.done:
                    self._run(ref.call)
                    if sum(r.call.done for r in refs) >= num_returns:
                        break
        return [r for r in refs if r.call.done][:num_returns]

    def get(self, refs: MemRef | Sequence[MemRef]) -> Any:
        if isinstance(refs, (list, tuple)):
            return [self._take(r) for r in refs]
        return self._take(refs)

    def _take(self, ref: MemRef) -> Any:
        call = ref.call
        self.blocking_gets += not call.done
        if call.kind == "next" and ref.index == 0 and not call.taken:
            call.taken = True
            if call.worker in self.asked:
                self.asked[call.worker] -= 1
        return self._value(ref)

    def pause(self, seconds: float) -> None:
        pass

    def await_restarts(self) -> None:
        """The fake encoders and sinks are back at once; those on a dead node are found gone (never the last)."""
        for key in sorted(self.dying - self.gone):
            if len(self.encoders()) > 1:
                self.gone.add(key)

    def sinks_due(self) -> bool:
        return bool(self.swap_every) and self._writes_since_swap >= self.swap_every

    def swap_sinks(self) -> None:
        self.unsafe_swaps += sum(len(q) for w, q in self.queues.items() if w.startswith("sink:"))
        self.swaps += 1
        self._writes_since_swap = 0

    def close(self) -> None:
        for decoder in list(self.decoders):
            self.stop_decoder(decoder)
        self.closed = True

    def queued(self) -> int:
        """Calls not run yet."""
        return sum(len(q) for q in self.queues.values())
