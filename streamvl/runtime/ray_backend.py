"""The Backend on Ray actors: one decoder per stream, the encoders that batch across streams (one,
a count, or one per node: streamvl.runtime.encoders), one sink per table (streamvl.runtime.actors).
Nothing starts before `start()`. A decoder is placed beside the encoder of its stream (on its node,
for per-node encoders), so frames do not cross nodes.

Ray CPUs are scheduling tokens, not limits: a decoder waits for I/O most of the time, so each
asks for runtime.decode_cpus or less when the cluster has less left (4 live cameras on 2 CPUs,
encoder 1 + sinks 0.3 + 4 x 0.25, would otherwise leave one decoder unscheduled forever: a live
stream cannot wait for a slot).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from streamvl.config import IndexConfig
from streamvl.runtime.actors import DecodeActor
from streamvl.runtime.encoders import EncoderPool
from streamvl.runtime.backend import Ref, TaskFailed
from streamvl.runtime.decode_hosts import HostedDecoder, HostPool
from streamvl.runtime.sinks import SinkPool, first_line, flush_watches, kill_all
from streamvl.storage.store import STREAMS
from streamvl.types import StreamEvent, StreamInfo, StreamState

# Failures of the machinery (a process died), as opposed to errors raised by our own code.
SYSTEM_ERRORS: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.ActorUnschedulableError,  # a pinned encoder whose node died cannot be placed again
)


def is_system_error(exc: BaseException) -> bool:
    """True when a process died underneath (replay from the checkpoint), not our code raising."""
    cause = getattr(exc, "cause", None)
    return isinstance(exc, SYSTEM_ERRORS) or isinstance(cause, SYSTEM_ERRORS)


@dataclass(eq=False)
class Decoder:
    """A running DecodeActor and the Ray CPUs it reserved."""

    actor: Any
    cpus: float


class RayBackend:
    """Runs a Run's decoders, encoders and sinks as Ray actors (Ray must be initialised)."""

    def __init__(self, config: IndexConfig):
        self.config = config
        self.pool = EncoderPool(config)
        self.sinks = SinkPool(config)
        self.sampling = config.sampling
        self._decoders: dict[int, Decoder] = {}
        self._cpu_budget = 0.0
        # runtime.streams_per_decoder > 1: decoders share host processes (streamvl.runtime.decode_hosts)
        self.hosts = HostPool(config, self._decode_cpus) if config.runtime.streams_per_decoder > 1 else None

    def start(self) -> dict[str, Any]:
        rt = self.config.runtime
        # CPUs this run may reserve for decoders: what was free before its encoder and sinks, less
        # room for a second set of sinks when they are replaced (sink_recycle_s starts the new set first)
        free = float(ray.available_resources().get("CPU", ray.cluster_resources().get("CPU", 0.0)))
        sinks = (6 if rt.sink_recycle_s else 3) * rt.sink_cpus
        self.sinks.start()
        info = self.pool.start()
        self._cpu_budget = free - rt.encode_cpus * len(self.pool.actors) - sinks
        self.sampling = self.config.sampling.model_copy(update={"size": int(info["meta"]["streamvl.image_size"])})
        return info

    # -- decoders ------------------------------------------------------------------------------
    @property
    def encoder(self) -> Any:
        """The first encode actor (the only one unless runtime.encoders says otherwise)."""
        return next(iter(self.pool.actors.values()), None)

    def encoders(self) -> list[str]:
        return self.pool.keys()

    def start_decoder(self, info: StreamInfo, first_index: int, start_after: float | None, resume,
                      encoder: str) -> Decoder | HostedDecoder:
        if self.hosts is not None:  # shared decode hosts are placed by Ray, not beside the encoder
            return self.hosts.start(info, self.sampling, first_index, start_after, resume)
        cpus = self._decode_cpus()
        node = self.pool.node_of(encoder)
        strategy = NodeAffinitySchedulingStrategy(node, soft=True) if node else self.config.runtime.placement
        actor = DecodeActor.options(num_cpus=cpus, scheduling_strategy=strategy).remote(
            info, self.sampling, self.config.live, first_index, start_after, resume)
        decoder = Decoder(actor, cpus)
        self._decoders[id(decoder)] = decoder
        return decoder

    def _decode_cpus(self) -> float:
        """runtime.decode_cpus, or half of what the budget has left when that is less."""
        hosts = self.hosts.reserved_cpus() if self.hosts is not None else 0.0
        free = self._cpu_budget - hosts - sum(d.cpus for d in self._decoders.values())
        return max(0.01, min(self.config.runtime.decode_cpus, round(free / 2, 2)))

    def stop_decoder(self, decoder: Decoder | HostedDecoder) -> None:
        if isinstance(decoder, HostedDecoder):
            self.hosts.stop(decoder)
        elif self._decoders.pop(id(decoder), None) is not None:
            ray.kill(decoder.actor, no_restart=True)

    def next_batch(self, decoder: Decoder | HostedDecoder) -> tuple[Ref, Ref]:
        if isinstance(decoder, HostedDecoder):
            return self.hosts.next_batch(decoder)
        return tuple(decoder.actor.next_batch.remote())

    # -- encoder and sinks ---------------------------------------------------------------------
    def encode(self, batches: Sequence[Ref], encoder: str) -> tuple[Ref, Ref, Ref]:
        return tuple(self.pool[encoder].process.remote(*batches))

    def finish(self, stream_id: str, encoder: str) -> Ref:
        return self.pool[encoder].finish.remote(stream_id)

    def write(self, table: str, data: Ref) -> Ref:
        return self.sinks.current[table].write.remote(data)

    def record_state(self, state: StreamState) -> Ref:
        return self.sinks.current[STREAMS].record_state.remote(state)

    def record_states(self, states: list[StreamState]) -> Ref:
        return self.sinks.current[STREAMS].record_states.remote(states)

    def record_events(self, events: list[StreamEvent]) -> Ref:
        return self.sinks.current[STREAMS].record_events.remote(events)

    def sinks_due(self) -> bool:
        return self.sinks.due()

    def swap_sinks(self) -> None:
        self.sinks.swap()

    # -- waiting -------------------------------------------------------------------------------
    def wait(self, refs: Sequence[Ref], num_returns: int = 1, timeout: float | None = None) -> list[Ref]:
        if not refs:
            return []
        return ray.wait(list(refs), num_returns=min(num_returns, len(refs)), timeout=timeout)[0]

    def get(self, refs: Ref | Sequence[Ref]) -> Any:
        try:
            return ray.get(refs)
        except ray.exceptions.RayError as exc:
            raise TaskFailed(first_line(exc), is_system_error(exc)) from exc

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)

    def await_restarts(self) -> None:
        """Wait (up to runtime.restart_wait_s) until the encoders and every sink answer again.

        A replay sent while Ray is still restarting a crashed actor would fail at once and spend
        one of the stream's max_rewinds on nothing; on 2 busy cores a restart (torch import, model
        load) can outlast them all. An actor that is dead for good answers with an error at once,
        and the replay budget then ends the stream as before. An encoder whose node died is dropped
        (streamvl.runtime.encoders): its streams are replayed beside the others."""
        deadline = time.monotonic() + self.config.runtime.restart_wait_s
        self.pool.await_restarts(deadline)
        for actor in self.sinks.current.values():
            while (left := deadline - time.monotonic()) > 0:
                try:
                    ray.get(actor.pid.remote(), timeout=left)
                    break
                except ray.exceptions.ActorUnavailableError:  # restarting: ask again shortly
                    time.sleep(min(0.5, max(left, 0)))
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    break

    def close(self) -> None:
        """Kill every decoder and decode host, the encoders and the sinks of this run (the sinks' watch events
        written first)."""
        flush_watches(self.sinks.current.values())
        hosts = self.hosts.actors() if self.hosts is not None else []
        kill_all([d.actor for d in self._decoders.values()] + hosts + self.sinks.all() + self.pool.all())
        self._decoders.clear()
        if self.hosts is not None:
            self.hosts.clear()
