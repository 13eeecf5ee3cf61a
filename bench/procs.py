"""Which streamvl process a pid is, for the benches' RSS and CPU tables."""

from __future__ import annotations

import time

import psutil

FFMPEG = "/usr/bin/ffmpeg"


def process_kind(cmdline: str, pid: int, driver_pid: int) -> str | None:
    """'driver' for the driver, the actor class of a `ray::Class.method` worker, else None."""
    if pid == driver_pid:
        return "driver"
    if "ray::" not in cmdline:
        return None
    return cmdline.split("ray::", 1)[1].split()[0].split(".")[0] or None


def rss_parts(pid: int) -> dict[str, float]:
    """RSS split as the kernel counts it (MiB): anon (the process's private heap), file (mapped
    files: libraries, memory-mapped data), shmem (shared memory, e.g. Ray's object store)."""
    parts = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                parts[key[3:].lower()] = int(value.split()[0]) / 1024
    return parts


def kind_of(proc: psutil.Process, driver: int) -> str | None:
    """Which part of the run a process is: an actor class, driver, cameras, ray (Ray's own)."""
    cmd = " ".join(proc.cmdline())
    if "gst_cameras.py" in cmd or cmd.startswith(FFMPEG) or " " + FFMPEG in cmd:
        return "cameras"
    name = process_kind(cmd, proc.pid, driver)
    if name is None or name.startswith("IDLE"):
        return "ray"
    return name


class CpuMeter:
    """CPU seconds of this process tree by kind, and of the whole machine, between start() and stop()."""

    def __init__(self) -> None:
        self.root = psutil.Process()

    def _sample(self) -> tuple[dict[int, tuple[str, float]], float]:
        procs = {}
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                procs[proc.pid] = (kind_of(proc, self.root.pid), t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        total = psutil.cpu_times()
        return procs, total.user + total.nice + total.system + total.irq + total.softirq

    def start(self) -> None:
        self._t0, (self._procs0, self._busy0) = time.monotonic(), self._sample()
        self._last = dict(self._procs0)

    def poll(self) -> None:
        """Remember every process's CPU now (one that ends before stop() still counts up to here)."""
        self._last.update(self._sample()[0])

    def rss(self) -> dict[str, float]:
        """RSS (MiB) summed per kind now."""
        out: dict[str, float] = {}
        for proc in [self.root, *self.root.children(recursive=True)]:
            try:
                kind = kind_of(proc, self.root.pid)
                out[kind] = out.get(kind, 0.0) + proc.memory_info().rss / 2**20
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return out

    def stop(self) -> dict[str, float]:
        """Cores used per kind over the interval (processes that started in it count from 0)."""
        procs, busy = self._sample()
        self._last.update(procs)
        seconds = time.monotonic() - self._t0
        cores: dict[str, float] = {}
        for pid, (kind, cpu) in self._last.items():
            cores[kind] = cores.get(kind, 0.0) + (cpu - self._procs0.get(pid, (kind, 0.0))[1]) / seconds
        cores["other (machine)"] = (busy - self._busy0) / seconds - sum(cores.values())
        return cores
