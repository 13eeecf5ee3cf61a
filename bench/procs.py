"""Which streamvl process a pid is, for the benches' RSS tables."""

from __future__ import annotations


def process_kind(cmdline: str, pid: int, driver_pid: int) -> str | None:
    """'driver' for the driver, the actor class of a `ray::Class.method` worker, else None."""
    if pid == driver_pid:
        return "driver"
    if "ray::" not in cmdline:
        return None
    return cmdline.split("ray::", 1)[1].split()[0].split(".")[0] or None
