"""Which streamvl process a pid is, for the benches' RSS tables."""

from __future__ import annotations


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
