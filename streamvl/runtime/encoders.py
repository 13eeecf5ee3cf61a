"""The encode actors of a run (runtime.encoders): a count placed by runtime.placement, or one per
alive node ("per-node"), each pinned to its node so that the decoders started beside it hand it
frames without crossing the network.

A pinned encoder restarts in place after its process crashes (max_restarts), but not when its
node dies: Ray cannot place it anywhere else, so it is dropped here once its node is reported
dead (or Ray says the actor is dead for good), and the run's router (streamvl.runtime.routing)
moves its streams to the survivors. The last encoder is never dropped: with none left the
streams end through their replay budget, as with one encoder before.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from streamvl.config import IndexConfig
from streamvl.errors import ClusterError
from streamvl.runtime.actors import EncodeActor

log = logging.getLogger(__name__)


def alive_nodes() -> dict[str, dict[str, Any]]:
    """Node id -> ray.nodes() entry, for the nodes Ray reports alive."""
    return {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}


class EncoderPool:
    """The encode actors by key, the node each one is pinned to (per-node), and those gone for good."""

    def __init__(self, config: IndexConfig):
        self.config = config
        self.actors: dict[str, Any] = {}
        self.nodes: dict[str, str] = {}  # key -> node id (per-node encoders only)
        self.gone: set[str] = set()

    @property
    def per_node(self) -> bool:
        return self.config.runtime.encoders == "per-node"

    def start(self) -> dict[str, Any]:
        """Start the encoders; return the first one's description once every one has loaded its model."""
        rt = self.config.runtime
        options = {"num_cpus": rt.encode_cpus, "max_restarts": rt.actor_restarts}
        if self.per_node:
            fit = [(nid, n) for nid, n in alive_nodes().items() if n["Resources"].get("CPU", 0.0) >= rt.encode_cpus]
            if not fit:
                raise ClusterError(f"runtime.encoders = per-node: no alive node has {rt.encode_cpus} CPUs "
                                   "for an encoder (lower runtime.encode_cpus)")
            for nid, node in sorted(fit, key=lambda item: item[1]["NodeManagerAddress"]):
                key = f"encoder@{node['NodeManagerAddress']}/{nid[:8]}"
                strategy = NodeAffinitySchedulingStrategy(nid, soft=False)
                self.actors[key] = EncodeActor.options(**options, scheduling_strategy=strategy).remote(self.config)
                self.nodes[key] = nid
        else:
            count = int(rt.encoders)
            keys = ["encoder"] if count == 1 else [f"encoder:{i}" for i in range(count)]
            for key in keys:
                self.actors[key] = EncodeActor.options(**options, scheduling_strategy=rt.placement).remote(self.config)
        infos = ray.get([a.describe.remote() for a in self.actors.values()])
        return infos[0]

    def keys(self) -> list[str]:
        return [k for k in self.actors if k not in self.gone]

    def node_of(self, key: str) -> str | None:
        return self.nodes.get(key)

    def __getitem__(self, key: str):
        return self.actors[key]

    def await_restarts(self, deadline: float) -> None:
        """Wait (until the monotonic deadline) for each encoder to answer; drop those whose node
        died or that Ray reports dead for good, but never the last one."""
        for key in self.keys():
            actor = self.actors[key]
            while (left := deadline - time.monotonic()) > 0:
                try:
                    ray.get(actor.pid.remote(), timeout=min(left, 2.0))
                    break
                except (ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                    if self._node_dead(key):
                        self._drop(key, "its node died")
                        break
                    time.sleep(min(0.5, max(left, 0)))
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError) as exc:  # dead for good
                    self._drop(key, type(exc).__name__)
                    break

    def _node_dead(self, key: str) -> bool:
        node = self.nodes.get(key)
        return node is not None and node not in alive_nodes()

    def _drop(self, key: str, why: str) -> None:
        if len(self.keys()) > 1:
            self.gone.add(key)
            log.warning("%s is gone (%s): its streams continue on %s", key, why, ", ".join(self.keys()))

    def all(self) -> list[Any]:
        return list(self.actors.values())
