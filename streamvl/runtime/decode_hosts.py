"""Decode hosts: the decoders of several streams in one Ray actor process (runtime.streams_per_decoder > 1).

A process per stream costs a Python interpreter, PyAV and Ray's worker machinery each (~150-200
MiB, and heartbeats and polling that add up on 2 cores), while a 1 frame/s live stream needs a
few milliseconds of decoding a second. A host runs each of its streams' sources in its own
thread (Ray's threaded actor: PyAV leaves the GIL while it waits for data and decodes); calls
for one stream keep the driver's order through tickets (streamvl.runtime.backend.PullerHost).

A host that died takes its streams' decoders with it: their requests fail, the run replays
them, and a new decoder goes to a host that answers (a host that lost a stream is pinged
before it gets another one).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import ray

from streamvl.config import IndexConfig, LiveConfig, SamplingConfig
from streamvl.runtime.backend import BatchMeta, PullerHost
from streamvl.types import FrameBatch, StreamInfo

PING_TIMEOUT_S = 10.0


@ray.remote(max_restarts=0)
class DecodeHost:
    """Decoders of several streams in one process; `max_concurrency` threads serve their calls."""

    def __init__(self) -> None:
        self.host = PullerHost()

    def pid(self) -> int:
        import os

        return os.getpid()

    def open(self, key: str, info: StreamInfo, sampling: SamplingConfig, live: LiveConfig, first_index: int,
             start_after: float | None, resume) -> None:
        def open_batches():
            from streamvl.sources import open_stream

            return open_stream(info, sampling, live, first_index=first_index, start_after=start_after, resume=resume)

        self.host.open(key, open_batches, info.stream_id)

    @ray.method(num_returns=2)
    def next_batch(self, key: str, ticket: int) -> tuple[BatchMeta, FrameBatch | None]:
        return self.host.next(key, ticket)

    def close(self, key: str) -> None:
        self.host.close(key)


@dataclass(eq=False)
class Host:
    actor: Any
    cpus: float
    keys: set[str] = field(default_factory=set)
    lost_one: bool = False  # a stream left it: make sure it is alive before it gets another


@dataclass(eq=False)
class HostedDecoder:
    """One stream's decoder on a host; tickets number its requests."""

    host: Host
    key: str
    tickets: Any = field(default_factory=itertools.count)
    cpus: float = 0.0  # its host's reservation is counted once, on the host


class HostPool:
    """Places decoders on hosts of up to runtime.streams_per_decoder streams; starts a host when all are full."""

    def __init__(self, config: IndexConfig, cpus_for_new_host) -> None:
        self.config = config
        self.per_host = config.runtime.streams_per_decoder
        self._cpus_for_new_host = cpus_for_new_host
        self.hosts: list[Host] = []
        self.started = 0  # hosts started so far
        self._keys = itertools.count()

    def start(self, info: StreamInfo, sampling: SamplingConfig, first_index: int, start_after: float | None,
              resume) -> HostedDecoder:
        host = self._place()
        key = f"{info.stream_id}#{next(self._keys)}"
        host.actor.open.remote(key, info, sampling, self.config.live, first_index, start_after, resume)
        host.keys.add(key)
        return HostedDecoder(host, key)

    def _place(self) -> Host:
        for host in sorted(self.hosts, key=lambda h: len(h.keys)):
            if len(host.keys) >= self.per_host:
                break
            if host.lost_one and not self._alive(host):
                self._drop(host)
                continue
            host.lost_one = False
            return host
        cpus = self._cpus_for_new_host()
        concurrency = self.per_host * self.config.runtime.inflight_per_stream + 4  # waiting turns hold threads
        actor = DecodeHost.options(num_cpus=cpus, max_concurrency=concurrency,
                                   scheduling_strategy=self.config.runtime.placement).remote()
        host = Host(actor, cpus)
        self.hosts.append(host)
        self.started += 1
        return host

    def _alive(self, host: Host) -> bool:
        try:
            ray.get(host.actor.pid.remote(), timeout=PING_TIMEOUT_S)
            return True
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return False

    def _drop(self, host: Host) -> None:
        self.hosts.remove(host)
        ray.kill(host.actor, no_restart=True)

    def next_batch(self, decoder: HostedDecoder) -> tuple[Any, Any]:
        return tuple(decoder.host.actor.next_batch.remote(decoder.key, next(decoder.tickets)))

    def stop(self, decoder: HostedDecoder) -> None:
        host = decoder.host
        if decoder.key not in host.keys:
            return
        host.keys.discard(decoder.key)
        host.lost_one = True
        if host not in self.hosts:
            return
        if not host.keys:  # nothing left on it: end the process (a new stream starts a fresh one)
            self._drop(host)
        else:
            host.actor.close.remote(decoder.key)

    def reserved_cpus(self) -> float:
        return sum(h.cpus for h in self.hosts)

    def actors(self) -> list[Any]:
        return [h.actor for h in self.hosts]

    def clear(self) -> None:
        self.hosts.clear()
